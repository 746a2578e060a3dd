"""End to end through Dagster: sensor, convert, solve, apply, image, thumbnail and checks.

Two small simulated observations with gain and bandpass corruptions and thermal noise; the
first is centred on 3C286's transit (a calibrator group), the second, starting 2.6 minutes
after the transit, still sees 3C286 at beam response 0.89, so it is a calibrator group too
(issue 9): it is solved, and calibrated with its own gains and the first one's bandpass (the
higher response), rebased onto its gains.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import dagster as dg
import numpy as np
import pytest
from astropy.io import fits
from casacore import tables as pt
from helpers import land_observations

from dsa110_assets.catalogs.survey import ingest_survey
from dsa110_assets.definitions import build_definitions
from dsa110_assets.imaging.image_stats import find_peak, image_statistics
from dsa110_assets.imaging.primary_beam import primary_beam_at
from dsa110_assets.registry import Registry, get_stage
from resources.pipeline import PipelineResource
from resources.wsclean import WSCleanResource

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore::astropy.wcs.FITSFixedWarning"),
    pytest.mark.skipif(shutil.which("wsclean") is None, reason="wsclean is not installed"),
]

SIM = dict(
    n_antennas=32,
    n_channels=4,
    seed=11,
    calibrator="3C286",
    n_background_sources=30,
    noise=True,
    corruptions=True,
)


#: Smaller images than production (2.4 deg instead of the whole primary beam) keep it quick.
WSCLEAN = WSCleanResource(max_size=2048, threads=2)


def _tick(defs: dg.Definitions, instance, pipeline: PipelineResource) -> list[str]:
    sensor = defs.resolve_sensor_def("incoming_sensor")
    result = sensor(
        dg.build_sensor_context(
            instance=instance, definitions=defs, resources={"pipeline": pipeline}
        )
    )
    keys = sorted(r.partition_key for r in result.run_requests)
    instance.add_dynamic_partitions("group_id", keys)
    return keys


def _run(defs: dg.Definitions, instance, group_id: str, **kwargs):
    job = defs.resolve_job_def("process_group")
    return job.execute_in_process(partition_key=group_id, instance=instance, **kwargs)


def _checks(run) -> dict[str, bool]:
    return {e.check_name: e.passed for e in run.get_asset_check_evaluations()}


def _check_metadata(run, name: str) -> dict[str, object]:
    (evaluation,) = [e for e in run.get_asset_check_evaluations() if e.check_name == name]
    return {k: v.value for k, v in evaluation.metadata.items()}


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e-cal")
    landed, sim = land_observations(root, **SIM)
    pipeline = PipelineResource(**landed.model_dump())
    # The field's sky model for calibration comes from the survey catalogs: the simulated sky
    # is loaded exactly as NVSS would be.
    ingest_survey("nvss", sim.nvss_catalog_path, pipeline.settings().state_dir / "catalogs")
    defs = build_definitions(pipeline, WSCLEAN)
    with dg.instance_for_test() as instance:
        keys = _tick(defs, instance, pipeline)
        runs = {key: _run(defs, instance, key) for key in keys}
        yield pipeline, sim, keys, runs, defs, instance


def test_every_stage_and_check_succeeds(pipeline_run) -> None:
    pipeline, sim, keys, runs, _, _ = pipeline_run
    assert len(keys) == 2
    for key, run in runs.items():
        assert run.success, key
        materialized = {
            e.asset_key.to_user_string() for e in run.get_asset_materialization_events()
        }
        assert materialized == {
            "subband_group",
            "measurement_set",
            "flagged_ms",
            "calibration_tables",
            "calibrated_ms",
            "image",
            "thumbnail",
            "group_photometry",
        }
        photometry = {
            e.asset_key.to_user_string(): e.materialization.metadata
            for e in run.get_asset_materialization_events()
        }["group_photometry"]
        assert photometry["catalog"].value == "nvss" and photometry["measured"].value >= 1
        checks = _checks(run)
        assert set(checks) == {
            "ms_rows_and_windows",
            "flagged_fraction_acceptable",
            "image_is_finite_and_nonzero",
            "noise_near_radiometer",
            "calibrator_recovered",
        }
        # 3C286 (15 Jy) in every field limits these snapshots by dynamic range, not thermal
        # noise (see the noise check's description); every other check must pass.
        # The second group sees 3C286 on the beam's flank, where WSClean (no time-variable
        # beam) cannot clean it fully: its flux is recovered to 12%, not the check's 5%
        # (see test_injected_sources_at_catalog_positions_and_fluxes).
        flank = key == keys[1]
        assert all(
            v
            for k, v in checks.items()
            if k != "noise_near_radiometer" and not (flank and k == "calibrator_recovered")
        ), (key, checks)
        if flank:
            recovered = _check_metadata(run, "calibrator_recovered")
            assert recovered["calibrator"] == "3C286" and recovered["flux_error"] <= 0.12
        noise = _check_metadata(run, "noise_near_radiometer")
        assert noise["expected_noise_mjy"] > 0 and noise["residual_noise_mjy"] > 0


def test_registry_tells_the_story(pipeline_run) -> None:
    pipeline, sim, (cal_group, target), runs, _, _ = pipeline_run
    for run in runs.values():
        (image,) = [
            e.materialization.metadata
            for e in run.get_asset_materialization_events()
            if e.asset_key.to_user_string() == "image"
        ]
        assert "a calibrator's own group" in image["selfcal_rounds"].value
    settings = pipeline.settings()
    with Registry(settings.db_path) as registry:
        queue = {
            r["group_id"]: r
            for r in registry.query(
                "SELECT group_id, has_calibrator, calibrators FROM processing_queue"
            )
        }
        assert queue[cal_group]["has_calibrator"] == 1
        assert json.loads(queue[cal_group]["calibrators"])[0]["name"] == "3C286"
        listed = json.loads(queue[target]["calibrators"])
        assert queue[target]["has_calibrator"] == 1 and listed[0]["name"] == "3C286"
        assert not listed[0]["in_window"] and 0.85 < listed[0]["beam_response"] < 0.95
        tables = registry.query(
            "SELECT path, table_type, status, valid_start_mjd, valid_end_mjd, refant,"
            " group_id, beam_response FROM calibration_tables ORDER BY table_type, group_id"
        )
        assert [(t["table_type"], t["group_id"], t["status"]) for t in tables] == [
            ("bandpass", cal_group, "valid"),
            ("bandpass", target, "valid"),
            ("gain", cal_group, "valid"),
            ("gain", target, "valid"),
        ]
        assert tables[0]["beam_response"] > 0.99 > tables[1]["beam_response"]
        assert all(Path(t["path"]).parent == settings.products_dir / "caltables" for t in tables)
        applied = {
            r["group_id"]: r
            for r in registry.query("SELECT group_id, bandpass_table, gain_table FROM ms_index")
        }
        # the target: its own gains, the calibrator group's (better) bandpass, rebased
        assert Path(applied[target]["gain_table"]) == Path(tables[3]["path"])
        assert Path(applied[target]["bandpass_table"]).parent.name == "rebased"
        assert Path(applied[target]["bandpass_table"]).name.startswith(Path(tables[0]["path"]).stem)
        assert applied[cal_group]["bandpass_table"] == tables[0]["path"]
        spans = {t["table_type"]: (t["valid_end_mjd"] - t["valid_start_mjd"]) * 24 for t in tables}
        # gains reach +/-12 h (gain_window_h): one transit calibrates the pointing's day
        assert spans == pytest.approx({"bandpass": 24.0, "gain": 24.0})
        ms_rows = registry.query(
            "SELECT group_id, cal_applied, cal_status, cal_method, cal_age_h FROM ms_index"
        )
        assert {
            r["group_id"]: (r["cal_applied"], r["cal_status"], r["cal_method"]) for r in ms_rows
        } == {
            cal_group: (1, "applied", "calibrator"),
            target: (1, "applied", "calibrator"),
        }
        assert all(r["cal_age_h"] == pytest.approx(0.0, abs=0.05) for r in ms_rows)
        images = registry.query(
            "SELECT group_id, image_type, path, thumbnail_path, noise_jy, beam_major_arcsec"
            " FROM images ORDER BY group_id, image_type"
        )
        by_group: dict[str, set[str]] = {}
        for r in images:
            by_group.setdefault(r["group_id"], set()).add(r["image_type"])
            assert Path(r["path"]).is_file()
        assert by_group[cal_group] == {"image", "residual", "model", "psf", "pb", "pbcor"}
        main = {r["group_id"]: r for r in images if r["image_type"] == "image"}
        assert "-3C286_t" in Path(main[cal_group]["path"]).name
        assert Path(main[cal_group]["path"]).name.startswith(f"{cal_group}-")
        for row in main.values():
            png = Path(row["thumbnail_path"])
            assert png.parent == settings.products_dir / "thumbnails"
            assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            assert row["noise_jy"] > 0 and row["beam_major_arcsec"] > 0
        assert get_stage(registry, target, "apply").status.value == "done"
        # Both groups are calibrated by a calibrator solution made on their own data, so
        # neither self-calibrates (SelfcalPolicy.on_calibrator_groups is off): one image each.
        assert not registry.query("SELECT group_id FROM selfcal_rounds")
        assert {r["selfcal_applied"] for r in registry.query("SELECT * FROM images")} == {0}
        registered = {Path(r["path"]).name for r in images}
        on_disk = {
            p.name
            for p in (settings.products_dir / "images").glob("*.fits")
            if not p.name.endswith("-dirty.fits")  # WSClean's dirty image is not registered
        }
        assert on_disk == registered


def _inside(image: Path, ra: float, dec: float, margin: int = 20) -> bool:
    from astropy.io import fits
    from astropy.wcs import WCS

    with fits.open(image) as hdul:
        header = hdul[0].header
    x, y = WCS(header).celestial.world_to_pixel_values(ra, dec)
    return margin <= x < header["NAXIS1"] - margin and margin <= y < header["NAXIS2"] - margin


def _image_tolerance(name: str, which: int, pb: float) -> float:
    """Return the flux tolerance for a source, by field and primary beam.

    5% for the calibrator on its own field; 8% for the other sources there with beam >= 0.7
    (measured up to 5.7%: the residual sidelobes of 3C286 and the 2.5 Jy field source after a
    bounded clean; the visibilities themselves hold every source to 0.1%, see
    ``test_fourier_check.py``); 12% elsewhere, on the beam's flank (0.89x measured at beam
    0.54) and on the target field (the limits in the test's docstring).
    """
    if which == 0 and name == "3C286" and pb >= 0.5:
        return 0.05
    return 0.08 if which == 0 and pb >= 0.7 else 0.12


@pytest.mark.parametrize("which", [0, 1], ids=["calibrator-group", "target-group"])
def test_injected_sources_at_catalog_positions_and_fluxes(pipeline_run, which: int) -> None:
    """Check source positions and fluxes in the calibrated images.

    Calibrated images: sources with SNR > 20 (the field pattern puts them in all four
    quadrants) within one pixel of their catalog position and, on the calibrator's field,
    within 5% of their catalog flux after the primary beam where the beam is >= 0.5 (each
    tolerance widened in quadrature by 4 sigma of the image noise).

    12% elsewhere, for two known limits: further out the drift moves a source along the
    beam's steep flank, where the channel-averaged analytic beam misses the weighting WSClean
    gives each channel; and five minutes after transit 3C286 (15 Jy) sits on that flank,
    where its brightness changes during the snapshot, so WSClean (without a time-variable
    beam) cannot clean it fully and the target image is dynamic-range limited.
    """
    pipeline, sim, keys, _, _, _ = pipeline_run
    with Registry(pipeline.settings().db_path) as registry:
        row = registry.execute(
            "SELECT path, ms_path, cell_arcsec FROM images"
            " WHERE group_id = ? AND image_type = 'image'",
            (keys[which],),
        ).fetchone()
    image, ms_path, cell = Path(row["path"]), Path(row["ms_path"]), row["cell_arcsec"]
    noise = image_statistics(image).noise_jy
    with pt.table(f"{ms_path}/SPECTRAL_WINDOW", ack=False) as spw:
        freqs = spw.getcol("CHAN_FREQ").ravel()
    with sim.catalog_path.open() as fh:
        sources = list(csv.DictReader(fh))
    checked = {}
    for src in sources:
        ra, dec = float(src["ra_deg"]), float(src["dec_deg"])
        pb = primary_beam_at(ms_path, ra, dec)
        spectrum = float(src["flux_1400_jy"]) * (freqs / 1.4e9) ** float(src["spectral_index"])
        expected = float(np.mean(spectrum))
        if pb < 0.3 or expected * pb < 20 * noise or not _inside(image, ra, dec):
            continue
        _, _, peak, offset = find_peak(image, ra, dec, 5 * cell)
        assert offset <= cell, (src["name"], offset, cell)
        # plus 4 sigma of the image noise in quadrature: at S/N 20 one sigma is already 5%
        snr = expected * pb / noise
        tolerance = np.hypot(_image_tolerance(src["name"], which, pb), 4 / snr)
        assert peak / pb == pytest.approx(expected, rel=tolerance), (src["name"], pb)
        checked[src["name"]] = round(pb, 2)
    assert len(checked) >= 2, f"too few bright sources in the beam: {checked}"
    assert sum(name.startswith(f"FLD{which}_") for name in checked) >= 4, checked
    assert max(checked.values()) >= 0.5, checked


def test_a_corrupt_table_is_never_applied(pipeline_run) -> None:
    """Field-model calibration off, so the target has nothing left but a quick look."""
    pipeline, sim, (cal_group, target), _, _, instance = pipeline_run
    settings = pipeline.settings()
    with Registry(settings.db_path) as registry:
        gains = [
            Path(r[0])
            for r in registry.query("SELECT path FROM calibration_tables WHERE table_type = 'gain'")
        ]
    assert len(gains) == 2  # both groups are calibrator groups: spoil both
    for gain in gains:
        for data_file in gain.glob("table.f*"):
            data_file.write_bytes(b"garbage")
    defs = build_definitions(_no_field_model(pipeline), WSCLEAN)
    run = _run(
        defs,
        instance,
        target,
        asset_selection=[dg.AssetKey("calibrated_ms")],
    )
    assert run.success
    meta = {
        e.asset_key.to_user_string(): e.materialization.metadata
        for e in run.get_asset_materialization_events()
    }["calibrated_ms"]
    assert meta["cal_status"].value == "uncalibrated"
    assert meta["cal_method"].value == "uncalibrated"
    with Registry(settings.db_path) as registry:
        status = dict(registry.query("SELECT table_type, status FROM calibration_tables"))
        assert status["gain"] == "invalid"
        ms = registry.execute(
            "SELECT path, cal_applied, cal_status FROM ms_index WHERE group_id = ?", (target,)
        ).fetchone()
    assert (ms["cal_applied"], ms["cal_status"]) == (0, "uncalibrated")
    with pt.table(ms["path"], ack=False) as t:
        assert np.array_equal(t.getcol("CORRECTED_DATA", 0, 500), t.getcol("DATA", 0, 500))


def _no_field_model(pipeline: PipelineResource) -> PipelineResource:
    return PipelineResource(**{**pipeline.model_dump(), "field_model_calibration": False})


def test_all_flagged_calibrator_fails_clearly_and_writes_no_table(tmp_path: Path) -> None:
    landed, _ = land_observations(tmp_path, n_groups=1, **{**SIM, "n_antennas": 12})
    pipeline = PipelineResource(**{k: v for k, v in landed.model_dump().items() if v is not None})
    settings = pipeline.settings()
    defs = build_definitions(pipeline)
    with dg.instance_for_test() as instance:
        (key,) = _tick(defs, instance, pipeline)
        converted = _run(
            defs,
            instance,
            key,
            asset_selection=[dg.AssetKey("subband_group"), dg.AssetKey("measurement_set")],
        )
        assert converted.success
        ms_path = settings.output_dir / f"{key}.ms"
        with pt.table(str(ms_path), readonly=False, ack=False) as t:
            t.putcol("FLAG", np.ones_like(t.getcol("FLAG")))
        failed = _run(
            defs,
            instance,
            key,
            asset_selection=[dg.AssetKey("calibration_tables")],
            raise_on_error=False,
        )
    assert not failed.success
    with Registry(settings.db_path) as registry:
        stage = get_stage(registry, key, "calibrate")
        assert stage is not None and stage.status.value == "failed"
        assert stage.error == "CalibrationError" and "flag" in stage.detail.lower()
        assert registry.query("SELECT * FROM calibration_tables") == []
    caltables = settings.products_dir / "caltables"
    assert not caltables.exists() or not any(caltables.iterdir())


def test_a_target_without_valid_calibration_is_a_quick_look_then_recalibrated(
    pipeline_run,
) -> None:
    """Check the uncalibrated quick look and its replacement once a solve exists.

    Runs after the corrupt-table test: no valid gain is left. The target is imaged at once
    (no retry, no wait) as a quick look, marked uncalibrated in the registry, the metadata
    and the FITS header. When the calibrator group is solved again, the calibration sensor
    requests the target's calibrated products, which replace the quick look: same files,
    rows updated (not duplicated), both materializations in the instance.
    """
    pipeline, sim, (cal_group, target), _, _, instance = pipeline_run
    settings = pipeline.settings()
    defs = build_definitions(_no_field_model(pipeline), WSCLEAN)
    quick = _run(
        defs, instance, target, asset_selection=[dg.AssetKey("calibrated_ms"), dg.AssetKey("image")]
    )
    assert quick.success
    assert not [e for e in quick.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    meta = {
        e.asset_key.to_user_string(): {k: v.value for k, v in e.materialization.metadata.items()}
        for e in quick.get_asset_materialization_events()
    }
    assert meta["calibrated_ms"]["cal_method"] == "uncalibrated"
    assert meta["image"]["calibrated"] is False
    with Registry(settings.db_path) as registry:
        stage = get_stage(registry, target, "apply")
        row = registry.execute(
            "SELECT m.cal_status, m.cal_method, i.path FROM ms_index m JOIN images i"
            " ON i.ms_path = m.path AND i.image_type = 'image' WHERE m.group_id = ?",
            (target,),
        ).fetchone()
        n_images = registry.execute(
            "SELECT COUNT(*) FROM images WHERE group_id = ?", (target,)
        ).fetchone()[0]
    assert (row["cal_status"], row["cal_method"]) == ("uncalibrated", "uncalibrated")
    assert stage.status.value == "skipped" and "quick look" in stage.detail
    assert fits.getheader(row["path"])["CALSTATE"] == "UNCALIBRATED"
    sensor = defs.resolve_sensor_def("calibration_sensor")

    def tick():
        return sensor(
            dg.build_sensor_context(
                instance=instance, definitions=defs, resources={"pipeline": pipeline}
            )
        )

    assert not tick().run_requests  # nothing valid covers it yet
    resolved = _run(defs, instance, cal_group, asset_selection=[dg.AssetKey("calibration_tables")])
    assert resolved.success
    (request,) = tick().run_requests
    assert request.partition_key == target
    assert {k.to_user_string() for k in request.asset_selection} == {
        "calibrated_ms",
        "image",
        "thumbnail",
        "group_photometry",
    }
    # Re-calibration runs queue under the same per-group limit and oldest-first order.
    assert request.tags["dsa110/queue"] == "process_group"
    assert float(request.tags["dagster/priority"]) < 0
    job = defs.resolve_job_def("process_group")
    rerun = job.execute_in_process(
        partition_key=target,
        instance=instance,
        asset_selection=request.asset_selection,
        tags=request.tags,
    )
    assert rerun.success
    with Registry(settings.db_path) as registry:
        after = registry.execute(
            "SELECT m.cal_status, m.cal_method, m.cal_choice, i.path, i.cal_applied"
            " FROM ms_index m JOIN images i ON i.ms_path = m.path AND i.image_type = 'image'"
            " WHERE m.group_id = ?",
            (target,),
        ).fetchone()
        assert (
            registry.execute(
                "SELECT COUNT(*) FROM images WHERE group_id = ?", (target,)
            ).fetchone()[0]
            == n_images
        )
    assert (after["cal_status"], after["cal_method"], after["cal_applied"]) == (
        "applied",
        "nearest",
        1,
    )
    assert json.loads(after["cal_choice"])["gain_solves"][0]["group_id"] == cal_group
    assert after["path"] == row["path"]
    header = fits.getheader(after["path"])
    assert header["CALSTATE"] == "CALIBRATED" and header["CALMETH"] == "nearest"
    events = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("image"), asset_partitions=[target]),
        limit=10,
    ).records
    assert len(events) >= 3  # first run, the quick look, the re-calibration
    assert not tick().run_requests  # done: the same choice is not requested again


def test_a_wsclean_failure_fails_the_partition_with_its_output(pipeline_run) -> None:
    """Check that a failing WSClean fails the image step and leaves earlier products.

    Runs last: WSClean exiting non-zero fails the image step with the tail of its output,
    the registry says so, and the earlier products of the group stay as they were.
    """
    pipeline, sim, (cal_group, target), _, _, instance = pipeline_run
    with Registry(pipeline.settings().db_path) as registry:
        before = {
            r["path"]: Path(r["path"]).stat().st_mtime_ns
            for r in registry.query("SELECT path FROM images WHERE group_id = ?", (target,))
        }
    broken = WSCleanResource(max_size=2048, threads=2, extra_args=["-no-such-option"])
    defs = build_definitions(pipeline, broken)
    run = _run(defs, instance, target, asset_selection=[dg.AssetKey("image")], raise_on_error=False)
    assert not run.success
    error = run.get_step_failure_events()[0].step_failure_data.error
    while error.cause is not None and error.cls_name != "WSCleanError":
        error = error.cause
    assert error.cls_name == "WSCleanError" and "no-such-option" in error.message
    with Registry(pipeline.settings().db_path) as registry:
        stage = get_stage(registry, target, "image")
    assert stage.status.value == "failed" and stage.error == "WSCleanError"
    assert {p: Path(p).stat().st_mtime_ns for p in before} == before
