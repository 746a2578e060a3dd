"""Analytics over the registry: light curves, per-day counts, statistics, Parquet export.

A registry is filled with a realistic small night-by-night history (12 groups over 4 UTC
days, their MS, images, calibration tables, mosaics, stage outcomes and 3,000+ photometry
rows); every expected figure is computed here in plain Python from the rows inserted.
"""

from __future__ import annotations

import datetime as dt
import math
import random
from collections import Counter
from pathlib import Path

import duckdb
import numpy as np
import pytest

from dsa110_assets.analytics import (
    EXPORT_TABLES,
    ExportError,
    LightCurvePoint,
    export_parquet,
    light_curve,
    pipeline_stats,
    products_per_day,
    variability,
)
from dsa110_assets.registry import Registry

MJD0 = dt.datetime(1858, 11, 17, tzinfo=dt.UTC)
N_SOURCES = 300
GROUPS = [  # (group_id, state): 4 UTC days, one group two minutes before midnight
    ("2025-01-15T03:10:00", "completed"),
    ("2025-01-15T11:40:00", "completed"),
    ("2025-01-15T23:58:00", "completed"),
    ("2025-01-16T02:00:00", "completed"),
    ("2025-01-16T09:30:00", "completed"),
    ("2025-01-16T20:15:00", "failed"),
    ("2025-01-17T01:05:00", "completed"),
    ("2025-01-17T06:45:00", "completed"),
    ("2025-01-17T18:20:00", "completed"),
    ("2025-01-18T00:30:00", "completed"),
    ("2025-01-18T07:00:00", "completed"),
    ("2025-01-18T12:00:00", "pending"),
]
DONE = [g for g, state in GROUPS if state == "completed"]


def to_mjd(group_id: str, offset_s: float = 0.0) -> float:
    moment = dt.datetime.fromisoformat(group_id).replace(tzinfo=dt.UTC)
    return (moment - MJD0).total_seconds() / 86400.0 + offset_s / 86400.0


def mjd_date(mjd: float) -> str:
    return (MJD0 + dt.timedelta(days=mjd)).date().isoformat()


def unix(group_id: str) -> float:
    return dt.datetime.fromisoformat(group_id).replace(tzinfo=dt.UTC).timestamp()


def fill(registry: Registry, seed: int = 11) -> dict:
    """Insert the history; return what each analytic must report."""
    rng = np.random.default_rng(seed)
    expect: dict = {"per_day": {}, "sources": {}}

    def count(day: str, kind: str, n: int = 1) -> None:
        row = expect["per_day"].setdefault(
            day,
            dict.fromkeys(
                ("groups", "ms", "images", "calibration_tables", "mosaics", "photometry"), 0
            ),
        )
        row[kind] += n

    conn = registry.conn
    with registry.transaction():
        _fill_queue_and_products(conn, count)
        _fill_stage_status(conn)
        expect["photometry_rows"] = _fill_photometry(conn, rng, seed, count, expect["sources"])
    return expect


def _fill_queue_and_products(conn, count) -> None:
    """Insert the groups, their MSs, images, calibration tables and mosaics, counting each."""
    for gid, state in GROUPS:
        conn.execute(
            "INSERT INTO processing_queue(group_id, state, received_at, last_update,"
            " expected_subbands) VALUES (?, ?, ?, ?, 16)",
            (gid, state, unix(gid) + 290, unix(gid) + 900),
        )
        count(gid[:10], "groups")
    for gid in DONE:
        ms = f"/stage/ms/{gid}.ms"
        # mid_mjd of the 23:58 group falls on the next day; the group date wins.
        conn.execute(
            "INSERT INTO ms_index(path, group_id, start_mjd, end_mjd, mid_mjd, status,"
            " created_at) VALUES (?, ?, ?, ?, ?, 'converted', ?)",
            (ms, gid, to_mjd(gid), to_mjd(gid, 309), to_mjd(gid, 154.5), unix(gid) + 1200),
        )
        count(gid[:10], "ms")
        for kind in ("image", "pbcor"):
            conn.execute(
                "INSERT INTO images(path, ms_path, group_id, image_type, noise_jy,"
                " created_at) VALUES (?, ?, ?, ?, ?, ?)",
                (f"/stage/images/{gid}-{kind}.fits", ms, gid, kind, 1e-3, unix(gid) + 2000),
            )
            count(gid[:10], "images")
    caltables = [  # (path, group_id, type, valid_start_mjd)
        ("/stage/cal/a.b", DONE[0], "bandpass", to_mjd(DONE[0])),
        ("/stage/cal/a.g", DONE[0], "gain", to_mjd(DONE[0])),
        ("/stage/cal/c.g", DONE[5], "gain", to_mjd(DONE[5])),
        ("/stage/cal/manual.g", None, "gain", to_mjd("2025-01-18T05:00:00")),
    ]
    for path, gid, kind, start in caltables:
        conn.execute(
            "INSERT INTO calibration_tables(path, group_id, table_type, valid_start_mjd,"
            " valid_end_mjd, created_at) VALUES (?, ?, ?, ?, ?, ?)",
            (path, gid, kind, start, start + 0.5, 1.76e9),
        )
        count(gid[:10] if gid else mjd_date(start), "calibration_tables")
    for day in ("2025-01-15", "2025-01-16", "2025-01-17"):
        conn.execute(
            "INSERT INTO mosaics(path, date, start_mjd, end_mjd, n_images, created_at)"
            " VALUES (?, ?, ?, ?, 3, ?)",
            (f"/stage/mosaics/{day}.fits", day, 0.0, 0.0, 1.76e9),
        )
        count(day, "mosaics")
    undated = to_mjd("2025-01-18T00:00:00", 3600)
    conn.execute(
        "INSERT INTO mosaics(path, date, start_mjd, end_mjd, n_images, created_at)"
        " VALUES ('/stage/mosaics/x.fits', NULL, ?, ?, 2, 1.76e9)",
        (undated, undated + 0.1),
    )
    count("2025-01-18", "mosaics")


def _fill_stage_status(conn) -> None:
    """Insert the calibrate and image stage rows (one image failed, one calibrate waiting)."""
    for gid in DONE[:-1]:
        conn.execute(
            "INSERT INTO stage_status(group_id, stage, status, updated_at)"
            " VALUES (?, 'calibrate', 'done', ?)",
            (gid, unix(gid) + 3000),
        )
        status = "failed" if gid == DONE[3] else "done"
        conn.execute(
            "INSERT INTO stage_status(group_id, stage, status, updated_at)"
            " VALUES (?, 'image', ?, ?)",
            (gid, status, unix(gid) + 3100),
        )
    conn.execute(
        "INSERT INTO stage_status(group_id, stage, status, updated_at)"
        " VALUES (?, 'calibrate', 'waiting', ?)",
        (DONE[-1], unix(DONE[-1]) + 3000),
    )


def _fill_photometry(conn, rng, seed: int, count, sources: dict) -> int:
    """Insert the light curves (source 7 flares) in shuffled order; return the row count."""
    rows = []
    for s in range(N_SOURCES):
        name = f"NVSS J{s:04d}+3300"
        s0 = float(rng.uniform(0.01, 1.0))
        fluxes, errs, mjds = [], [], []
        for k, gid in enumerate(DONE):
            err = math.hypot(1.5e-3, 0.03 * s0)
            truth = s0 * (3.0 if s == 7 and k % 2 else 1.0)  # source 7 flares
            flux = truth + float(rng.normal(0.0, err))
            mjd = to_mjd(gid, 200.0 + s)  # the 23:58 group's rows land on the next day
            rows.append(
                (
                    name,
                    "nvss",
                    float(s),
                    33.0,
                    f"/stage/images/{gid}-pbcor.fits",
                    gid,
                    mjd,
                    flux * 1.01,
                    err,
                    flux,
                    err,
                    1.5e-3,
                    s0,
                    1.0,
                    0.8,
                    1.76e9,
                )
            )
            count(mjd_date(mjd), "photometry")
            fluxes.append(flux)
            errs.append(err)
            mjds.append(mjd)
        sources[name] = (np.array(mjds), np.array(fluxes), np.array(errs))
    random.Random(seed).shuffle(rows)  # insertion order must not matter
    conn.executemany(
        "INSERT INTO photometry(source_id, catalog, ra_deg, dec_deg, image_path, group_id,"
        " mjd, peak_flux_jy, peak_flux_err_jy, flux_jy, flux_err_jy, local_rms_jy,"
        " catalog_flux_jy, chi2, pb_response, created_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        rows,
    )
    # A measurement with no epoch: dated by its group, listed last in its light curve.
    conn.execute(
        "INSERT INTO photometry(source_id, ra_deg, dec_deg, image_path, group_id, mjd,"
        " flux_jy, created_at) VALUES ('NVSS J0000+3300', 0, 33, '/stage/m.fits', ?, NULL,"
        " 0.5, 1.76e9)",
        (DONE[4],),
    )
    count(DONE[4][:10], "photometry")
    return len(rows) + 1


@pytest.fixture
def history(settings):
    registry = Registry(settings.db_path)
    expect = fill(registry)
    yield settings, registry, expect
    registry.close()


def table_counts(registry: Registry) -> dict[str, int]:
    return {t: registry.query(f"SELECT COUNT(*) FROM {t}")[0][0] for t in EXPORT_TABLES}


def read_back(out: Path, table: str):
    con = duckdb.connect()
    try:
        glob = str(out / table / "**" / "*.parquet")
        total = con.execute(
            f"SELECT COUNT(*) FROM read_parquet('{glob}', hive_partitioning = true)"
        ).fetchone()[0]
        per_date = dict(
            con.execute(
                f"SELECT strftime(date, '%Y-%m-%d'), COUNT(*)"
                f" FROM read_parquet('{glob}', hive_partitioning = true) GROUP BY 1"
            ).fetchall()
        )
        kind = con.execute(
            f"SELECT typeof(date) FROM read_parquet('{glob}', hive_partitioning = true) LIMIT 1"
        ).fetchone()[0]
    finally:
        con.close()
    return total, per_date, kind


# --- light curves -------------------------------------------------------------------------


def test_light_curve_matches_inserted_measurements(history):
    settings, _registry, expect = history
    name = "NVSS J0123+3300"
    mjds, fluxes, errs = expect["sources"][name]
    points = light_curve(settings, name)
    assert len(points) == len(DONE) == 10
    assert all(isinstance(p, LightCurvePoint) for p in points)
    assert [p.mjd for p in points] == sorted(p.mjd for p in points)
    np.testing.assert_allclose([p.mjd for p in points], mjds, rtol=0, atol=1e-9)
    np.testing.assert_allclose([p.flux_jy for p in points], fluxes, rtol=1e-12)
    np.testing.assert_allclose([p.peak_flux_jy for p in points], fluxes * 1.01, rtol=1e-12)
    np.testing.assert_allclose([p.flux_err_jy for p in points], errs, rtol=1e-12)
    assert [p.group_id for p in points] == DONE
    assert [p.image_path for p in points] == [f"/stage/images/{g}-pbcor.fits" for g in DONE]
    # 2025-01-15T23:58:00 + 323 s is on the 16th; dates follow the epoch, not the group.
    assert points[2].date == "2025-01-16" and points[2].group_id == "2025-01-15T23:58:00"
    assert [p.date for p in points] == [mjd_date(m) for m in mjds]


def test_light_curve_engines_agree_and_undated_rows_come_last(history):
    settings, _registry, _expect = history
    name = "NVSS J0000+3300"
    by_sqlite = light_curve(settings.db_path, name)
    by_duckdb = light_curve(str(settings.db_path), name, engine="duckdb")
    assert by_sqlite == by_duckdb
    assert len(by_sqlite) == 11
    assert by_sqlite[-1].mjd is None and by_sqlite[-1].date is None
    assert by_sqlite[-1].flux_jy == 0.5 and by_sqlite[-1].image_path == "/stage/m.fits"


def test_light_curve_unknown_source_missing_registry_and_bad_engine(history, tmp_path):
    settings, _registry, _expect = history
    assert light_curve(settings, "no such source") == []
    with pytest.raises(FileNotFoundError, match="nowhere.sqlite3"):
        light_curve(tmp_path / "nowhere.sqlite3", "x")
    assert not (tmp_path / "nowhere.sqlite3").exists()  # read-only: never created
    with pytest.raises(ValueError, match="engine"):
        light_curve(settings, "NVSS J0000+3300", engine="pandas")  # type: ignore[arg-type]


# --- aggregations -------------------------------------------------------------------------


def test_variability_matches_numpy_and_finds_the_flaring_source(history):
    settings, _registry, expect = history
    stats = variability(settings, min_epochs=3)
    assert len(stats) == N_SOURCES
    assert stats[0].source_id == "NVSS J0007+3300"  # the only variable source
    assert stats[0].eta > 100 and stats[1].eta < 10
    by_name = {s.source_id: s for s in stats}
    for name in ("NVSS J0007+3300", "NVSS J0123+3300", "NVSS J0299+3300"):
        _mjds, f, err = expect["sources"][name]
        w = 1.0 / err**2
        n = len(f)
        eta = n / (n - 1) * (np.mean(w * f**2) - np.mean(w * f) ** 2 / np.mean(w))
        got = by_name[name]
        assert got.n_epochs == n == 10
        assert got.mean_flux_jy == pytest.approx(f.mean(), rel=1e-12)
        assert got.v == pytest.approx(f.std(ddof=1) / f.mean(), rel=1e-9)
        assert got.eta == pytest.approx(eta, rel=1e-9)
    # The undated row of source 0 has no error, so it is not used.
    assert by_name["NVSS J0000+3300"].n_epochs == 10
    # Steady sources scatter as chi-squared: eta averages ~1 (300 sources, sd ~0.03).
    steady = [s.eta for s in stats if s.source_id != "NVSS J0007+3300"]
    assert 0.85 < float(np.mean(steady)) < 1.15
    assert variability(settings, min_epochs=11) == []
    with pytest.raises(ValueError, match="min_epochs"):
        variability(settings, min_epochs=1)


def test_products_per_day_counts_every_table_by_utc_date(history):
    settings, _registry, expect = history
    days = products_per_day(settings)
    assert [d["date"] for d in days] == sorted(expect["per_day"])
    assert {d["date"]: {k: v for k, v in d.items() if k != "date"} for d in days} == expect[
        "per_day"
    ]
    first = days[0]
    assert first == {
        "date": "2025-01-15",
        "groups": 3,
        "ms": 3,  # the 23:58 group's MS (mid-point on the 16th) stays with its group
        "images": 6,
        "calibration_tables": 2,
        "mosaics": 1,
        "photometry": 2 * N_SOURCES,  # the 23:58 group's measurements are on the 16th
    }
    assert sum(d["photometry"] for d in days) == expect["photometry_rows"]


def test_pipeline_stats_keeps_old_keys_and_adds_products(history):
    settings, _registry, expect = history
    stats = pipeline_stats(settings)
    assert {
        "registry",
        "groups_by_state",
        "products",
        "registered_raw_bytes",
        "per_day",
        "bytes_per_tier",
    } <= set(stats)
    assert stats["groups_by_state"] == {"completed": 10, "failed": 1, "pending": 1}
    assert stats["products"] == {
        "subband_files": 0,
        "ms_index": 10,
        "images": 20,
        "calibration_tables": 4,
        "photometry": expect["photometry_rows"],
        "mosaics": 4,
    }
    assert stats["per_day"][0] == {"date": "2025-01-15", "groups": 3, "subband_files": 0, "ms": 3}
    assert stats["images_by_type"] == {"image": 10, "pbcor": 10}
    assert stats["calibration_tables_by_type"] == {"bandpass/valid": 1, "gain/valid": 3}
    assert stats["photometry_sources"] == N_SOURCES
    assert stats["stage_outcomes"] == {
        "calibrate": {"done": 9, "waiting": 1},
        "image": {"done": 8, "failed": 1},
    }
    assert stats["products_per_day"] == products_per_day(settings)


# --- Parquet export -----------------------------------------------------------------------


def test_export_round_trips_through_duckdb(history):
    settings, registry, expect = history
    report = export_parquet(settings)
    out = settings.archive_dir / "parquet"
    assert report.out_dir == out
    assert [t.table for t in report.tables] == list(EXPORT_TABLES)
    assert report.rows == table_counts(registry)
    for t in report.tables:
        assert t.path == out / t.table
        assert t.bytes == sum(p.stat().st_size for p in t.path.rglob("*.parquet")) > 0
        total, per_date, kind = read_back(out, t.table)
        assert total == t.rows
        assert kind == "DATE"
        assert sorted(per_date) == list(t.dates)
        assert all((t.path / f"date={d}").is_dir() for d in t.dates)
    photometry_days = {d: c["photometry"] for d, c in expect["per_day"].items() if c["photometry"]}
    assert read_back(out, "photometry")[1] == photometry_days
    assert read_back(out, "mosaics")[1] == {
        "2025-01-15": 1,
        "2025-01-16": 1,
        "2025-01-17": 1,
        "2025-01-18": 1,
    }
    assert not [p for p in out.iterdir() if p.name.startswith(".")]
    # Values survive: the light curve from Parquet equals the registry's.
    name = "NVSS J0123+3300"
    glob = str(out / "photometry" / "**" / "*.parquet")
    con = duckdb.connect()
    rows = con.execute(
        f"SELECT mjd, flux_jy, group_id FROM read_parquet('{glob}', hive_partitioning = true)"
        " WHERE source_id = ? ORDER BY mjd",
        [name],
    ).fetchall()
    con.close()
    assert rows == [(p.mjd, p.flux_jy, p.group_id) for p in light_curve(settings, name)]
    codecs = {
        c[0]
        for c in duckdb.sql(
            f"SELECT DISTINCT compression FROM parquet_metadata('{glob}')"
        ).fetchall()
    }
    assert codecs == {"ZSTD"}


def test_reexport_replaces_the_previous_export(history):
    settings, registry, _expect = history
    first = export_parquet(settings, tables=("photometry", "stage_status"))
    out = first.out_dir
    assert "2025-01-15" in first.tables[0].dates
    with registry.transaction():
        registry.execute("DELETE FROM photometry WHERE mjd < ?", (to_mjd("2025-01-16T00:00:00"),))
        registry.execute(
            "INSERT INTO stage_status(group_id, stage, status, updated_at)"
            " VALUES (?, 'mosaic', 'done', 1.76e9)",
            (DONE[0],),
        )
    remaining = registry.query("SELECT COUNT(*) FROM photometry")[0][0]
    assert remaining == first.tables[0].rows - 2 * N_SOURCES
    again = export_parquet(settings, tables=("photometry", "stage_status"))
    assert again.rows == {"photometry": remaining, "stage_status": first.rows["stage_status"] + 1}
    assert "2025-01-15" not in again.tables[0].dates
    assert not (out / "photometry" / "date=2025-01-15").exists()  # old partition gone
    assert read_back(out, "photometry")[0] == remaining
    assert sorted(p.name for p in out.iterdir()) == ["photometry", "stage_status"]


def test_failed_export_leaves_the_previous_one_intact(history):
    settings, registry, _expect = history
    first = export_parquet(settings, tables=("photometry",))
    before = sorted(p.relative_to(first.out_dir) for p in first.out_dir.rglob("*"))
    # SQLite accepts text in a REAL column; DuckDB's scanner refuses it mid-scan.
    registry.execute(
        "INSERT INTO photometry(source_id, ra_deg, dec_deg, image_path, mjd, flux_jy,"
        " created_at) VALUES ('bad', 0, 0, '/x.fits', 60700.5, 'garbage', 1.76e9)"
    )
    with pytest.raises(ExportError, match="photometry"):
        export_parquet(settings, tables=("photometry",))
    assert sorted(p.relative_to(first.out_dir) for p in first.out_dir.rglob("*")) == before
    assert read_back(first.out_dir, "photometry")[0] == first.rows["photometry"]
    with pytest.raises(ExportError, match="no_such_table"):
        export_parquet(settings, tables=("images", "no_such_table"))


def test_interrupted_export_leftovers_are_removed(history, tmp_path):
    settings, _registry, _expect = history
    out = tmp_path / "exports"
    stale = out / ".images.tmp-999-deadbeef" / "date=2025-01-15"
    stale.mkdir(parents=True)
    (stale / "data_0.parquet").write_bytes(b"half written")
    report = export_parquet(settings, tables=("images",), out_dir=out)
    assert report.rows == {"images": 20}
    assert sorted(p.name for p in out.iterdir()) == ["images"]


def test_empty_registry_exports_cleanly(settings):
    Registry(settings.db_path).close()
    report = export_parquet(settings)
    assert report.rows == dict.fromkeys(EXPORT_TABLES, 0)
    assert report.bytes == dict.fromkeys(EXPORT_TABLES, 0)
    for t in report.tables:
        assert t.path.is_dir() and list(t.path.iterdir()) == [] and t.dates == ()
    assert products_per_day(settings) == []
    assert variability(settings) == []
    stats = pipeline_stats(settings)
    assert stats["stage_outcomes"] == {} and stats["photometry_sources"] == 0
    assert Counter(stats["products"].values()) == Counter({0: 6})
