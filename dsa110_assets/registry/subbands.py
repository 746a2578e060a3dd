"""The registry SQL of ingest: groups, their subband files, conflicts and rejects.

Ingest, the group description, the sensor tick and partition retirement read and write
``processing_queue``, ``subband_files``, ``ingest_conflicts`` and ``ingest_rejects``; their
statements live here, next to the schema's other SQL, so the ingest modules hold rules and
no SQL. Every batch write is one ``executemany`` (one round trip however many rows), which
is what keeps a 100,000-file backlog to a handful of statements.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from dsa110_assets.registry.connection import Registry, in_chunks

Row = tuple[Any, ...]


def _executemany(registry: Registry, sql: str, rows: Iterable[Row]) -> None:
    """Run one batched statement (one round trip), as the connection counts them."""
    registry.conn.executemany(sql, rows)


# --- reads -------------------------------------------------------------------------------


def queue_entry(registry: Registry, group_id: str) -> sqlite3.Row | None:
    """Return the ``processing_queue`` row of ``group_id``, or None when it has none.

    The row holds ``state``, ``expected_subbands``, ``calibrators``, ``retry_count`` and
    ``error_message``: what the group description and ``dsa110 reprocess`` show.
    """
    return registry.execute(
        "SELECT state, expected_subbands, calibrators, retry_count, error_message"
        " FROM processing_queue WHERE group_id = ?",
        (group_id,),
    ).fetchone()


def group_files(registry: Registry, group_id: str) -> list[tuple[int, str]]:
    """Return ``(subband_idx, path)`` of a group's registered files, by subband."""
    return [
        (int(sb), str(path))
        for sb, path in registry.execute(
            "SELECT subband_idx, path FROM subband_files WHERE group_id = ? ORDER BY subband_idx",
            (group_id,),
        )
    ]


def registered_inputs(registry: Registry, group_id: str) -> tuple[dict[int, Path], dict[int, int]]:
    """Return the group's registered paths and the sizes recorded when they were registered.

    Sizes are those of ``subband_files.size_bytes`` (None for rows registered before that
    column existed: such files are checked for being regular files only).
    """
    paths: dict[int, Path] = {}
    sizes: dict[int, int] = {}
    for row in registry.execute(
        "SELECT subband_idx, path, size_bytes FROM subband_files WHERE group_id = ?",
        (group_id,),
    ):
        paths[int(row[0])] = Path(row[1])
        if row[2] is not None:
            sizes[int(row[0])] = int(row[2])
    return paths, sizes


def count_group_files(registry: Registry, group_id: str) -> int:
    """Return how many subband files a group has registered."""
    return int(
        registry.execute(
            "SELECT COUNT(*) FROM subband_files WHERE group_id = ?", (group_id,)
        ).fetchone()[0]
    )


def group_starts_between(registry: Registry, lo: str, hi: str) -> dict[str, float | None]:
    """Return the observation start of each group with ``lo <= group_id <= hi``.

    Older rows have no ``obs_start`` (None); the caller reads it from one of their files.
    """
    return dict(
        registry.execute(
            "SELECT group_id, obs_start FROM processing_queue WHERE group_id BETWEEN ? AND ?",
            (lo, hi),
        )
    )


def files_between(registry: Registry, lo: str, hi: str) -> list[tuple[str, int, str, str | None]]:
    """Return ``(group_id, subband_idx, path, original_name)`` of files of those groups."""
    return [
        tuple(row)
        for row in registry.execute(
            "SELECT group_id, subband_idx, path, original_name FROM subband_files"
            " WHERE group_id BETWEEN ? AND ?",
            (lo, hi),
        )
    ]


def pending_groups(registry: Registry) -> list[tuple[str, int]]:
    """Return ``(group_id, retry_count)`` of the groups ready for processing, oldest first."""
    return [
        (row[0], int(row[1] or 0))
        for row in registry.query(
            "SELECT group_id, retry_count FROM processing_queue WHERE state = 'pending'"
            " ORDER BY group_id"
        )
    ]


def read_queue_states(registry: Registry, group_ids: Iterable[str]) -> dict[str, str]:
    """Return ``processing_queue.state`` of each of ``group_ids`` that has a row.

    Asked in chunks (the primary key index), so the cost follows the groups asked about,
    not the registry's history.
    """
    ids = list(dict.fromkeys(group_ids))
    states: dict[str, str] = {}
    for part in in_chunks(ids):
        marks = ",".join("?" * len(part))
        for row in registry.query(
            f"SELECT group_id, state FROM processing_queue WHERE group_id IN ({marks})", part
        ):
            states[str(row[0])] = str(row[1])
    return states


# --- batch writes of one ingest pass -----------------------------------------------------


def insert_collecting_groups(registry: Registry, rows: Iterable[Row]) -> None:
    """Add new groups as ``collecting``; a group that exists already is left as it is.

    Each row is ``(group_id, received_at, last_update, expected_subbands, obs_start)``.
    """
    _executemany(
        registry,
        "INSERT OR IGNORE INTO processing_queue(group_id, state, received_at, last_update,"
        " expected_subbands, retry_count, obs_start) VALUES (?, 'collecting', ?, ?, ?, 0, ?)",
        rows,
    )


def insert_subband_files(registry: Registry, rows: Iterable[Row]) -> None:
    """Register files in their slots.

    Each row is ``(group_id, subband_idx, path, original_name, size_bytes, registered_at)``.
    """
    _executemany(
        registry,
        "INSERT INTO subband_files(group_id, subband_idx, path, original_name, size_bytes,"
        " registered_at) VALUES (?, ?, ?, ?, ?, ?)",
        rows,
    )


def clear_rejects(registry: Registry, path_pairs: Iterable[tuple[str, str]]) -> None:
    """Forget the rejects recorded under either path of each pair (canonical, arrival).

    A file refused earlier (say, while it was still empty) that registers now is no longer
    a reject, under its arrival name or its canonical one.
    """
    _executemany(registry, "DELETE FROM ingest_rejects WHERE path IN (?, ?)", path_pairs)


def touch_groups(registry: Registry, now: float, group_ids: Sequence[str]) -> None:
    """Set ``last_update`` of existing groups that received files (nothing when none did)."""
    if group_ids:
        _executemany(
            registry,
            "UPDATE processing_queue SET last_update = ? WHERE group_id = ?",
            [(now, gid) for gid in group_ids],
        )


def record_conflicts(registry: Registry, rows: Sequence[Row]) -> None:
    """Record second files for a taken slot; a file recorded before keeps its row.

    Each row is ``(path, group_id, subband_idx, existing_path, reason, detected_at)``.
    """
    if rows:
        _executemany(
            registry,
            "INSERT OR IGNORE INTO ingest_conflicts(path, group_id, subband_idx, existing_path,"
            " reason, detected_at) VALUES (?, ?, ?, ?, ?, ?)",
            rows,
        )


def record_rejects(registry: Registry, rows: Sequence[Row]) -> None:
    """Record refused files, each ``(path, subband_idx, kind, reason, seen_at)``.

    A path refused before keeps its ``first_seen``; the rest of its row is replaced.
    """
    if rows:
        _executemany(
            registry,
            "INSERT INTO ingest_rejects(path, subband_idx, kind, reason, first_seen, last_seen)"
            " VALUES (?1, ?2, ?3, ?4, ?5, ?5) ON CONFLICT(path) DO UPDATE SET"
            " subband_idx = excluded.subband_idx, kind = excluded.kind,"
            " reason = excluded.reason, last_seen = excluded.last_seen",
            rows,
        )
