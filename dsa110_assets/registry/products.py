"""The registry's rows for a group's products: its Measurement Set, images and mosaics.

All SQL that reads or writes ``ms_index``, ``images`` and ``mosaics`` for the processing
steps and the Dagster shell lives here, so a column is named in one place; writes go through
:func:`dsa110_assets.registry.upsert.upsert`. Calibration tables have their own module,
:mod:`dsa110_assets.registry.caltables`.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from dsa110_assets.registry.connection import Registry
from dsa110_assets.registry.upsert import upsert


@dataclass(frozen=True)
class MSRecord:
    """The registry's row for a group's Measurement Set."""

    path: Path
    group_id: str
    start_mjd: float
    mid_mjd: float
    end_mjd: float
    pointing_ra_deg: float
    pointing_dec_deg: float
    created_at: float


@dataclass(frozen=True)
class CalState:
    """How a Measurement Set was calibrated, as the apply step recorded it in ``ms_index``."""

    applied: bool
    method: str
    age_h: float | None


def ms_record(registry: Registry, group_id: str) -> MSRecord:
    """Return the newest ``ms_index`` row of ``group_id``.

    Raises
    ------
    LookupError
        The group has no Measurement Set registered.
    """
    row = registry.execute(
        "SELECT path, group_id, start_mjd, mid_mjd, end_mjd, pointing_ra_deg,"
        " pointing_dec_deg, created_at FROM ms_index WHERE group_id = ?"
        " ORDER BY created_at DESC LIMIT 1",
        (group_id,),
    ).fetchone()
    if row is None:
        raise LookupError(f"group {group_id} has no Measurement Set in ms_index")
    return MSRecord(Path(row[0]), *row[1:])


def register_ms(registry: Registry, row: dict[str, object]) -> None:
    """Upsert a freshly converted Measurement Set (``status = 'converted'``, uncalibrated).

    ``row`` holds ``path, group_id, start_mjd, end_mjd, mid_mjd, stage, field_name,
    pointing_ra_deg, pointing_dec_deg``; a re-conversion resets the calibration state.
    """
    full = {**row, "status": "converted", "cal_applied": 0, "created_at": time.time()}
    with registry.transaction():
        upsert(registry, "ms_index", [full], keep=("group_id",))


def cal_state(registry: Registry, ms_path: Path) -> CalState:
    """Return the calibration state of ``ms_path`` (uncalibrated when it has no row)."""
    row = registry.execute(
        "SELECT cal_applied, cal_method, cal_age_h FROM ms_index WHERE path = ?", (str(ms_path),)
    ).fetchone()
    if row is None:
        return CalState(False, "uncalibrated", None)
    applied = bool(row[0])
    method = row[1] or ("calibrator" if applied else "uncalibrated")
    return CalState(applied, str(method), None if row[2] is None else float(row[2]))


def record_calibration(registry: Registry, ms_path: Path, columns: dict[str, object]) -> None:
    """Record what the apply step did to ``ms_path`` (``cal_*``, tables, stage)."""
    names = list(columns)
    with registry.transaction():
        registry.execute(
            f"UPDATE ms_index SET {', '.join(f'{n} = ?' for n in names)} WHERE path = ?",
            (*(columns[n] for n in names), str(ms_path)),
        )


def record_calibrator_field(
    registry: Registry, ms_path: Path, field_name: str, field_id: int
) -> None:
    """Record which FIELD of ``ms_path`` was renamed after its calibrator."""
    with registry.transaction():
        registry.execute(
            "UPDATE ms_index SET calibrator_field = ?, calibrator_field_id = ? WHERE path = ?",
            (field_name, field_id, str(ms_path)),
        )


def record_calibrators(registry: Registry, group_id: str, listed: list[dict]) -> None:
    """Record the calibrators the beam saw during the group (brightest first) in the queue."""
    with registry.transaction():
        registry.execute(
            "UPDATE processing_queue SET has_calibrator = ?, calibrators = ?, last_update = ?"
            " WHERE group_id = ?",
            (int(bool(listed)), json.dumps(listed), time.time(), group_id),
        )


def group_calibrator(registry: Registry, group_id: str) -> str | None:
    """Return the calibrator a group was centred on (brightest in the beam), if any."""
    row = registry.execute(
        "SELECT has_calibrator, calibrators FROM processing_queue WHERE group_id = ?",
        (group_id,),
    ).fetchone()
    if row is None or not row[0] or not row[1]:
        return None
    listed = json.loads(row[1])
    return str(listed[0]["name"]) if listed else None


def register_images(
    registry: Registry, ms_path: Path, phased_field: str, rows: list[dict[str, object]]
) -> None:
    """Upsert the ``images`` rows of one imaging run and mark its MS imaged, in one transaction.

    Rows of the MS's earlier runs that this run did not make again are removed: a re-run may
    keep a different self-calibration round, whose files replace the old ones.
    """
    paths = [str(r["path"]) for r in rows]
    with registry.transaction():
        registry.execute(
            f"DELETE FROM images WHERE ms_path = ? AND path NOT IN ({','.join('?' * len(paths))})",
            (str(ms_path), *paths),
        )
        upsert(registry, "images", rows)
        registry.execute(
            "UPDATE ms_index SET phased_field = ?, stage = 'imaged' WHERE path = ?",
            (phased_field, str(ms_path)),
        )


def record_thumbnail(registry: Registry, image: Path, png: Path) -> None:
    """Record ``png`` as the preview of ``image`` on its ``images`` row."""
    with registry.transaction():
        registry.execute(
            "UPDATE images SET thumbnail_path = ? WHERE path = ?", (str(png), str(image))
        )


def latest_image(registry: Registry, group_id: str) -> dict[str, object] | None:
    """Return the newest ``image``-type row of ``group_id`` (what its checks measure), or None."""
    row = registry.execute(
        "SELECT path, ms_path, noise_jy, expected_noise_jy, beam_major_arcsec"
        " FROM images WHERE group_id = ? AND image_type = 'image'"
        " ORDER BY created_at DESC LIMIT 1",
        (group_id,),
    ).fetchone()
    return None if row is None else dict(row)


def register_mosaic(registry: Registry, row: dict[str, object]) -> None:
    """Upsert a mosaic's row (a re-run replaces it)."""
    with registry.transaction():
        upsert(registry, "mosaics", [{**row, "created_at": time.time()}])
