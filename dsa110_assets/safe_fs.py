"""File operations that can never overwrite or lose data.

``os.rename`` silently replaces an existing destination; raw correlator files must never be
replaced, so renames here use Linux ``renameat2(RENAME_NOREPLACE)``: atomic, and it fails
with ``FileExistsError`` instead of clobbering. Where the filesystem does not support it, a
hard link followed by unlinking the source gives the same guarantee (``link`` never replaces).

A rename also fails with ``EXDEV`` ("Invalid cross-device link") whenever source and
destination are on different *mounts*, even of one filesystem (a bind mount of the staging
disk has the same ``st_dev`` and still refuses it). Every rename here therefore falls back to
copy-and-rename: the source is copied (in the kernel, holes kept) to a hidden temporary name
beside the destination, fsynced, renamed into place with the same no-replace guarantee, and
only then removed. The destination is never partial: it is the old entry or the whole copy.
"""

from __future__ import annotations

import ctypes
import errno
import os
import secrets
import shutil
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


def _rename_no_replace_same_mount(src: bytes, dst: bytes) -> None:
    """``renameat2(RENAME_NOREPLACE)``, or link + unlink where it is unsupported."""
    if _renameat2 is not None:
        if _renameat2(_AT_FDCWD, src, _AT_FDCWD, dst, _RENAME_NOREPLACE) == 0:
            return
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
            raise OSError(err, os.strerror(err), os.fsdecode(src), None, os.fsdecode(dst))
    # Fallback for filesystems without RENAME_NOREPLACE: link never replaces.
    os.link(src, dst)
    os.unlink(src)


def rename_no_replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
    """Atomically rename ``src`` to ``dst``; raise ``FileExistsError`` if ``dst`` exists.

    Across mounts (``EXDEV``) ``src`` is copied beside ``dst``, fsynced, renamed into place
    without replacing, and then removed: ``dst`` appears whole or not at all, and ``src`` is
    removed only once its copy is durable.

    Raises
    ------
    FileExistsError
        ``dst`` exists (it is left untouched, and so is ``src``).
    FileNotFoundError
        ``src`` vanished (for example another process renamed it first).
    """
    src_b, dst_b = os.fsencode(src), os.fsencode(dst)
    try:
        _rename_no_replace_same_mount(src_b, dst_b)
    except OSError as err:
        if err.errno != errno.EXDEV:
            raise
        _copy_then_rename(Path(os.fsdecode(src)), Path(os.fsdecode(dst)), replace=False)


def replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
    """``os.replace`` (atomically replaces a *file* ``dst``), copying across mounts on EXDEV."""
    try:
        os.replace(src, dst)
    except OSError as err:
        if err.errno != errno.EXDEV:
            raise
        _copy_then_rename(Path(src), Path(dst), replace=True)


def move_no_replace(
    src: str | os.PathLike[str], dst: str | os.PathLike[str], *, durable: bool = True
) -> bool:
    """Move the file or tree ``src`` to the new name ``dst``: a rename, or a copy across
    mounts. Returns True when it was copied (the copy is then already fsynced if
    ``durable``; a renamed tree is not, the caller fsyncs it where it now is).
    """
    src, dst = Path(src), Path(dst)
    try:
        _rename_no_replace_same_mount(os.fsencode(src), os.fsencode(dst))
    except OSError as err:
        if err.errno != errno.EXDEV:
            raise
        _copy_then_rename(src, dst, replace=False, durable=durable)
        return True
    return False


def _copy_then_rename(src: Path, dst: Path, *, replace: bool, durable: bool = True) -> None:
    """The EXDEV fallback: copy ``src`` to a hidden name beside ``dst``, rename it into place
    (same mount now), then remove ``src``. On any failure the copy is removed and ``src``
    and ``dst`` are as they were.
    """
    if not replace and os.path.lexists(dst):
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(dst))
    tmp = dst.with_name(f".{dst.name}.xdev-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        copy_tree(src, tmp, durable=durable)
        if replace:
            os.replace(tmp, dst)
        else:
            _rename_no_replace_same_mount(os.fsencode(tmp), os.fsencode(dst))
    except BaseException:
        _remove(tmp)
        raise
    if durable:
        fsync_dir(dst.parent)
    _remove(src)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def copy_tree(src: Path, dst: Path, *, durable: bool = True) -> None:
    """Copy a file, or a directory tree (a CASA table), to the new ``dst``; holes stay holes.

    Symlinks inside the tree are refused rather than followed or copied (products hold none).
    """
    src, dst = Path(src), Path(dst)
    if not src.is_dir() or src.is_symlink():
        copy_file_sparse(src, dst, durable=durable)
        return
    dst.mkdir()
    for root, dirs, names in os.walk(src):
        rel = Path(root).relative_to(src)
        for d in dirs:
            (dst / rel / d).mkdir()
        for name in names:
            copy_file_sparse(Path(root) / name, dst / rel / name, durable=durable)
        if durable:
            fsync_dir(dst / rel)


def copy_file_sparse(src: Path, dst: Path, *, durable: bool = True) -> None:
    """Copy ``src`` to a new ``dst`` in the kernel, keeping holes as holes.

    Data extents are found with ``SEEK_DATA``/``SEEK_HOLE`` (so sparse files stay sparse) and
    copied with ``copy_file_range``, or ``sendfile`` where the kernel refuses a
    cross-filesystem range copy. ``src`` is opened without following a symlink.
    """
    fd_in = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        st = os.fstat(fd_in)
        size = st.st_size
        fd_out = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            for start, stop in _data_extents(fd_in, size):
                _copy_range(fd_in, fd_out, start, stop - start)
            os.ftruncate(fd_out, size)
            os.fchmod(fd_out, st.st_mode & 0o7777)
            if durable:
                os.fsync(fd_out)
        finally:
            os.close(fd_out)
    finally:
        os.close(fd_in)


def _data_extents(fd: int, size: int) -> list[tuple[int, int]]:
    """(start, stop) of the non-hole regions of a file (the whole file if unsupported)."""
    extents, offset = [], 0
    try:
        while offset < size:
            try:
                start = os.lseek(fd, offset, os.SEEK_DATA)
            except OSError as err:
                if err.errno == errno.ENXIO:  # only a hole remains
                    break
                raise
            stop = os.lseek(fd, start, os.SEEK_HOLE)
            extents.append((start, stop))
            offset = stop
    except OSError as err:
        if err.errno not in (errno.EINVAL, errno.EOPNOTSUPP):
            raise
        return [(0, size)] if size else []
    return extents


def _copy_range(fd_in: int, fd_out: int, offset: int, count: int) -> None:
    """Copy ``count`` bytes at ``offset`` between the files, in the kernel."""
    done = 0
    use_range = hasattr(os, "copy_file_range")
    while done < count:
        position = offset + done
        if use_range:
            try:
                n = os.copy_file_range(fd_in, fd_out, count - done, position, position)
            except OSError as err:
                if err.errno not in (errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL):
                    raise
                use_range = False
                continue
        else:
            os.lseek(fd_out, position, os.SEEK_SET)
            n = os.sendfile(fd_out, fd_in, position, count - done)
        if n == 0:
            raise OSError(errno.EIO, f"unexpected end of file copying at byte {position}")
        done += n


def fsync_tree(root: Path) -> None:
    """Fsync every file and folder of a tree, deepest first."""
    for folder, _dirs, names in os.walk(root, topdown=False):
        for name in names:
            fd = os.open(Path(folder) / name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(Path(folder))


def fsync_dir(folder: Path) -> None:
    """Fsync a folder, making the renames and creations inside it durable."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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
    rename, on any error it is removed, so ``path`` is always the old or the whole new file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        yield tmp
        replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
