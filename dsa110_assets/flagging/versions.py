"""Flag versions of a Measurement Set, kept the way CASA's ``flagmanager`` keeps them.

CASA users undo flagging with ``flagmanager(vis, mode='restore', versionname=...)``; so
the pipeline saves the flags before and after each of its flagging steps in CASA's own
format, and either tool restores either's versions (``tests/test_flag_versions.py`` runs
CASA on ours and ours on CASA's). The format, as CASA 6 writes it:

* ``<ms>.flagversions/FLAG_VERSION_LIST``: one line per version, ``"{name} : {comment}"``,
  oldest first;
* ``<ms>.flagversions/flags.{name}``: a table with the MS's row count and two columns,
  ``FLAG`` (bool cells of the MS's (channel, correlation) shape, ``TiledShapeStMan``) and
  ``FLAG_ROW`` (``StandardStMan``).

A version is written under a temporary name in the same folder and renamed into place, and
the list file is replaced in one rename, so a process killed mid-save leaves the previous
versions intact and a leftover that the next save sweeps. Columns are copied in row chunks,
so a full-size MS never holds its whole FLAG in memory.
"""

from __future__ import annotations

import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from casacore import tables as pt

from dsa110_assets.errors import PipelineError
from dsa110_assets.safe_fs import atomic_output, remove_path, rename_into_place, sweep_dead

LIST_FILE = "FLAG_VERSION_LIST"
_SEPARATOR = " : "
_TEMP_PREFIX = ".tmp-"
_ROW_CHUNK = 100_000
#: Names CASA and the list file can both carry: no separator, no path, no whitespace.
_NAME = re.compile(r"[A-Za-z0-9_.+-]+")


class FlagVersionError(PipelineError, ValueError):
    """A bad version name, or a version that does not fit the Measurement Set."""


class UnknownFlagVersion(PipelineError, KeyError):
    """No flag version of that name is saved for the Measurement Set."""

    def __str__(self) -> str:
        """Return the message (not ``KeyError``'s quoted repr)."""
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True)
class FlagVersion:
    """One saved version: its name and the comment saved with it."""

    name: str
    comment: str


def versions_dir(ms_path: Path) -> Path:
    """Return the folder CASA keeps ``ms_path``'s versions in (``<ms>.flagversions``)."""
    ms_path = Path(ms_path)
    return ms_path.with_name(ms_path.name + ".flagversions")


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name) or name in (".", ".."):
        raise FlagVersionError(
            f"bad flag version name {name!r}: use letters, digits and _ . + - only"
        )
    return name


def list_flag_versions(ms_path: Path) -> list[FlagVersion]:
    """Return the saved versions of ``ms_path``, oldest first (empty when there are none)."""
    listing = versions_dir(ms_path) / LIST_FILE
    try:
        lines = listing.read_text().splitlines()
    except FileNotFoundError:
        return []
    versions = []
    for line in lines:
        if not line.strip():
            continue
        name, _, comment = line.partition(_SEPARATOR)
        versions.append(FlagVersion(name.strip(), comment.strip()))
    return versions


def _write_list(folder: Path, versions: list[FlagVersion]) -> None:
    text = "".join(f"{v.name}{_SEPARATOR}{v.comment}\n" for v in versions)
    with atomic_output(folder / LIST_FILE) as tmp:
        tmp.write_text(text)


def _temp_owner(rest: str) -> tuple[int, str] | None:
    pid = rest.split("-")[0]
    return (int(pid), rest) if pid.isdigit() else None


def _copy_flags(src: pt.table, dst: pt.table) -> None:
    n = src.nrows()
    for start in range(0, n, _ROW_CHUNK):
        count = min(_ROW_CHUNK, n - start)
        dst.putcol("FLAG", src.getcol("FLAG", start, count), start, count)
        dst.putcol("FLAG_ROW", src.getcol("FLAG_ROW", start, count), start, count)


def _new_version_table(path: Path, n_rows: int, cell: tuple[int, ...]) -> pt.table:
    """Create an empty version table with CASA's columns and storage managers."""
    flag = pt.makearrcoldesc("FLAG", False, ndim=len(cell), datamanagertype="TiledShapeStMan",
                             datamanagergroup="TiledFlag")  # fmt: skip
    row = pt.makescacoldesc("FLAG_ROW", False, datamanagertype="StandardStMan")
    desc = pt.maketabdesc([flag, row])
    return pt.table(str(path), desc, nrow=n_rows, ack=False)


def save_flag_version(ms_path: Path, name: str, comment: str = "") -> FlagVersion:
    """Save the MS's FLAG and FLAG_ROW as version ``name`` (replacing one of that name).

    Raises
    ------
    FlagVersionError
        A name CASA's list file cannot carry, or a comment with a line break.
    """
    _check_name(name)
    if "\n" in comment or "\r" in comment:
        raise FlagVersionError("a flag version comment must be one line")
    folder = versions_dir(ms_path)
    folder.mkdir(exist_ok=True)
    sweep_dead(folder, _TEMP_PREFIX, _temp_owner)
    tmp = folder / f"{_TEMP_PREFIX}{os.getpid()}-{secrets.token_hex(4)}-flags.{name}"
    try:
        with pt.table(str(ms_path), ack=False) as main:
            cell = tuple(main.getcell("FLAG", 0).shape) if main.nrows() else (0, 0)
            with _new_version_table(tmp, main.nrows(), cell) as version:
                _copy_flags(main, version)
        rename_into_place(tmp, folder / f"flags.{name}", replace=True)
    finally:
        remove_path(tmp)
    saved = FlagVersion(name, comment)
    kept = [v for v in list_flag_versions(ms_path) if v.name != name]
    _write_list(folder, [*kept, saved])
    return saved


def _version_table(ms_path: Path, name: str) -> Path:
    _check_name(name)
    path = versions_dir(ms_path) / f"flags.{name}"
    known = {v.name for v in list_flag_versions(ms_path)}
    if name not in known or not path.is_dir():
        raise UnknownFlagVersion(
            f"{ms_path} has no flag version {name!r} (saved: {', '.join(sorted(known)) or 'none'})"
        )
    return path


def restore_flag_version(ms_path: Path, name: str) -> None:
    """Write version ``name``'s FLAG and FLAG_ROW back into the MS.

    Raises
    ------
    UnknownFlagVersion
        No such version.
    FlagVersionError
        The version's rows or cell shape differ from the MS's (it belongs to another MS);
        the MS is left untouched.
    """
    path = _version_table(ms_path, name)
    with (
        pt.table(str(path), ack=False) as version,
        pt.table(str(ms_path), readonly=False, ack=False) as main,
    ):
        if version.nrows() != main.nrows():
            raise FlagVersionError(
                f"flag version {name!r} has {version.nrows()} rows, {ms_path} has {main.nrows()}"
            )
        if version.nrows() and version.getcell("FLAG", 0).shape != main.getcell("FLAG", 0).shape:
            raise FlagVersionError(
                f"flag version {name!r} has cells of shape {version.getcell('FLAG', 0).shape}, "
                f"{ms_path} of {main.getcell('FLAG', 0).shape}"
            )
        _copy_flags(version, main)


def delete_flag_version(ms_path: Path, name: str) -> None:
    """Delete version ``name`` (its table and its line in the list)."""
    path = _version_table(ms_path, name)
    _write_list(versions_dir(ms_path), [v for v in list_flag_versions(ms_path) if v.name != name])
    remove_path(path)
