"""The registry's ``calibration_tables``: registering solutions and finding the ones to apply.

Every statement on ``calibration_tables`` lives here. A table is registered once per path
(a re-solve updates its row, keeping the group, type and calibrator that name it), marked
``invalid`` when it fails validation (never considered again), and found by the apply step
through the two queries below.
"""

from __future__ import annotations

import sqlite3

from dsa110_assets.registry.connection import Registry
from dsa110_assets.registry.upsert import upsert


def register_caltables(registry: Registry, rows: list[dict[str, object]]) -> None:
    """Upsert calibration tables (``status = 'valid'``), all in one transaction."""
    now = {"status": "valid"}
    with registry.transaction():
        upsert(
            registry,
            "calibration_tables",
            [{**row, **now} for row in rows],
            keep=("group_id", "table_type", "calibrator"),
        )


def mark_invalid(registry: Registry, paths: list[str]) -> None:
    """Mark tables that do not read back ``invalid``, so they are never applied."""
    with registry.transaction():
        for path in paths:
            registry.execute(
                "UPDATE calibration_tables SET status = 'invalid' WHERE path = ?", (path,)
            )


def calibrator_gain_solves(
    registry: Registry, mid_mjd: float, window_d: float
) -> list[sqlite3.Row]:
    """Return the valid calibrator gain tables centred within ``window_d`` days, and bandpass.

    Rows are ``(gain path, bandpass path, calibrator, group_id, centre MJD)``, nearest first
    (then newest); a gain counts only when its own solve's bandpass is valid too.
    """
    return registry.query(
        "SELECT g.path, b.path, g.calibrator, g.group_id,"
        " (g.valid_start_mjd + g.valid_end_mjd) / 2 AS centre FROM calibration_tables g"
        " JOIN calibration_tables b ON b.group_id = g.group_id AND b.table_type = 'bandpass'"
        " AND b.calibrator IS g.calibrator AND b.solved_against = g.solved_against"
        " WHERE g.table_type = 'gain' AND g.status = 'valid' AND b.status = 'valid'"
        " AND g.solved_against = 'calibrator'"
        " AND ABS((g.valid_start_mjd + g.valid_end_mjd) / 2 - ?) <= ?"
        " ORDER BY ABS((g.valid_start_mjd + g.valid_end_mjd) / 2 - ?), g.created_at DESC",
        (mid_mjd, window_d, mid_mjd),
    )


def calibrator_bandpasses(registry: Registry, mid_mjd: float) -> list[sqlite3.Row]:
    """Return the valid calibrator bandpass tables covering ``mid_mjd``, best first.

    Rows are ``(path, group_id, calibrator, beam_response)`` ordered by beam response (to 3
    decimals, highest first), then nearest in time, then newest.
    """
    return registry.query(
        "SELECT path, group_id, calibrator, beam_response FROM calibration_tables"
        " WHERE table_type = 'bandpass' AND status = 'valid' AND solved_against = 'calibrator'"
        " AND valid_start_mjd <= ? AND valid_end_mjd >= ?"
        " ORDER BY ROUND(COALESCE(beam_response, -1), 3) DESC,"
        " ABS((valid_start_mjd + valid_end_mjd) / 2 - ?), created_at DESC",
        (mid_mjd, mid_mjd, mid_mjd),
    )


def groups_not_calibrator_calibrated(registry: Registry) -> list[sqlite3.Row]:
    """Imaged groups calibrated less well than a calibrator solve could, oldest first.

    Rows are ``(group_id, mid_mjd, cal_method)`` of groups whose method is ``uncalibrated``,
    ``field-model`` or ``nearest``, whose image stage is done and none of whose stages is
    running (so a re-run never overlaps the first run).
    """
    return registry.query(
        "SELECT m.group_id, m.mid_mjd, m.cal_method FROM ms_index m"
        " JOIN stage_status i ON i.group_id = m.group_id AND i.stage = 'image'"
        " AND i.status = 'done'"
        " WHERE m.cal_method IN ('uncalibrated', 'field-model', 'nearest')"
        " AND NOT EXISTS (SELECT 1 FROM stage_status r WHERE r.group_id = m.group_id"
        " AND r.status = 'running')"
        " ORDER BY m.mid_mjd"
    )
