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

Above the renames: :func:`publish_tree` puts a finished tree (a Measurement Set, a calibration
table) at its final name, :func:`sweep_dead` removes the temporaries of processes that died
before they could, :func:`tree_bytes` sizes a tree and :func:`fsync_path` flushes one entry.
"""

from __future__ import annotations

import ctypes
import errno
import os
import secrets
import shutil
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from pathlib import Path

_AT_FDCWD = -100
_RENAME_NOREPLACE = 1
_PID_MAX = 2**22  # Linux's largest pid_max: a greater number names no process


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
    """Move the file or tree ``src`` to the new name ``dst``: a rename, or a copy across mounts.

    Returns
    -------
    bool
        True when it was copied (the copy is then already fsynced if ``durable``); a renamed
        tree is not, the caller fsyncs it where it now is.
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
    """Copy ``src`` to a hidden name beside ``dst``, rename it into place, then remove ``src``.

    The EXDEV fallback: the final rename is on one mount. On any failure the copy is removed
    and ``src`` and ``dst`` are as they were.
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
        remove_path(tmp)
        raise
    if durable:
        fsync_dir(dst.parent)
    remove_path(src)


def remove_path(path: Path) -> None:
    """Remove a file, symlink or directory tree, quietly if it is already gone."""
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


def _fsync(path: Path, flags: int) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_path(path: Path) -> None:
    """Flush a file or folder to disk, so a rename or manifest that follows survives a crash."""
    _fsync(path, 0)


def fsync_tree(root: Path) -> None:
    """Fsync every file and folder of a tree, deepest first."""
    for folder, _dirs, names in os.walk(root, topdown=False):
        for name in names:
            _fsync(Path(folder) / name, os.O_NOFOLLOW)
        fsync_dir(Path(folder))


def fsync_dir(folder: Path) -> None:
    """Fsync a folder, making the renames and creations inside it durable."""
    _fsync(folder, os.O_DIRECTORY)


def tree_bytes(
    root: Path, *, allocated: bool = False, exclude: Collection[str | os.PathLike[str]] = ()
) -> int:
    """Return the bytes of the files below ``root`` (symlinks not followed).

    Parameters
    ----------
    root : Path
        The folder (a Measurement Set, a staging copy) to size.
    allocated : bool
        Count the disk blocks the files hold instead of their apparent length: a sparse
        Measurement Set's holes then count for nothing, which is what a filling disk sees.
    exclude : collection of path-like
        Folders below ``root``, spelled from ``root`` (``root / "scratch"``), whose trees
        are not counted: another tier nested in this one is that tier's bytes.

    Returns
    -------
    int
        The total; files that vanish during the walk count as 0.
    """
    skip = {os.path.normpath(p) for p in exclude}
    total = 0
    for folder, dirs, names in os.walk(root):
        if skip:
            dirs[:] = [d for d in dirs if os.path.join(folder, d) not in skip]
        for name in names:
            try:
                st = os.lstat(Path(folder) / name)
            except OSError:
                continue
            total += st.st_blocks * 512 if allocated else st.st_size
    return total


def publish_tree(
    staged: Path, final: Path, *, replace: bool, durable: bool, token: str | None = None
) -> None:
    """Put the finished tree ``staged`` at ``final`` without ever exposing a partial one.

    ``staged`` is renamed to the hidden ``.{final.name}.partial-{token}`` beside ``final``, or
    copied there when that rename fails with ``EXDEV`` (another filesystem, or another mount
    of the same one, such as a bind mount); then (``durable``) fsynced, and renamed into
    place without replacing. With ``replace``, an existing ``final`` is first set aside as
    ``.{final.name}.old-{pid}-{hex}``, removed once the new tree is in place and put back if
    that fails; a process killed in between leaves it for :func:`sweep_dead` to restore.

    Parameters
    ----------
    staged : Path
        The complete tree (or file), on any filesystem; it is gone afterwards.
    final : Path
        Its published name; its folder must exist.
    replace : bool
        Replace an existing ``final`` (else that is an error).
    durable : bool
        Fsync the tree and the folder entries, so the published tree survives a power loss.
    token : str, optional
        Tags the hidden partial name (default ``{pid}-{hex}``), so a sweep can tell whose it is.

    Raises
    ------
    FileExistsError
        ``final`` exists, or appeared meanwhile, and ``replace`` is False.
    """
    partial = final.parent / f".{final.name}.partial-{token or _unique_token()}"
    try:
        copied = move_no_replace(staged, partial, durable=durable)
        if durable:
            if not copied:
                fsync_tree(partial)
            fsync_dir(final.parent)
        rename_into_place(partial, final, replace=replace)
    except BaseException:
        if os.path.lexists(partial):
            remove_path(partial)
        raise
    if durable:
        fsync_dir(final.parent)


def _unique_token() -> str:
    return f"{os.getpid()}-{secrets.token_hex(4)}"


def rename_into_place(src: Path, final: Path, *, replace: bool) -> None:
    """Rename ``src`` (same folder as ``final``) to ``final``, never leaving neither in place.

    A folder cannot replace another in one rename, so with ``replace`` an existing ``final``
    is first renamed aside (``.{name}.old-{pid}-{hex}``, atomic), removed once ``src`` is in
    place, and renamed back if that fails; a process killed in between leaves the aside copy
    for :func:`sweep_dead` to restore.

    Raises
    ------
    FileExistsError
        ``final`` exists and ``replace`` is False.
    """
    try:
        rename_no_replace(src, final)
        return
    except FileExistsError:
        if not replace:
            raise FileExistsError(f"{final} appeared while it was being written") from None
    aside = final.parent / f".{final.name}.old-{_unique_token()}"
    os.rename(final, aside)
    try:
        rename_no_replace(src, final)
    except BaseException:
        os.rename(aside, final)
        raise
    shutil.rmtree(aside, ignore_errors=True)


def pid_alive(pid: int) -> bool:
    """Return whether process ``pid`` of this host may still be running.

    This process is alive, and so is one of another user (``EPERM``); a number beyond
    Linux's ``pid_max`` names no process, whatever ``kill`` says about it.
    """
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return pid <= _PID_MAX
    return True


def sweep_dead(
    folder: Path,
    prefix: str,
    owner_of: Callable[[str], tuple[int, str] | None],
    *,
    dead_tokens: Collection[str] = (),
    dispose: Callable[[Path], None] = remove_path,
) -> None:
    """Dispose of the temporaries in ``folder`` whose writing process died.

    A step that writes under a temporary name carrying its pid removes it itself, unless it is
    killed (``kill -9``, a power loss); the next run of the step sweeps such leftovers here.
    Entries of live processes are left alone: they are still being written.

    Parameters
    ----------
    folder : Path
        Where the temporaries lie; a missing or unreadable folder holds none.
    prefix : str
        The start of every temporary's name (for instance ``.{name}.``).
    owner_of : callable
        Given the rest of a name after ``prefix``, return ``(pid, token)`` of the process that
        wrote it, or None for a name the caller does not make (left alone).
    dead_tokens : collection of str
        Tokens of writers known to be dead even if their pid is alive again (reused); their
        entries are disposed of regardless.
    dispose : callable
        What to do with a dead writer's entry (default: remove it).
    """
    try:
        entries = [e for e in folder.iterdir() if e.name.startswith(prefix)]
    except OSError:
        return
    for entry in entries:
        owner = owner_of(entry.name[len(prefix) :])
        if owner is None:
            continue
        pid, token = owner
        if token in dead_tokens or not pid_alive(pid):
            dispose(entry)


def same_file(a: Path, b: Path) -> bool:
    """Return whether both paths exist and name the same inode (an interrupted link+unlink)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def is_within(path: Path, folder: Path) -> bool:
    """Return whether ``path`` (resolved, symlinks followed) lies inside ``folder``."""
    try:
        path.resolve().relative_to(folder.resolve())
    except ValueError:
        return False
    return True


@contextmanager
def atomic_output(path: Path) -> Iterator[Path]:
    """Yield a hidden temporary name beside ``path``, to replace ``path`` in one rename.

    On success it replaces ``path``; on any error it is removed, so ``path`` is always the old
    or the whole new file. Its name is ``.{name}.{pid}.{hex}.tmp`` (see :func:`sweep_dead`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        yield tmp
        replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
