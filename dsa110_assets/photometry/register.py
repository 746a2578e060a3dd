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

_COLUMNS = (
    "source_id, catalog, ra_deg, dec_deg, image_path, group_id, mjd, peak_flux_jy,"
    " peak_flux_err_jy, flux_jy, flux_err_jy, local_rms_jy, catalog_flux_jy, chi2,"
    " pb_response, created_at"
)
_UPDATE = ", ".join(
    f"{c} = excluded.{c}"
    for c in (
        "catalog", "ra_deg", "dec_deg", "group_id", "mjd", "peak_flux_jy", "peak_flux_err_jy",
        "flux_jy", "flux_err_jy", "local_rms_jy", "catalog_flux_jy", "chi2", "pb_response",
        "created_at",
    )
)  # fmt: skip


def _real(value: float) -> float | None:
    """SQLite has no NaN: store NULL for non-finite numbers."""
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
    """Replace the rows of ``image_path`` with these measurements; returns the rows written.

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
        (
            m.source_id, catalog, m.ra_deg, m.dec_deg, image, group_id, _real(mjd),
            _real(m.peak_flux_jy), _real(m.peak_flux_err_jy), _real(m.flux_jy),
            _real(m.flux_err_jy), _real(m.local_rms_jy), _real(m.catalog_flux_jy),
            _real(m.chi2), _real(m.pb_response), now,
        )
        for m in measured
    ]  # fmt: skip
    with registry.transaction() as conn:
        conn.execute(
            "DELETE FROM photometry WHERE image_path = ?"
            " AND source_id NOT IN (SELECT value FROM json_each(?))",
            (image, json.dumps(ids)),
        )
        conn.executemany(
            f"INSERT INTO photometry ({_COLUMNS}) VALUES ({', '.join('?' * 16)})"
            f" ON CONFLICT (source_id, image_path) DO UPDATE SET {_UPDATE}",
            rows,
        )
    return len(rows)


def light_curve(registry: Registry, source_id: str) -> list[sqlite3.Row]:
    """Every ``photometry`` row of one source, ordered by epoch (then image)."""
    return registry.query(
        "SELECT * FROM photometry WHERE source_id = ? ORDER BY mjd, image_path", (source_id,)
    )
