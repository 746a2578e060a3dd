"""The registry SQL of raw retention: which groups are finished, and their files' new paths.

:mod:`dsa110_assets.storage.retention` moves the raw subband files of finished groups to the
archive tier; what "finished" means is decided here, in SQL, once:

* the group is ``completed`` in ``processing_queue`` (converted; never ``failed``, nor a
  group still collecting, pending or in progress);
* it has a Measurement Set in ``ms_index``;
* its ``image`` stage is ``done`` or ``skipped``, and no stage of it is ``running``,
  ``waiting`` or ``failed`` (a product that is not done may still need the group redone);
* its observation started before the horizon (group_ids are fixed-width UTC times, so string
  order is time order, and the primary key answers the range).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from dsa110_assets.registry.connection import IN_CHUNK, Registry, in_chunks

#: Stage outcomes that hold a group's raw files where they are.
UNFINISHED_STAGE_STATES = ("running", "waiting", "failed")
#: The ``image`` stage outcomes that count as the group's products being done.
IMAGE_DONE_STATES = ("done", "skipped")
#: ``(group_id, subband)`` pairs asked about in one statement (two parameters each).
_PAIR_CHUNK = IN_CHUNK // 2

#: Whether the group ``q`` is finished and older than ``:horizon`` (the module docstring).
_FINISHED = f"""
    q.state = 'completed' AND q.group_id < :horizon
    AND EXISTS (SELECT 1 FROM ms_index m WHERE m.group_id = q.group_id)
    AND EXISTS (SELECT 1 FROM stage_status s WHERE s.group_id = q.group_id
                AND s.stage = 'image' AND s.status IN {IMAGE_DONE_STATES!r})
    AND NOT EXISTS (SELECT 1 FROM stage_status s WHERE s.group_id = q.group_id
                    AND s.status IN {UNFINISHED_STAGE_STATES!r})
"""
#: The subband files of finished groups; ``{archived}`` is ``=`` (rows already pointing into
#: the archive) or ``!=`` (rows still to move). ``substr`` compares the prefix literally (no
#: character of a path is a wildcard).
_FINISHED_FILES = (
    "SELECT f.group_id, f.subband_idx, f.path, f.size_bytes"
    " FROM processing_queue q JOIN subband_files f ON f.group_id = q.group_id"
    f" WHERE {_FINISHED} AND substr(f.path, 1, length(:prefix)) {{archived}} :prefix"
)


@dataclass(frozen=True)
class RawFile:
    """A registered subband file: its group, subband, path and the size registered."""

    group_id: str
    subband_idx: int
    path: str
    size_bytes: int | None


def files_to_archive(registry: Registry, horizon: str, archive_prefix: str) -> list[RawFile]:
    """Return the files of finished groups older than ``horizon`` not yet under the archive.

    Parameters
    ----------
    registry
        The registry (read-only is enough).
    horizon
        The group_id of the age limit: groups whose id sorts below it are old enough.
    archive_prefix
        The archive's raw folder with a trailing separator; a path starting with it is
        archived already.

    Returns
    -------
    list of RawFile
        By group and subband.
    """
    rows = registry.query(
        _FINISHED_FILES.format(archived="!=") + " ORDER BY f.group_id, f.subband_idx",
        {"horizon": horizon, "prefix": archive_prefix},
    )
    return [_raw_file(r) for r in rows]


def archived_rows(
    registry: Registry, slots: Iterable[tuple[str, int]], horizon: str, archive_prefix: str
) -> list[RawFile]:
    """Return the rows of ``slots`` (group_id, subband) already pointing into the archive.

    Only finished groups older than ``horizon`` are returned: those are the ones whose input
    file, if it is still there, is the leftover of an archive run stopped between updating
    the registry and removing the original.
    """
    wanted = list(dict.fromkeys(slots))
    found: list[RawFile] = []
    for part in in_chunks(wanted, _PAIR_CHUNK):
        params: dict[str, object] = {"horizon": horizon, "prefix": archive_prefix}
        for i, (group_id, subband) in enumerate(part):
            params[f"g{i}"], params[f"s{i}"] = group_id, subband
        pairs = " OR ".join(
            f"(f.group_id = :g{i} AND f.subband_idx = :s{i})" for i in range(len(part))
        )
        rows = registry.query(_FINISHED_FILES.format(archived="=") + f" AND ({pairs})", params)
        found += [_raw_file(r) for r in rows]
    return found


def move_file_row(registry: Registry, row: RawFile, new_path: str, horizon: str) -> bool:
    """Point ``row``'s ``subband_files`` entry at ``new_path``, if nothing changed meanwhile.

    A compare-and-set in one write transaction: the row must still name ``row.path`` (not
    re-registered, not archived by another run) and its group must still be finished and
    older than ``horizon`` (a reprocess started since :func:`files_to_archive` holds its
    files where they are). Returns whether the row was updated.
    """
    with registry.transaction():
        cursor = registry.execute(
            "UPDATE subband_files SET path = :new WHERE group_id = :group AND subband_idx = :sb"
            " AND path = :old AND EXISTS (SELECT 1 FROM processing_queue q"
            f" WHERE q.group_id = subband_files.group_id AND {_FINISHED})",
            {
                "new": new_path,
                "group": row.group_id,
                "sb": row.subband_idx,
                "old": row.path,
                "horizon": horizon,
            },
        )
        return cursor.rowcount == 1


def _raw_file(row: Sequence[Any]) -> RawFile:
    """Return a ``(group_id, subband_idx, path, size_bytes)`` row as a :class:`RawFile`."""
    return RawFile(row[0], int(row[1]), row[2], row[3])
