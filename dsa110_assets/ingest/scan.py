"""Which entries of the input folder a pass looks at: the candidates, in arrival order.

Every entry is classified on its own, from its name and its ``lstat`` alone: a name that is
no plain file name, a file still being written, a symlink or a name that does not parse gets
its outcome here and goes no further; the rest become :class:`Candidate` files, sorted by
arrival (modification time, then name time, then name).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from dsa110_assets.ingest.outcomes import Action, FileOutcome
from dsa110_assets.naming import InvalidSubbandName, is_incomplete_name, parse_subband_filename


@dataclass(slots=True)
class Candidate:
    """A settled regular file whose name parses: what the placement rules work on."""

    name: str
    epoch: int
    subband: int
    mtime: float
    size: int


def describe(exc: BaseException) -> str:
    """Return the reason recorded for an unexpected error: its type and message."""
    return f"{type(exc).__name__}: {exc}"


def check_name(name: object) -> FileOutcome | None:
    """Return the outcome of an entry its name alone rules out, or None to go on.

    Checked before any ``lstat``: a name with a separator (or ``..``) would reach outside
    the folder, and ``*_incomplete.hdf5`` is the correlator's file still being written.
    """
    if not isinstance(name, str) or os.sep in name or name in ("", ".", ".."):
        return FileOutcome(str(name), Action.REFUSED, reason="not a plain file name")
    if is_incomplete_name(name):
        return FileOutcome(name, Action.INCOMPLETE, reason="correlator still writing")
    return None


def classify(
    name: str, st: os.stat_result | None, settle_s: float, now: float
) -> Candidate | FileOutcome:
    """Return the candidate an entry is, or the outcome that stops it.

    Parameters
    ----------
    name
        A plain file name (:func:`check_name` passed it).
    st
        Its ``lstat``; None when it was gone before it could be read.
    settle_s, now
        A file modified less than ``settle_s`` before ``now`` is still being written.
    """
    if st is None:
        return FileOutcome(name, Action.VANISHED, reason="gone before it was read")
    if stat.S_ISLNK(st.st_mode):
        return FileOutcome(name, Action.REFUSED, reason="symlinks are not ingested")
    if not stat.S_ISREG(st.st_mode):
        return FileOutcome(name, Action.REFUSED, reason="not a regular file")
    try:
        parsed = parse_subband_filename(name)
        epoch = parsed.epoch_s
    except (InvalidSubbandName, ValueError, OverflowError) as exc:
        return FileOutcome(name, Action.UNMATCHED, reason=str(exc))
    if now - st.st_mtime < settle_s:
        return FileOutcome(
            name,
            Action.STILL_WRITING,
            subband=parsed.subband,
            reason=f"modified {now - st.st_mtime:.1f} s ago (< {settle_s:g} s)",
        )
    return Candidate(name, epoch, parsed.subband, st.st_mtime, st.st_size)


def _lstat(directory: Path, name: str, entry: os.DirEntry[str] | None) -> os.stat_result | None:
    """Return the entry's ``lstat`` (cached by ``scandir`` when it has one), None if gone."""
    try:
        return entry.stat(follow_symlinks=False) if entry else os.lstat(directory / name)
    except FileNotFoundError:
        return None


def _entry_outcome(
    directory: Path, name: str, entry: os.DirEntry[str] | None, settle_s: float, now: float
) -> Candidate | FileOutcome:
    """Classify one entry; whatever goes wrong with it becomes its own ``error``."""
    try:
        stopped = check_name(name)
        if stopped is not None:
            return stopped
        return classify(name, _lstat(directory, name, entry), settle_s, now)
    except Exception as exc:  # one file's problem stays that file's
        return FileOutcome(name, Action.ERROR, reason=describe(exc))


def _folder_entries(directory: Path) -> list[tuple[str, os.DirEntry[str]]]:
    """Return the entries of ``directory`` that are not sub-folders."""
    entries = []
    with os.scandir(directory) as it:
        for entry in it:
            try:
                if entry.is_dir(follow_symlinks=False):
                    continue
            except OSError:
                pass  # classified later by lstat
            entries.append((entry.name, entry))
    return entries


def scan(
    directory: Path, names: Iterable[str] | None, settle_s: float, now: float
) -> tuple[list[Candidate], list[FileOutcome], set[str] | None]:
    """Classify the entries of ``directory`` (or only ``names``).

    Returns
    -------
    candidates
        Parseable, settled regular files in arrival order.
    outcomes
        The entries that stop here, in the order they were listed.
    on_disk
        The names in the folder when it was listed whole, else None (a pass over ``names``
        asks the filesystem about each canonical name instead).
    """
    on_disk: set[str] | None = None
    if names is None:
        entries: list[tuple[str, os.DirEntry[str] | None]] = list(_folder_entries(directory))
        on_disk = {name for name, _ in entries}
    else:
        entries = [(name, None) for name in names]
    candidates: list[Candidate] = []
    outcomes: list[FileOutcome] = []
    for name, entry in entries:
        result = _entry_outcome(directory, name, entry, settle_s, now)
        if isinstance(result, Candidate):
            candidates.append(result)
        else:
            outcomes.append(result)
    candidates.sort(key=lambda c: (c.mtime, c.epoch, c.name))
    return candidates, outcomes, on_disk
