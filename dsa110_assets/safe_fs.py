"""File operations that can never overwrite or lose data.

``os.rename`` silently replaces an existing destination; raw correlator files must never be
replaced, so renames here use Linux ``renameat2(RENAME_NOREPLACE)``: atomic, and it fails
with ``FileExistsError`` instead of clobbering. Where the filesystem does not support it, a
hard link followed by unlinking the source gives the same guarantee (``link`` never replaces).
"""

from __future__ import annotations

import ctypes
import errno
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_AT_FDCWD = -100
_RENAME_NOREPLACE = 1


def _load_renameat2():
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        func = libc.renameat2
    except (OSError, AttributeError):
        return None
    func.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    func.restype = ctypes.c_int
    return func


_renameat2 = _load_renameat2()


def rename_no_replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
    """Atomically rename ``src`` to ``dst``; raise ``FileExistsError`` if ``dst`` exists.

    Raises
    ------
    FileExistsError
        ``dst`` exists (it is left untouched, and so is ``src``).
    FileNotFoundError
        ``src`` vanished (for example another process renamed it first).
    """
    src_b, dst_b = os.fsencode(src), os.fsencode(dst)
    if _renameat2 is not None:
        if _renameat2(_AT_FDCWD, src_b, _AT_FDCWD, dst_b, _RENAME_NOREPLACE) == 0:
            return
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
            raise OSError(err, os.strerror(err), os.fsdecode(src), None, os.fsdecode(dst))
    # Fallback for filesystems without RENAME_NOREPLACE: link never replaces.
    os.link(src_b, dst_b)
    os.unlink(src_b)


def same_file(a: Path, b: Path) -> bool:
    """True when both paths exist and name the same inode (an interrupted link+unlink)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def is_within(path: Path, folder: Path) -> bool:
    """True when ``path`` (resolved, symlinks followed) lies inside ``folder``."""
    try:
        path.resolve().relative_to(folder.resolve())
    except ValueError:
        return False
    return True


@contextmanager
def atomic_output(path: Path) -> Iterator[Path]:
    """Yield a hidden temporary name beside ``path``; on success it replaces ``path`` in one
    rename, on any error it is removed, so ``path`` is always the old or the whole new file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
