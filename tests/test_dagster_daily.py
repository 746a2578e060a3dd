"""Daily products through Dagster: a three-day backfill, re-runs, bad images, the sensor.

Each day has three consecutive 5-minute snapshot images along one declination strip (written
with the mosaics package's simulated-image writer and registered as the imaging stage would),
a survey catalog holding their sources, and per-group photometry; one source brightens on the
third day.
"""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import dagster as dg
import numpy as np
import pytest
from helpers import tier_folders

from dsa110_assets.catalogs.survey import ingest_survey
from dsa110_assets.definitions import build_definitions
from dsa110_assets.mosaics.simulated_images import write_simulated_image
from dsa110_assets.processing.photometry_step import measure_and_register
from dsa110_assets.registry import Registry, StageOutcome, record_stage
from resources.pipeline import PipelineResource

pytestmark = pytest.mark.filterwarnings("ignore::astropy.wcs.FITSFixedWarning")

DAYS = ("2026-01-14", "2026-01-15", "2026-01-16")
DEC = 30.0
RA0 = 200.0
STEP_DEG = 1.25  # the sky drifts this far in a 5-minute group
NOISE = 0.002
VARIABLE = "SRC_VAR"


def _sources() -> list[tuple[str, float, float, float]]:
    rng = np.random.default_rng(5)
    out = [(VARIABLE, RA0 + STEP_DEG, DEC + 0.2, 0.5)]
    for k in range(12):
        out.append(
            (
                f"SRC_{k:02d}",
                RA0 + rng.uniform(-0.5, 3.0),
                DEC + rng.uniform(-0.8, 0.8),
                float(rng.uniform(0.1, 0.8)),
            )
        )
    return out


def _write_catalog(path: Path, sources) -> Path:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["NVSS", "RAJ2000", "DEJ2000", "S1.4", "e_S1.4"])
        for name, ra, dec, flux in sources:
            w.writerow([name, f"{ra:.6f}", f"{dec:.6f}", f"{flux * 1e3:.3f}", "0.5"])
    return path


def _register_group(
    registry: Registry, group_id: str, image: Path, mjd: float, ra_deg: float
) -> None:
    now = time.time()
    with registry.transaction():
        registry.execute(
            "INSERT INTO processing_queue(group_id, state, received_at, last_update,"
            " expected_subbands) VALUES (?, 'completed', ?, ?, 16)",
            (group_id, now, now),
        )
        ms = f"/nonexistent/{group_id}.ms"
        registry.execute(
            "INSERT INTO ms_index(path, group_id, start_mjd, end_mjd, mid_mjd, status,"
            " created_at) VALUES (?, ?, ?, ?, ?, 'converted', ?)",
            (ms, group_id, mjd - 0.0018, mjd + 0.0018, mjd, now),
        )
        registry.execute(
            "INSERT INTO images(path, ms_path, group_id, image_type, noise_jy, center_ra_deg,"
            " center_dec_deg, created_at) VALUES (?, ?, ?, 'image', ?, ?, ?, ?)",
            (str(image), ms, group_id, NOISE, ra_deg, DEC, now),
        )
    record_stage(registry, group_id, "image", StageOutcome.DONE, image.name)


@pytest.fixture(scope="module")
def landed_days(tmp_path_factory):
    root = tmp_path_factory.mktemp("daily")
    pipeline = PipelineResource(**tier_folders(root))
    settings = pipeline.settings()
    catalogs = settings.state_dir / "catalogs"
    sources = _sources()
    ingest_survey("nvss", _write_catalog(root / "nvss.csv", sources), catalogs)
    images_dir = settings.products_dir / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    with Registry(settings.db_path) as registry:
        for d, day in enumerate(DAYS):
            for g in range(3):
                group_id = f"{day}T10:{5 * g:02d}:00"
                mjd = 40587.0 + (
                    np.datetime64(group_id) - np.datetime64("1970-01-01T00:00:00")
                ) / np.timedelta64(1, "D")
                fluxes = [
                    (ra, dec, flux * (3.0 if name == VARIABLE and d == 2 else 1.0))
                    for name, ra, dec, flux in sources
                ]
                image, pb = write_simulated_image(
                    images_dir / f"{group_id}-meridian_icrs_t12-image.fits",
                    ra_deg=RA0 + STEP_DEG * g,
                    dec_deg=DEC,
                    size=256,
                    cell_arcsec=30.0,
                    sources=fluxes,
                    noise_jy=NOISE,
                    beam_arcsec=60.0,
                    seed=100 * d + g,
                    pb_path=images_dir / f"{group_id}-meridian_icrs_t12-pb.fits",
                    date_obs=group_id,
                )
                _register_group(registry, group_id, image, float(mjd), RA0 + STEP_DEG * g)
                measure_and_register(
                    registry,
                    catalogs,
                    image,
                    settings.products_dir / "photometry" / f"{group_id}.csv",
                    pb_fits=pb,
                    group_id=group_id,
                    mjd=float(mjd),
                )
    return pipeline, sources


def _run_day(defs: dg.Definitions, instance, day: str):
    job = defs.resolve_job_def("daily_products")
    return job.execute_in_process(partition_key=day, instance=instance)


def test_three_day_backfill_makes_one_set_of_products_per_day(landed_days) -> None:
    pipeline, sources = landed_days
    settings = pipeline.settings()
    defs = build_definitions(pipeline)
    with dg.instance_for_test() as instance:
        runs = [_run_day(defs, instance, day) for day in DAYS]  # what a backfill launches
        assert all(r.success for r in runs)
        for day, run in zip(DAYS, runs, strict=True):
            keys = {
                (e.asset_key.to_user_string(), e.partition)
                for e in run.get_asset_materialization_events()
            }
            assert keys == {
                ("daily_mosaic", day),
                ("mosaic_photometry", day),
                ("light_curves", day),
            }
        with Registry(settings.db_path) as registry:
            rows = registry.query("SELECT date, n_images, effective_noise_jy, path FROM mosaics")
            assert sorted(r["date"] for r in rows) == list(DAYS)
            assert all(r["n_images"] == 3 and r["effective_noise_jy"] > 0 for r in rows)
            mosaic_rows = registry.execute(
                "SELECT COUNT(*) FROM photometry WHERE group_id IS NULL"
            ).fetchone()[0]
            assert mosaic_rows >= 3 * 8  # most catalog sources, on each day's mosaic
        for day in DAYS:  # RA 200-202.5 deg: all in the 13h tile
            assert (settings.products_dir / "mosaics" / f"{day}_ra13h.fits").is_file()
            assert (settings.products_dir / "mosaics" / f"{day}_ra13h-weights.fits").is_file()

        # Re-running a day replaces its products and rows; nothing is duplicated.
        mosaic = settings.products_dir / "mosaics" / f"{DAYS[0]}_ra13h.fits"
        first = mosaic.stat().st_mtime_ns
        assert _run_day(defs, instance, DAYS[0]).success
        assert mosaic.stat().st_mtime_ns > first
        with Registry(settings.db_path) as registry:
            assert registry.execute("SELECT COUNT(*) FROM mosaics").fetchone()[0] == 3


def test_mosaic_fluxes_and_variability(landed_days) -> None:
    """Steady sources in the mosaic at their catalog flux; the brightening one is flagged."""
    pipeline, sources = landed_days
    settings = pipeline.settings()
    with (settings.products_dir / "photometry" / f"{DAYS[0]}-mosaic.csv").open() as fh:
        measured = {r["source_id"]: r for r in csv.DictReader(fh) if not r["skip_reason"]}
    bright = [s for s in sources if s[3] / NOISE > 50 and s[0] in measured]
    assert len(bright) >= 3
    for name, _, _, flux in bright:
        assert float(measured[name]["flux_jy"]) == pytest.approx(flux, rel=0.05), name
    with (settings.products_dir / "lightcurves" / f"{DAYS[2]}.csv").open() as fh:
        table = {r["source_id"]: r for r in csv.DictReader(fh)}
    assert table[VARIABLE]["candidate"] == "1"
    steady = [name for name, *_ in sources if name != VARIABLE and name in table]
    assert steady and all(table[n]["candidate"] == "0" for n in steady)


def test_a_missing_or_corrupt_image_is_skipped_with_its_reason(landed_days) -> None:
    pipeline, _ = landed_days
    settings = pipeline.settings()
    images = sorted((settings.products_dir / "images").glob(f"{DAYS[1]}*-image.fits"))
    images[0].write_bytes(b"not a FITS file")
    images[1].unlink()
    defs = build_definitions(pipeline)
    with dg.instance_for_test() as instance:
        assert _run_day(defs, instance, DAYS[1]).success
    with Registry(settings.db_path) as registry:
        row = registry.execute(
            "SELECT n_images, images FROM mosaics WHERE date = ?", (DAYS[1],)
        ).fetchone()
    listed = json.loads(row["images"])
    assert row["n_images"] == 1
    assert set(listed["skipped"]) == {str(images[0]), str(images[1])}
    assert all(reason for reason in listed["skipped"].values())


def test_the_daily_sensor_requests_complete_days_once(landed_days, tmp_path) -> None:
    pipeline, _ = landed_days
    defs = build_definitions(pipeline)
    sensor = defs.resolve_sensor_def("daily_sensor")
    with dg.instance_for_test() as instance:
        context = dg.build_sensor_context(
            instance=instance, definitions=defs, resources={"pipeline": pipeline}
        )
        result = sensor(context)
        requests = result.run_requests
        keys = sorted((r.partition_key, r.run_key) for r in requests)
        assert [k for k, _ in keys] == list(DAYS)
        assert all(run_key.startswith(f"{day}:") for day, run_key in keys)

        # The cursor holds what was requested: the next tick requests nothing new.
        context.update_cursor(result.cursor)
        again = sensor(context)
        assert not again.run_requests and again.skip_reason
        assert again.cursor == result.cursor

    # A day with a group still converting is not complete.
    with Registry(pipeline.settings().db_path) as registry:
        now = time.time()
        registry.execute(
            "INSERT INTO processing_queue(group_id, state, received_at, last_update)"
            " VALUES ('2026-01-16T23:55:00', 'pending', ?, ?)",
            (now, now),
        )
    with dg.instance_for_test() as instance:
        context = dg.build_sensor_context(
            instance=instance, definitions=defs, resources={"pipeline": pipeline}
        )
        result = sensor(context)
    requests = result.run_requests
    assert sorted(r.partition_key for r in requests) == list(DAYS[:2])


def test_cli_lightcurve_export_and_mosaic_on_demand(landed_days, monkeypatch, capsys) -> None:
    from helpers import tier_env

    from dsa110_assets.cli import main

    pipeline, _ = landed_days
    settings = pipeline.settings()
    root = settings.state_dir.parent
    for name, value in tier_env(root).items():
        monkeypatch.setenv(name, value)

    assert main(["query", "lightcurve", VARIABLE, "--json"]) == 0
    points = json.loads(capsys.readouterr().out)
    per_group = [p for p in points if p["group_id"]]
    assert [p["mjd"] for p in points] == sorted(p["mjd"] for p in points)
    by_day = {p["date"]: p["flux_jy"] for p in per_group}
    assert set(by_day) == set(DAYS)
    assert by_day[DAYS[2]] == pytest.approx(3 * by_day[DAYS[0]], rel=0.05)  # it brightened
    assert main(["query", "lightcurve", "NO_SUCH_SOURCE"]) == 1

    assert main(["db", "export", "--json"]) == 0
    tables = json.loads(capsys.readouterr().out)
    assert tables["photometry"]["rows"] > 0
    assert (settings.archive_dir / "parquet" / "photometry").is_dir()

    assert (
        main(["mosaic", "create", "--start", f"{DAYS[0]}T00:00:00", "--end", f"{DAYS[2]}T00:00:00"])
        == 0
    )
    out = capsys.readouterr().out
    assert "6 images" in out or "images (" in out
    made = settings.products_dir / "mosaics" / f"{DAYS[0]}T00:00:00_{DAYS[2]}T00:00:00.fits"
    assert made.is_file()

    # `dsa110 backfill` submits a Dagster backfill (tests/test_backfill.py), which needs
    # DAGSTER_HOME and a daemon; without one it refuses. The days are re-run here as the
    # daemon runs them, one daily_products run per day.
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    assert main(["backfill", "--start", DAYS[0], "--end", DAYS[2]]) == 1
    assert "DAGSTER_HOME is not set" in capsys.readouterr().err
    from dsa110_assets.definitions import defs

    job = defs.resolve_job_def("daily_products")
    with dg.DagsterInstance.ephemeral() as instance:
        results = [job.execute_in_process(partition_key=d, instance=instance) for d in DAYS]
    assert [r.success for r in results] == [True] * len(DAYS)
    with Registry(settings.db_path) as registry:
        dated = registry.execute("SELECT COUNT(*) FROM mosaics WHERE date IS NOT NULL").fetchone()
    assert dated[0] == 3  # the backfill replaced each day's mosaic row, never added one


def test_a_day_whose_image_is_made_again_gets_a_new_run_key(landed_days) -> None:
    """Request a re-imaged day again: the run key carries the images' version.

    A quick look replaced by its calibrated image (the calibration sensor re-runs the image
    stage) must request the day's mosaic again.
    """
    from dsa110_assets.processing.daily_step import day_status

    pipeline, _ = landed_days
    with Registry(pipeline.settings().db_path) as registry:
        before = day_status(registry, DAYS[0])
        (group_id,) = registry.execute(
            "SELECT MIN(group_id) FROM stage_status WHERE stage = 'image' AND status = 'done'"
            " AND group_id >= ?",
            (DAYS[0],),
        ).fetchone()
        assert group_id.startswith(DAYS[0])
        assert day_status(registry, DAYS[0]).version == before.version  # stable
        bump = (
            "UPDATE stage_status SET updated_at = updated_at + ?"
            " WHERE group_id = ? AND stage = 'image'"
        )
        registry.execute(bump, (1.0, group_id))
        try:
            after = day_status(registry, DAYS[0])
            assert after.images == before.images and after.version != before.version
        finally:
            registry.execute(bump, (-1.0, group_id))


def test_the_daily_sensor_cursor_requests_a_re_imaged_day_again(landed_days) -> None:
    """The cursor remembers each day's state: only the re-imaged day is requested again."""
    pipeline, _ = landed_days
    defs = build_definitions(pipeline)
    sensor = defs.resolve_sensor_def("daily_sensor")
    bump = (
        "UPDATE stage_status SET updated_at = updated_at + ?"
        " WHERE group_id = (SELECT MIN(group_id) FROM stage_status"
        "  WHERE stage = 'image' AND status = 'done' AND group_id >= ?) AND stage = 'image'"
    )
    with dg.instance_for_test() as instance:
        context = dg.build_sensor_context(
            instance=instance, definitions=defs, resources={"pipeline": pipeline}
        )
        first = sensor(context)
        context.update_cursor(first.cursor)
        with Registry(pipeline.settings().db_path) as registry:
            registry.execute(bump, (1.0, DAYS[0]))
        try:
            second = sensor(context)
        finally:
            with Registry(pipeline.settings().db_path) as registry:
                registry.execute(bump, (-1.0, DAYS[0]))
    (request,) = second.run_requests
    assert request.partition_key == DAYS[0]
    assert request.run_key not in {r.run_key for r in first.run_requests}
    assert json.loads(second.cursor)[DAYS[0]] == request.run_key.split(":", 1)[1]
    assert {d: s for d, s in json.loads(second.cursor).items() if d != DAYS[0]} == {
        d: s for d, s in json.loads(first.cursor).items() if d != DAYS[0]
    }
