"""The incoming sensor's backlog: files in the input folder the registry does not hold yet.

The sensor registers each subband file once it has settled (and renames it to its group's
canonical name), so any regular file in ``PIPELINE_INPUT_DIR`` whose path is not a
``subband_files`` row is still to be ingested: just arrived, still being written
(``*_incomplete.hdf5``), or refused (``ingest_rejects``: those wait for an operator, so they
are counted apart). Hidden entries (atomic-write temporaries) are not files yet.
"""

from __future__ import annotations

import os
import sqlite3
import stat
from dataclasses import dataclass
from pathlib import Path

from dsa110_assets.api import queries
from dsa110_assets.naming import is_incomplete_name


@dataclass(frozen=True)
class InputEntry:
    """A regular file in the input folder: its name, size and modification time."""

    name: str
    size: int
    mtime: float


@dataclass(frozen=True)
class InputBacklog:
    """What waits in the input folder: unregistered files, of which refused and in writing."""

    input_dir: str
    files: int
    bytes: int
    incomplete: int
    rejected: int
    oldest_mtime: float | None


def scan_input(folder: Path) -> list[InputEntry]:
    """Return the regular, visible files directly in ``folder`` (none if it does not exist)."""
    entries: list[InputEntry] = []
    try:
        scanner = os.scandir(folder)
    except OSError:
        return entries
    with scanner:
        for entry in scanner:
            if entry.name.startswith("."):
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue  # gone since it was listed
            if stat.S_ISREG(st.st_mode):
                entries.append(InputEntry(entry.name, st.st_size, st.st_mtime))
    return entries


def input_backlog(folder: Path, conn: sqlite3.Connection) -> InputBacklog:
    """Return the backlog of ``folder`` against the registry on ``conn``.

    Paths are compared as ingest records them, ``f"{folder}/{name}"``.
    """
    entries = scan_input(folder)
    paths = {f"{folder}/{e.name}": e for e in entries}
    registered = queries.registered_paths(conn, list(paths))
    waiting = [e for p, e in paths.items() if p not in registered]
    rejected = queries.rejected_paths(conn, [f"{folder}/{e.name}" for e in waiting])
    return InputBacklog(
        input_dir=str(folder),
        files=len(waiting),
        bytes=sum(e.size for e in waiting),
        incomplete=sum(is_incomplete_name(e.name) for e in waiting),
        rejected=len(rejected),
        oldest_mtime=min((e.mtime for e in waiting), default=None),
    )
