"""Benchmark: light curves and population variability over 1,000,000 photometry rows.

Fills a fresh registry with 10,000 sources x 100 daily epochs (each source measured at its
transit in the group's image; 1 % of sources vary), then times:

* ``light_curve`` for 20 random sources through SQLite (the default, index lookup) and, for
  comparison, through DuckDB's SQLite scanner (a full scan: the scanner pushes no filters down);
  target under 1 s each;
* ``variability`` (eta and V per source, one DuckDB GROUP BY over the registry);
* ``export_parquet`` of the photometry table, and the same aggregation over that export.

Usage: ``python bench/lightcurve_query.py [--sources 10000] [--epochs 100] [--dir PATH]``
"""

from __future__ import annotations

import argparse
import functools
import math
import random
import statistics
import time
from pathlib import Path

from _common import scratch_folder, timed

from dsa110_assets.analytics import connect_registry, export_parquet, light_curve, variability
from dsa110_assets.naming import epoch_to_group_id
from dsa110_assets.registry import Registry
from dsa110_assets.settings import Settings
from dsa110_assets.timing import Stopwatch

MJD_UNIX_EPOCH = 40587.0
GROUP_CADENCE_S = 309  # 24 x 12.884902 s
SIDEREAL_DAY_S = 86164.0905
START_MJD = 60690.0  # 2025-01-15


@functools.cache
def group_name(epoch_s: float) -> str:
    return epoch_to_group_id(epoch_s)


def nvss_name(ra_deg: float, dec_deg: float) -> str:
    """IAU-style name, ``NVSS JHHMMSS.ss+DDMMSS.s`` (unique at this precision here)."""
    h, rem = divmod(ra_deg / 15.0 * 3600.0, 3600.0)
    m, sec = divmod(rem, 60.0)
    sign = "-" if dec_deg < 0 else "+"
    d, rem = divmod(abs(dec_deg) * 3600.0, 3600.0)
    dm, ds = divmod(rem, 60.0)
    return f"NVSS J{int(h):02d}{int(m):02d}{sec:05.2f}{sign}{int(d):02d}{int(dm):02d}{ds:04.1f}"


def photometry_rows(n_sources: int, n_epochs: int, seed: int = 7):
    """Yield photometry tuples: every source measured once per day, at its transit."""
    rng = random.Random(seed)
    now = time.time()
    # Catalogue order (by RA, as NVSS names sort): the source index then grows at its end.
    positions = sorted(
        (rng.uniform(0.0, 360.0), rng.uniform(-10.0, 80.0)) for _ in range(n_sources)
    )
    for ra, dec in positions:
        name = nvss_name(ra, dec)
        s0 = math.exp(rng.gauss(math.log(0.05), 1.0))  # ~50 mJy typical
        variable = rng.random() < 0.01
        for e in range(n_epochs):
            t = (START_MJD - MJD_UNIX_EPOCH) * 86400.0 + e * SIDEREAL_DAY_S + ra / 360 * 86400.0
            t0 = t - t % GROUP_CADENCE_S
            group_id = group_name(t0)
            rms = 0.0015 * rng.uniform(0.8, 1.3)
            truth = s0 * (1.0 + 0.5 * math.sin(e / 5.0)) if variable else s0
            err = math.hypot(rms, 0.03 * truth)
            flux = truth + rng.gauss(0.0, err)
            mjd = t / 86400.0 + MJD_UNIX_EPOCH
            yield (
                name,
                "nvss",
                ra,
                dec,
                f"/stage/dsa110-contimg/images/{group_id}-image-pb.fits",
                group_id,
                mjd,
                flux * 1.02,
                err,
                flux,
                err,
                rms,
                s0,
                rng.uniform(0.5, 2.0),
                rng.uniform(0.3, 1.0),
                now,
            )


def fill_registry(db_path: Path, n_sources: int, n_epochs: int) -> int:
    """Insert all rows with one executemany in one transaction; return the row count."""
    registry = Registry(db_path)
    try:
        registry.execute("PRAGMA cache_size = -1000000")  # 1 GB: the indexes stay in memory
        with registry.transaction() as conn:
            conn.executemany(
                "INSERT INTO photometry(source_id, catalog, ra_deg, dec_deg, image_path,"
                " group_id, mjd, peak_flux_jy, peak_flux_err_jy, flux_jy, flux_err_jy,"
                " local_rms_jy, catalog_flux_jy, chi2, pb_response, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                photometry_rows(n_sources, n_epochs),
            )
        return registry.query("SELECT COUNT(*) FROM photometry")[0][0]
    finally:
        registry.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sources", type=int, default=10_000)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--lookups", type=int, default=20)
    parser.add_argument("--dir", type=Path, help="scratch folder (default: a temporary one)")
    args = parser.parse_args()

    with scratch_folder("bench-lightcurve-", args.dir) as root:
        settings = Settings.from_env({}, root=root).ensure_dirs()
        elapsed, n_rows = timed(fill_registry, settings.db_path, args.sources, args.epochs)
        size_mb = settings.db_path.stat().st_size / 1e6
        print(
            f"fill: {n_rows:,} rows in {elapsed:.1f} s ({n_rows / elapsed:,.0f} rows/s),"
            f" registry {size_mb:.0f} MB"
        )

        con = connect_registry(settings.db_path)
        names = [
            r[0] for r in con.execute("SELECT DISTINCT source_id FROM reg.photometry").fetchall()
        ]
        con.close()
        picks = random.Random(3).sample(sorted(names), args.lookups)

        for engine, n in (("sqlite", len(picks)), ("duckdb", min(5, len(picks)))):
            times = []
            for name in picks[:n]:
                dt, points = timed(light_curve, settings, name, engine=engine)
                assert len(points) == args.epochs, (name, len(points))
                times.append(dt)
            median_ms, max_ms = statistics.median(times) * 1e3, max(times) * 1e3
            print(
                f"light_curve engine={engine}: {n} sources,"
                f" median {median_ms:.1f} ms, max {max_ms:.1f} ms"
            )

        dt, stats = timed(variability, settings, min_epochs=3)
        top = stats[0]
        print(
            f"variability (DuckDB over SQLite): {len(stats):,} sources in {dt:.2f} s;"
            f" most variable {top.source_id} eta={top.eta:.0f} V={top.v:.2f}"
        )
        n_var = sum(1 for s in stats if s.eta is not None and s.eta > 10)
        print(f"  sources with eta > 10: {n_var} (about 1 % are simulated as variable)")

        dt, report = timed(export_parquet, settings, tables=("photometry",))
        t = report.tables[0]
        print(
            f"export_parquet photometry: {t.rows:,} rows, {len(t.dates)} date partitions,"
            f" {t.bytes / 1e6:.1f} MB in {t.files} files, {dt:.2f} s"
        )
        con = connect_registry(settings.db_path)
        glob = str(t.path / "**" / "*.parquet")
        t0 = Stopwatch()
        n = con.execute(
            f"""
            SELECT COUNT(*) FROM (
                SELECT source_id,
                       STDDEV_SAMP(flux_jy) / AVG(flux_jy) AS v,
                       COUNT(*) / (COUNT(*) - 1.0)
                         * (AVG(w * flux_jy * flux_jy) - AVG(w * flux_jy) ^ 2 / AVG(w)) AS eta
                FROM (SELECT *, 1.0 / (flux_err_jy * flux_err_jy) AS w
                      FROM read_parquet('{glob}', hive_partitioning = true)
                      WHERE flux_jy IS NOT NULL AND flux_err_jy > 0)
                GROUP BY source_id HAVING COUNT(*) >= 3)
            """
        ).fetchone()[0]
        dt = t0.elapsed_s
        print(f"variability over the Parquet export: {n:,} sources in {dt:.2f} s")
        con.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
