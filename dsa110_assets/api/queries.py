"""Every SQL statement the status API sends, on read-only connections to the registry.

The API only reads ``pipeline.sqlite3``: each request opens it with
:func:`~dsa110_assets.registry.connection.connect_readonly` (SQLite ``mode=ro`` on the WAL
database, so it never blocks the pipeline's writers and cannot modify the file) and closes it
when done. Every statement is here, one function per question, each a range or a lookup on
an index the schema has (``group_id`` primary keys, ``images_group``, ``mosaics_date``), so a
request's cost follows the page asked for, not the years of history.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from dsa110_assets.errors import PipelineError
from dsa110_assets.naming import GROUP_ID_FORMAT
from dsa110_assets.registry.connection import (
    ReadOnlyRegistryError,
    RegistryUnreadable,
    connect_readonly,
    in_chunks,
)
from dsa110_assets.registry.migrations import SchemaTooNew
from dsa110_assets.registry.queue import QueueState

#: A group whose ``group_id`` is within this of the newest one is "recent" (metrics).
RECENT_WINDOW_S = 86_400.0


class RegistryUnavailable(PipelineError, RuntimeError):
    """The registry cannot be read (missing, damaged, newer than this code)."""


@contextmanager
def open_registry(db_path: Path) -> Iterator[sqlite3.Connection]:
    """Yield a read-only connection to the registry, closed afterwards.

    A statement that fails on it (a registry damaged since it was opened, or of an older
    schema that lacks a table a query reads: readers do not migrate) is the registry's
    state, not the request's, and is raised as :class:`RegistryUnavailable` too.

    Raises
    ------
    RegistryUnavailable
        The file is missing, not a registry, of a newer schema, or cannot answer (the message
        says which).
    """
    try:
        conn = connect_readonly(db_path)
    except (
        FileNotFoundError,
        ReadOnlyRegistryError,
        RegistryUnreadable,
        SchemaTooNew,
        sqlite3.Error,
    ) as exc:
        raise RegistryUnavailable(str(exc)) from None
    try:
        yield conn
    except sqlite3.Error as exc:
        raise RegistryUnavailable(f"registry {db_path} cannot answer: {exc}") from None
    finally:
        conn.close()


# --- status --------------------------------------------------------------------------------


def queue_counts(conn: sqlite3.Connection) -> dict[str, int]:
    """Return the number of groups in each queue state (every state present)."""
    counts = {state.value: 0 for state in QueueState}
    for state, n in conn.execute("SELECT state, COUNT(*) FROM processing_queue GROUP BY state"):
        counts[str(state)] = int(n)
    return counts


def newest_day(conn: sqlite3.Connection) -> str | None:
    """Return the UTC day (``YYYY-MM-DD``) of the newest group, None with no group."""
    (newest,) = conn.execute("SELECT MAX(group_id) FROM processing_queue").fetchone()
    return str(newest)[:10] if newest else None


def products_per_day(conn: sqlite3.Connection, first_day: str) -> list[dict[str, Any]]:
    """Return per UTC day from ``first_day`` on: groups, Measurement Sets, images, mosaics.

    Groups, MSs and images are dated by their ``group_id`` (the observation's UTC start),
    mosaics by their ``date``; images count the main product (``image_type = 'image'``).
    Days with nothing are left out; ascending.
    """
    sql = {
        "groups": "SELECT substr(group_id, 1, 10), COUNT(*) FROM processing_queue"
        " WHERE group_id >= ? GROUP BY 1",
        "ms": "SELECT substr(group_id, 1, 10), COUNT(*) FROM ms_index"
        " WHERE group_id >= ? GROUP BY 1",
        "images": "SELECT substr(group_id, 1, 10), COUNT(*) FROM images"
        " WHERE group_id >= ? AND image_type = 'image' GROUP BY 1",
        "mosaics": "SELECT date, COUNT(*) FROM mosaics WHERE date >= ? GROUP BY 1",
    }
    days: dict[str, dict[str, Any]] = {}
    for kind, statement in sql.items():
        for day, n in conn.execute(statement, (first_day,)):
            row = days.setdefault(day, {"date": day, **dict.fromkeys(sql, 0)})
            row[kind] = int(n)
    return [days[d] for d in sorted(days)]


def latest_group(conn: sqlite3.Connection) -> dict[str, Any] | None:
    """Return the newest group: id, state, its last subband file's registration time."""
    row = conn.execute(
        "SELECT group_id, state FROM processing_queue ORDER BY group_id DESC LIMIT 1"
    ).fetchone()
    if row is None:
        return None
    return {**_group_timing(conn, row[0]), "state": row[1]}


def latest_imaged_group(conn: sqlite3.Connection) -> dict[str, Any] | None:
    """Return the newest group with a registered image, with its timing (see callers)."""
    row = conn.execute(
        "SELECT group_id FROM images WHERE image_type = 'image' AND group_id IS NOT NULL"
        " ORDER BY group_id DESC LIMIT 1"
    ).fetchone()
    if row is None:
        return None
    state = conn.execute(
        "SELECT state FROM processing_queue WHERE group_id = ?", (row[0],)
    ).fetchone()
    return {**_group_timing(conn, row[0]), "state": state[0] if state else None}


def _group_timing(conn: sqlite3.Connection, group_id: str) -> dict[str, Any]:
    """Return when a group's last subband file was registered and its image registered."""
    last_file = conn.execute(
        "SELECT MAX(registered_at) FROM subband_files WHERE group_id = ?", (group_id,)
    ).fetchone()[0]
    image = conn.execute(
        "SELECT MAX(created_at) FROM images WHERE group_id = ? AND image_type = 'image'",
        (group_id,),
    ).fetchone()[0]
    return {"group_id": group_id, "last_file_at": last_file, "image_registered_at": image}


# --- observations --------------------------------------------------------------------------


def _listing_filter(
    alias: str, lo: str | None, hi: str | None, column: str, value: str | None
) -> tuple[str, list]:
    """Return the ``WHERE`` clause and parameters of a listing of table ``alias``.

    ``group_id`` in ``[lo, hi)`` (a UTC day; both or neither) and ``{alias}.{column} =
    value`` (the state or image type asked for), each only when given.
    """
    where, params = [], []
    if lo is not None and hi is not None:
        where.append(f"{alias}.group_id >= ? AND {alias}.group_id < ?")
        params += [lo, hi]
    if value is not None:
        where.append(f"{alias}.{column} = ?")
        params.append(value)
    return (" WHERE " + " AND ".join(where)) if where else "", params


def count_observations(
    conn: sqlite3.Connection, lo: str | None, hi: str | None, state: str | None
) -> int:
    """Return how many groups match (``group_id`` in ``[lo, hi)``, ``state``)."""
    where, params = _listing_filter("q", lo, hi, "state", state)
    return int(
        conn.execute(f"SELECT COUNT(*) FROM processing_queue q{where}", params).fetchone()[0]
    )


def observations(
    conn: sqlite3.Connection,
    lo: str | None,
    hi: str | None,
    state: str | None,
    limit: int,
    offset: int,
) -> list[dict[str, Any]]:
    """Return one page of groups, newest first, with their files, MS and stage outcomes."""
    where, params = _listing_filter("q", lo, hi, "state", state)
    rows = conn.execute(
        "SELECT q.group_id, q.state, q.obs_start, q.received_at, q.last_update,"
        " q.expected_subbands, q.missing_subbands, COALESCE(q.retry_count, 0) AS retry_count,"
        " q.error, q.error_message,"
        " q.processing_stage, q.has_calibrator, q.calibrators,"
        " (SELECT COUNT(*) FROM subband_files f WHERE f.group_id = q.group_id) AS subbands,"
        " m.path AS ms_path, m.cal_method, m.cal_age_h, m.flagged_fraction"
        " FROM processing_queue q"
        " LEFT JOIN ms_index m ON m.path = (SELECT path FROM ms_index WHERE group_id ="
        "   q.group_id ORDER BY created_at DESC LIMIT 1)"
        f"{where} ORDER BY q.group_id DESC LIMIT ? OFFSET ?",
        [*params, limit, offset],
    ).fetchall()
    items = [dict(r) for r in rows]
    stages = stage_outcomes(conn, [r["group_id"] for r in items])
    for item in items:
        item["missing_subbands"] = _json_list(item["missing_subbands"])
        item["calibrators"] = [
            c["name"] if isinstance(c, dict) else str(c) for c in _json_list(item["calibrators"])
        ]
        item["stages"] = stages.get(item["group_id"], {})
    return items


def stage_outcomes(conn: sqlite3.Connection, group_ids: Sequence[str]) -> dict[str, dict]:
    """Return ``{group_id: {stage: status}}`` of the given groups."""
    found: dict[str, dict[str, str]] = {}
    for part in in_chunks(list(group_ids)):
        marks = ",".join("?" * len(part))
        for gid, stage, status in conn.execute(
            f"SELECT group_id, stage, status FROM stage_status WHERE group_id IN ({marks})", part
        ):
            found.setdefault(gid, {})[stage] = status
    return found


def _json_list(text: str | None) -> list:
    """Return a JSON list column as a list; anything else (NULL, damaged text) as ``[]``."""
    try:
        value = json.loads(text or "[]")
    except ValueError:
        return []
    return value if isinstance(value, list) else []


# --- images --------------------------------------------------------------------------------


def count_images(
    conn: sqlite3.Connection, lo: str | None, hi: str | None, image_type: str | None
) -> int:
    """Return how many images match (``group_id`` in ``[lo, hi)``, ``image_type``)."""
    where, params = _listing_filter("i", lo, hi, "image_type", image_type)
    return int(conn.execute(f"SELECT COUNT(*) FROM images i{where}", params).fetchone()[0])


def images(
    conn: sqlite3.Connection,
    lo: str | None,
    hi: str | None,
    image_type: str | None,
    limit: int,
    offset: int,
) -> list[dict[str, Any]]:
    """Return one page of images, newest group first, with their MS's calibration."""
    where, params = _listing_filter("i", lo, hi, "image_type", image_type)
    rows = conn.execute(
        "SELECT i.id, i.path, i.group_id, i.image_type, i.field_name, i.center_ra_deg,"
        " i.center_dec_deg, i.freq_hz, i.bandwidth_hz, i.beam_major_arcsec,"
        " i.beam_minor_arcsec, i.beam_pa_deg, i.noise_jy, i.expected_noise_jy, i.peak_jy,"
        " i.dynamic_range, i.image_size, i.cell_arcsec, i.cal_applied, i.selfcal_applied,"
        " i.thumbnail_path, i.created_at, m.cal_status, m.cal_method, m.cal_age_h"
        " FROM images i LEFT JOIN ms_index m ON m.path = i.ms_path"
        f"{where} ORDER BY i.group_id DESC, i.id DESC LIMIT ? OFFSET ?",
        [*params, limit, offset],
    ).fetchall()
    return [dict(r) for r in rows]


def image_files(conn: sqlite3.Connection, image_id: int) -> tuple[str, str | None] | None:
    """Return ``(fits_path, thumbnail_path)`` of image ``image_id``, None if it has no row."""
    row = conn.execute(
        "SELECT path, thumbnail_path FROM images WHERE id = ?", (image_id,)
    ).fetchone()
    return None if row is None else (row[0], row[1])


# --- mosaics -------------------------------------------------------------------------------


def mosaics_of_days(conn: sqlite3.Connection, days: Sequence[str]) -> list[dict[str, Any]]:
    """Return the mosaics registered for the given days, by date and path."""
    found: list[dict[str, Any]] = []
    for part in in_chunks(list(days)):
        marks = ",".join("?" * len(part))
        found += [
            dict(r)
            for r in conn.execute(
                "SELECT path, date, n_images, effective_noise_jy, thumbnail_path, created_at"
                f" FROM mosaics WHERE date IN ({marks}) ORDER BY date, path",
                part,
            )
        ]
    return found


# --- the input folder ----------------------------------------------------------------------


def registered_paths(conn: sqlite3.Connection, paths: Iterable[str]) -> set[str]:
    """Return those of ``paths`` that are registered subband files."""
    return _paths_in(conn, "subband_files", paths)


def rejected_paths(conn: sqlite3.Connection, paths: Iterable[str]) -> set[str]:
    """Return those of ``paths`` that ingest refused (``ingest_rejects``)."""
    return _paths_in(conn, "ingest_rejects", paths)


def _paths_in(conn: sqlite3.Connection, table: str, paths: Iterable[str]) -> set[str]:
    """Return those of ``paths`` that ``table``'s ``path`` column holds (asked in chunks)."""
    ids = list(dict.fromkeys(paths))
    found: set[str] = set()
    for part in in_chunks(ids):
        marks = ",".join("?" * len(part))
        found.update(
            r[0] for r in conn.execute(f"SELECT path FROM {table} WHERE path IN ({marks})", part)
        )
    return found


# --- metrics -------------------------------------------------------------------------------


def recent_bound(conn: sqlite3.Connection, window_s: float = RECENT_WINDOW_S) -> str | None:
    """Return the smallest ``group_id`` within ``window_s`` of the newest group (None: empty).

    Metrics over "recent groups" are the groups observed in the day before the newest one,
    whatever the wall clock says, so a backlog being reprocessed is still measured.
    """
    newest = conn.execute("SELECT MAX(group_id) FROM processing_queue").fetchone()[0]
    if newest is None:
        return None
    try:
        moment = datetime.strptime(newest, GROUP_ID_FORMAT) - timedelta(seconds=window_s)
    except (ValueError, OverflowError):
        return newest  # not a timestamp (a hand-made row): the newest group alone
    return moment.strftime(GROUP_ID_FORMAT)


def stage_counts(conn: sqlite3.Connection) -> list[tuple[str, str, int]]:
    """Return ``(stage, status, groups)`` over every ``stage_status`` row."""
    return [
        (str(s), str(st), int(n))
        for s, st, n in conn.execute(
            "SELECT stage, status, COUNT(*) FROM stage_status GROUP BY stage, status"
        )
    ]


def stage_latencies(conn: sqlite3.Connection, lo: str) -> list[tuple[str, float]]:
    """Return ``(stage, seconds)`` from a group's last registered file to each done stage.

    Over groups with ``group_id >= lo``; a stage done before its group's last file was
    registered (a re-registered file) is left out.
    """
    return [
        (str(stage), float(seconds))
        for stage, seconds in conn.execute(
            "SELECT s.stage, s.updated_at - f.last_file FROM stage_status s"
            " JOIN (SELECT group_id, MAX(registered_at) AS last_file FROM subband_files"
            "       WHERE group_id >= ? GROUP BY group_id) f ON f.group_id = s.group_id"
            " WHERE s.status = 'done' AND s.group_id >= ? AND f.last_file IS NOT NULL"
            "   AND s.updated_at >= f.last_file",
            (lo, lo),
        )
    ]


def flagged_fractions(conn: sqlite3.Connection, lo: str) -> list[tuple[str, float]]:
    """Return ``(step, fraction flagged after it)`` of the flagging steps of recent groups."""
    return [
        (str(step), float(fraction))
        for step, fraction in conn.execute(
            "SELECT step, fraction_after FROM flag_summary WHERE group_id >= ?"
            " AND fraction_after IS NOT NULL",
            (lo,),
        )
    ]


def image_noises(conn: sqlite3.Connection, lo: str) -> list[tuple[float, float | None]]:
    """Return ``(noise_jy, expected_noise_jy)`` of the main images of recent groups."""
    return [
        (float(noise), None if expected is None else float(expected))
        for noise, expected in conn.execute(
            "SELECT noise_jy, expected_noise_jy FROM images WHERE group_id >= ?"
            " AND image_type = 'image' AND noise_jy IS NOT NULL",
            (lo,),
        )
    ]


def latest_image_noise(conn: sqlite3.Connection) -> float | None:
    """Return the noise of the newest group's main image (None without one)."""
    row = conn.execute(
        "SELECT noise_jy FROM images WHERE image_type = 'image' AND noise_jy IS NOT NULL"
        " ORDER BY group_id DESC, id DESC LIMIT 1"
    ).fetchone()
    return None if row is None else float(row[0])
