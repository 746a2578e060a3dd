"""The registry's SQL for a UTC day of observations: its groups, images and mosaics.

A day's groups are those whose ``group_id`` (the observation's UTC start, ISO text) lies in
``[day, next day)``, so every query here is a range over the ``group_id`` primary key.
:mod:`dsa110_assets.processing.daily_step` turns these rows into a day's status and products.
"""

from __future__ import annotations

from dsa110_assets.registry.connection import Registry


def group_counts(registry: Registry, lo: str, hi: str) -> tuple[int, int]:
    """Return how many groups start in ``[lo, hi)`` and how many of them are unsettled.

    Unsettled: still collecting, pending or in progress, or completed with its image stage not
    yet done, skipped or failed (absent, running or waiting).
    """
    row = registry.execute(
        "SELECT COUNT(*),"
        " SUM(CASE WHEN q.state IN ('collecting', 'pending', 'in_progress') THEN 1"
        "          WHEN q.state = 'completed' AND (s.status IS NULL OR s.status IN"
        "               ('running', 'waiting')) THEN 1 ELSE 0 END)"
        " FROM processing_queue q LEFT JOIN stage_status s"
        "   ON s.group_id = q.group_id AND s.stage = 'image'"
        " WHERE q.group_id >= ? AND q.group_id < ?",
        (lo, hi),
    ).fetchone()
    return int(row[0] or 0), int(row[1] or 0)


def image_stage_times(registry: Registry, lo: str, hi: str) -> list[tuple[str, float]]:
    """Return ``(group_id, updated_at)`` of every done image stage in ``[lo, hi)``, in order."""
    return [
        (r[0], r[1])
        for r in registry.query(
            "SELECT group_id, updated_at FROM stage_status WHERE stage = 'image'"
            " AND status = 'done' AND group_id >= ? AND group_id < ? ORDER BY group_id",
            (lo, hi),
        )
    ]


def observed_days(registry: Registry) -> list[str]:
    """Return every UTC date with at least one registered group, in order."""
    rows = registry.query(
        "SELECT DISTINCT substr(group_id, 1, 10) FROM processing_queue ORDER BY 1"
    )
    return [r[0] for r in rows]


def image_rows(registry: Registry, lo: str, hi: str) -> list[tuple]:
    """Return ``(path, group_id, mid_mjd, noise_jy, center_ra_deg)`` of the images in range.

    Only ``image_type = 'image'`` (not pb-corrected or residual products), by group.
    """
    return [
        tuple(r)
        for r in registry.query(
            "SELECT i.path, i.group_id, m.mid_mjd, i.noise_jy, i.center_ra_deg FROM images i"
            " LEFT JOIN ms_index m ON m.path = i.ms_path"
            " WHERE i.image_type = 'image' AND i.group_id >= ? AND i.group_id < ?"
            " ORDER BY i.group_id",
            (lo, hi),
        )
    ]


def mosaic_rows(registry: Registry, day: str) -> list[tuple[str, float | None, float | None]]:
    """Return ``(path, start_mjd, end_mjd)`` of the mosaics registered for ``day``."""
    return [
        (r[0], r[1], r[2])
        for r in registry.query(
            "SELECT path, start_mjd, end_mjd FROM mosaics WHERE date = ? ORDER BY path", (day,)
        )
    ]
