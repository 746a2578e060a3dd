"""Putting a file under its canonical name, and looking whether that name is taken.

Nothing is ever overwritten or deleted: renames use ``RENAME_NOREPLACE``, and a name that
appears (or a file that disappears) while renaming is reported for that file, never worked
around.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from dsa110_assets.ingest.content import ContentTime, UnreadableSubband
from dsa110_assets.ingest.decision import SlotState
from dsa110_assets.ingest.outcomes import Action, FileOutcome
from dsa110_assets.naming import parse_subband_filename, subband_filename
from dsa110_assets.safe_fs import rename_no_replace, same_file

#: Reads a file's content time; raises :class:`UnreadableSubband`. Injectable for tests of
#: the ingest rules on files whose content is made by hand.
ContentReader = Callable[[str], ContentTime]


def normalize_subband_path(path: str | os.PathLike[str], group_id: str, *, dry_run=False) -> Path:
    """Rename one subband file to ``{group_id}_sb{XX}.hdf5`` in its folder.

    Idempotent: a file that already has its canonical name is returned unchanged.

    Raises
    ------
    InvalidSubbandName
        The file name does not parse.
    FileExistsError
        Another file already holds the canonical name; neither file is touched.
    """
    path = Path(path)
    parsed = parse_subband_filename(path.name)
    target = path.with_name(subband_filename(group_id, parsed.subband))
    if target.name != path.name and not dry_run:
        rename_into_place(str(path), str(target))
    return target


def rename_into_place(src: str, dst: str) -> None:
    """Rename without replacing; finish an interrupted link+unlink of the same inode.

    Raises
    ------
    FileExistsError
        ``dst`` is another file.
    FileNotFoundError
        ``src`` is gone (another process moved it first).
    """
    try:
        rename_no_replace(src, dst)
    except FileExistsError:
        if not same_file(Path(src), Path(dst)):
            raise
        os.unlink(src)  # both names are one inode: drop the old name only


def holds_a_subband(path: str, read: ContentReader) -> bool:
    """Return whether the file at ``path`` reads as a subband (anything but unreadable counts)."""
    try:
        read(path)
    except UnreadableSubband:
        return False
    except OSError:
        return True  # cannot tell: treat it as holding the name, never work around it
    return True


def look_on_disk(
    name: str,
    target: str,
    folder: str,
    exists: Callable[[str], bool],
    read: ContentReader,
) -> tuple[SlotState, str | None]:
    """Return who holds the canonical name ``target`` on disk, for a slot no one holds.

    A file that is no subband (say, an empty one) there does not take the slot from ``name``
    (:attr:`SlotState.NAME_BLOCKED`); a subband does (:attr:`SlotState.HELD`, with its path).
    """
    if name == target or not exists(target):
        return SlotState.FREE, None
    dst_path = f"{folder}/{target}"
    if holds_a_subband(dst_path, read):
        return SlotState.HELD, dst_path
    return SlotState.NAME_BLOCKED, None


def carry_out_rename(
    outcome: FileOutcome, src_path: str, folder: str, on_disk: set[str] | None
) -> None:
    """Rename a ``renamed`` file to ``outcome.new_name``; a race makes it a conflict or vanished.

    ``on_disk`` (the folder's names, when the pass listed it) follows the rename.
    """
    target = outcome.new_name
    assert target is not None
    try:
        rename_into_place(src_path, f"{folder}/{target}")
    except FileExistsError:
        outcome.action = Action.CONFLICT
        outcome.reason = f"{target} appeared while renaming; left alone"
        return
    except FileNotFoundError:
        outcome.action = Action.VANISHED
        outcome.reason = "moved by another process before it was renamed"
        return
    if on_disk is not None:
        on_disk.discard(outcome.name)
        on_disk.add(target)
