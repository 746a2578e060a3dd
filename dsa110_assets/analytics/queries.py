"""Questions asked of the registry: light curves, variability, per-day counts, statistics.

Which engine answers which question was chosen by measurement (``bench/lightcurve_query.py``,
1,000,000 photometry rows, 10,000 sources x 100 epochs, 2 shared cores): DuckDB's SQLite
scanner pushes no filters down, so a one-source light curve through it scans the whole
``photometry`` table (1.3-1.5 s median, 2.1 s max over runs, growing with the table), while
SQLite answers the same query from the ``photometry_source(source_id, mjd)`` index in 2 ms
(3-7 ms max). :func:`light_curve` therefore uses SQLite by default (DuckDB stays selectable for
comparison). Population-wide questions use DuckDB, whose columnar, parallel GROUP BY reads the
table once: :func:`variability` over all 10,000 sources takes 0.9-1.4 s through the scanner
(0.2-0.4 s over the Parquet export); :func:`products_per_day` and :func:`pipeline_stats` use it
too.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import duckdb

from dsa110_assets.analytics.attach import connect_registry, date_sql, registry_path
from dsa110_assets.registry.connection import connect_readonly
from dsa110_assets.settings import Settings

# --- light curves -------------------------------------------------------------------------


@dataclass(frozen=True)
class LightCurvePoint:
    """One measurement of a source: one epoch (image or mosaic) of its light curve."""

    mjd: float | None
    date: str | None  # UTC date of mjd, YYYY-MM-DD
    flux_jy: float | None  # forced-fit flux density
    flux_err_jy: float | None
    peak_flux_jy: float | None
    peak_flux_err_jy: float | None
    local_rms_jy: float | None
    pb_response: float | None
    image_path: str
    group_id: str | None


_LIGHT_CURVE_COLUMNS = (
    "mjd, flux_jy, flux_err_jy, peak_flux_jy, peak_flux_err_jy, local_rms_jy, pb_response,"
    " image_path, group_id"
)


def _mjd_to_date(mjd: float | None) -> str | None:
    if mjd is None:
        return None
    return (datetime.date(1858, 11, 17) + datetime.timedelta(days=int(mjd // 1))).isoformat()


def light_curve(
    settings_or_db_path: Settings | str | os.PathLike[str],
    source_id: str,
    *,
    engine: Literal["sqlite", "duckdb"] = "sqlite",
) -> list[LightCurvePoint]:
    """Every photometry measurement of ``source_id``, ordered by epoch (undated rows last).

    ``engine="sqlite"`` (the default) answers from the ``photometry_source`` index in
    milliseconds; ``"duckdb"`` scans the whole table through the SQLite scanner and exists to
    measure that difference (see the module docstring). An unknown source gives an empty list.
    """
    db_path = registry_path(settings_or_db_path)
    sql = (
        f"SELECT {_LIGHT_CURVE_COLUMNS} FROM {{table}} WHERE source_id = ?"
        " ORDER BY mjd NULLS LAST, image_path"
    )
    if engine == "sqlite":
        con = connect_readonly(db_path)
        try:
            rows = con.execute(sql.format(table="photometry"), (source_id,)).fetchall()
        finally:
            con.close()
    elif engine == "duckdb":
        dcon = connect_registry(db_path)
        try:
            rows = dcon.execute(sql.format(table="reg.photometry"), [source_id]).fetchall()
        finally:
            dcon.close()
    else:
        raise ValueError(f"engine must be 'sqlite' or 'duckdb', not {engine!r}")
    return [
        LightCurvePoint(
            mjd=mjd,
            date=_mjd_to_date(mjd),
            flux_jy=flux,
            flux_err_jy=flux_err,
            peak_flux_jy=peak,
            peak_flux_err_jy=peak_err,
            local_rms_jy=rms,
            pb_response=pb,
            image_path=image_path,
            group_id=group_id,
        )
        for mjd, flux, flux_err, peak, peak_err, rms, pb, image_path, group_id in rows
    ]


# --- population-wide aggregations ---------------------------------------------------------


@dataclass(frozen=True)
class SourceVariability:
    """Variability statistics of one source's forced-fit light curve.

    ``v`` is the modulation index std(S)/mean(S) (sample std); ``eta`` is the weighted reduced
    chi-squared about the weighted mean, N/(N-1) * (<w S^2> - <w S>^2/<w>), w = 1/sigma^2 (the
    LOFAR TraP / VAST definitions), so a steady source has eta ~ 1.
    """

    source_id: str
    n_epochs: int
    mean_flux_jy: float
    v: float | None
    eta: float | None


def variability(
    settings_or_db_path: Settings | str | os.PathLike[str], *, min_epochs: int = 2
) -> list[SourceVariability]:
    """Eta and V for every source with at least ``min_epochs`` usable measurements.

    Usable means a flux and a positive error. One GROUP BY in DuckDB over the registry, sorted
    by descending eta so the most variable sources come first.
    """
    if min_epochs < 2:
        raise ValueError(f"min_epochs must be at least 2 (got {min_epochs})")
    con = connect_registry(registry_path(settings_or_db_path))
    try:
        rows = con.execute(
            """
            WITH m AS (
                SELECT source_id, flux_jy AS f, 1.0 / (flux_err_jy * flux_err_jy) AS w
                FROM reg.photometry
                WHERE flux_jy IS NOT NULL AND flux_err_jy > 0
            )
            SELECT source_id, COUNT(*) AS n, AVG(f) AS mean_f,
                   STDDEV_SAMP(f) / NULLIF(AVG(f), 0) AS v,
                   COUNT(*) / (COUNT(*) - 1.0)
                     * (AVG(w * f * f) - AVG(w * f) * AVG(w * f) / AVG(w)) AS eta
            FROM m
            GROUP BY source_id
            HAVING COUNT(*) >= ?
            ORDER BY eta DESC NULLS LAST, source_id
            """,
            [min_epochs],
        ).fetchall()
    finally:
        con.close()
    return [SourceVariability(s, int(n), float(mean), v, eta) for s, n, mean, v, eta in rows]


# Product kinds counted per day, with the table each comes from.
_PER_DAY_KINDS: dict[str, str] = {
    "groups": "processing_queue",
    "ms": "ms_index",
    "images": "images",
    "calibration_tables": "calibration_tables",
    "mosaics": "mosaics",
    "photometry": "photometry",
}


def products_per_day(settings_or_db_path: Settings | str | os.PathLike[str]) -> list[dict]:
    """Rows per UTC date of every product table, dated as in :data:`DATE_SOURCES`.

    One dict per date (ascending) with a count for each of ``groups``, ``ms``, ``images``,
    ``calibration_tables``, ``mosaics`` and ``photometry`` (zero when none).
    """
    union = " UNION ALL ".join(
        f"SELECT {date_sql(table)} AS date, '{kind}' AS kind FROM reg.{table}"
        for kind, table in _PER_DAY_KINDS.items()
    )
    con = connect_registry(registry_path(settings_or_db_path))
    try:
        counts = con.execute(
            f"SELECT date, kind, COUNT(*) FROM ({union}) GROUP BY date, kind"
        ).fetchall()
    finally:
        con.close()
    days: dict[str | None, dict[str, Any]] = {}
    for day, kind, n in counts:
        row = days.setdefault(day, {"date": day, **dict.fromkeys(_PER_DAY_KINDS, 0)})
        row[kind] = int(n)
    return [days[d] for d in sorted(days, key=lambda d: (d is None, d or ""))]


def folder_bytes(folder: Path) -> tuple[int, int]:
    """(bytes, files) below ``folder``, not following symlinks."""
    total = count = 0
    if not folder.exists():
        return 0, 0
    for dirpath, _dirnames, filenames in os.walk(folder):
        for name in filenames:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
                count += 1
            except OSError:
                continue
    return total, count


def pipeline_stats(settings: Settings) -> dict[str, Any]:
    """Summarise the pipeline: counts by state, products, stage outcomes, bytes per tier.

    Returns
    -------
    dict
        JSON-ready: ``groups_by_state``, ``products``, ``per_day``, ``bytes_per_tier``,
        ``images_by_type``, ``calibration_tables_by_type``, ``stage_outcomes``,
        ``products_per_day`` and the registry's raw-data total.
    """
    con = connect_registry(settings.db_path)
    try:
        counts = _queue_counts(con) | _product_counts(con)
    finally:
        con.close()
    return {
        "registry": str(settings.db_path),
        "groups_by_state": counts["groups_by_state"],
        "products": counts["products"],
        "registered_raw_bytes": counts["registered_raw_bytes"],
        "per_day": counts["per_day"],
        "bytes_per_tier": _bytes_per_tier(settings),
        "images_by_type": counts["images_by_type"],
        "calibration_tables_by_type": counts["calibration_tables_by_type"],
        "photometry_sources": counts["photometry_sources"],
        "stage_outcomes": counts["stage_outcomes"],
        "products_per_day": products_per_day(settings.db_path),
    }


_COUNTED_TABLES = (
    "subband_files",
    "ms_index",
    "images",
    "calibration_tables",
    "photometry",
    "mosaics",
)


def _queue_counts(con: duckdb.DuckDBPyConnection) -> dict[str, Any]:
    """Count groups by state, and per day the groups, their subband files and MSs."""
    by_state = dict(
        con.execute(
            "SELECT state, COUNT(*) FROM reg.processing_queue GROUP BY state ORDER BY state"
        ).fetchall()
    )
    per_day = [
        {"date": str(day), "groups": groups, "subband_files": files, "ms": ms}
        for day, groups, files, ms in con.execute(
            """
            SELECT substr(q.group_id, 1, 10) AS day,
                   COUNT(DISTINCT q.group_id),
                   COUNT(sf.path),
                   COUNT(DISTINCT m.path)
            FROM reg.processing_queue q
            LEFT JOIN reg.subband_files sf ON sf.group_id = q.group_id
            LEFT JOIN reg.ms_index m ON m.group_id = q.group_id
            GROUP BY day ORDER BY day
            """
        ).fetchall()
    ]
    stage_outcomes: dict[str, dict[str, int]] = {}
    for stage, status, n in con.execute(
        "SELECT stage, status, COUNT(*) FROM reg.stage_status GROUP BY stage, status"
        " ORDER BY stage, status"
    ).fetchall():
        stage_outcomes.setdefault(stage, {})[status] = int(n)
    return {"groups_by_state": by_state, "per_day": per_day, "stage_outcomes": stage_outcomes}


def _product_counts(con: duckdb.DuckDBPyConnection) -> dict[str, Any]:
    """Count the rows of each product table, and images, tables and sources by kind."""
    products = {
        table: con.execute(f"SELECT COUNT(*) FROM reg.{table}").fetchone()[0]
        for table in _COUNTED_TABLES
    }
    registered_raw = con.execute(
        "SELECT COALESCE(SUM(size_bytes), 0) FROM reg.subband_files"
    ).fetchone()[0]
    images_by_type = dict(
        con.execute(
            "SELECT image_type, COUNT(*) FROM reg.images GROUP BY image_type ORDER BY 1"
        ).fetchall()
    )
    caltables_by_type = dict(
        con.execute(
            "SELECT table_type || '/' || status, COUNT(*) FROM reg.calibration_tables"
            " GROUP BY 1 ORDER BY 1"
        ).fetchall()
    )
    photometry_sources = con.execute(
        "SELECT COUNT(DISTINCT source_id) FROM reg.photometry"
    ).fetchone()[0]
    return {
        "products": products,
        "registered_raw_bytes": int(registered_raw),
        "images_by_type": images_by_type,
        "calibration_tables_by_type": caltables_by_type,
        "photometry_sources": int(photometry_sources),
    }


def _bytes_per_tier(settings: Settings) -> dict[str, dict[str, Any]]:
    """Measure the bytes and files in each storage tier's folder."""
    tiers = {
        "hdd_input": settings.input_dir,
        "ssd_products": settings.products_dir,
        "hdd_state": settings.state_dir,
        "cold_archive": settings.archive_dir,
    }
    bytes_per_tier = {}
    for tier, folder in tiers.items():
        size, files = folder_bytes(folder)
        bytes_per_tier[tier] = {"path": str(folder), "bytes": size, "files": files}
    return bytes_per_tier
