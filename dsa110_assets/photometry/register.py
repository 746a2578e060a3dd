"""Forced-photometry measurements in the registry's ``photometry`` table, and light curves.

One image's measurements are replaced as a whole: re-running photometry on an image deletes
that image's rows whose source is no longer measured (now skipped, or dropped from the
catalog) and upserts the rest on ``UNIQUE(source_id, image_path)``, inside one write
transaction, so a reader sees either the old set or the new one and a re-run never duplicates.
Skipped measurements are not stored: a light curve holds only real numbers.
"""

from __future__ import annotations

import json
import math
import sqlite3
import time
from collections.abc import Iterable
from pathlib import Path

from dsa110_assets.photometry.forced import Measurement
from dsa110_assets.registry import Registry
from dsa110_assets.registry.upsert import upsert

#: The measured quantities stored, named as on
#: :class:`~dsa110_assets.photometry.forced.Measurement`.
_MEASURED = (
    "peak_flux_jy",
    "peak_flux_err_jy",
    "flux_jy",
    "flux_err_jy",
    "local_rms_jy",
    "catalog_flux_jy",
    "chi2",
    "pb_response",
)


def _real(value: float) -> float | None:
    """Return ``value`` as SQLite stores it: NULL for non-finite numbers (SQLite has no NaN)."""
    return float(value) if value is not None and math.isfinite(value) else None


def record_measurements(
    registry: Registry,
    measurements: Iterable[Measurement],
    *,
    image_path: str | Path,
    group_id: str | None,
    mjd: float | None,
    catalog: str | None,
    now: float | None = None,
) -> int:
    """Replace the rows of ``image_path`` with these measurements; return the rows written.

    Raises
    ------
    ValueError
        Two measurements of the same source.
    """
    image = str(image_path)
    now = time.time() if now is None else now
    measured = [m for m in measurements if m.ok]
    ids = [m.source_id for m in measured]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{image}: a source is measured twice")
    rows = [
        {
            "source_id": m.source_id,
            "catalog": catalog,
            "ra_deg": m.ra_deg,
            "dec_deg": m.dec_deg,
            "image_path": image,
            "group_id": group_id,
            "mjd": _real(mjd),
            **{column: _real(getattr(m, column)) for column in _MEASURED},
            "created_at": now,
        }
        for m in measured
    ]
    with registry.transaction() as conn:
        conn.execute(
            "DELETE FROM photometry WHERE image_path = ?"
            " AND source_id NOT IN (SELECT value FROM json_each(?))",
            (image, json.dumps(ids)),
        )
        upsert(registry, "photometry", rows, conflict=("source_id", "image_path"))
    return len(rows)


def light_curve(registry: Registry, source_id: str) -> list[sqlite3.Row]:
    """Return every ``photometry`` row of one source, ordered by epoch (then image)."""
    return registry.query(
        "SELECT * FROM photometry WHERE source_id = ? ORDER BY mjd, image_path", (source_id,)
    )


#: Each flux column of ``photometry`` and the column of its error.
FLUX_ERRORS = {"flux_jy": "flux_err_jy", "peak_flux_jy": "peak_flux_err_jy"}


def flux_series(
    registry: Registry,
    flux_column: str = "flux_jy",
    *,
    until_mjd: float | None = None,
    per_group_only: bool = False,
) -> list[tuple[str, float, float]]:
    """Return ``(source_id, flux, error)`` of every usable measurement, by source and epoch.

    Rows with a NULL flux or a non-positive error are left out. ``until_mjd`` keeps only
    epochs before it (exclusive); ``per_group_only`` only the per-observation images, not
    mosaics (``group_id`` NULL). Plain tuples, not rows: light curves of every source are
    read at once, and tuples are several times cheaper.

    Raises
    ------
    ValueError
        ``flux_column`` is not one of :data:`FLUX_ERRORS`.
    """
    if flux_column not in FLUX_ERRORS:
        raise ValueError(f"flux_column must be one of {sorted(FLUX_ERRORS)}, got {flux_column!r}")
    cursor = registry.conn.cursor()
    cursor.row_factory = None
    until = "" if until_mjd is None else " AND mjd < ?"
    if per_group_only:
        until += " AND group_id IS NOT NULL"
    cursor.execute(
        f"SELECT source_id, {flux_column}, {FLUX_ERRORS[flux_column]} FROM photometry"
        f" WHERE {flux_column} IS NOT NULL AND {FLUX_ERRORS[flux_column]} > 0{until}"
        " ORDER BY source_id, mjd",
        () if until_mjd is None else (float(until_mjd),),
    )
    return cursor.fetchall()
