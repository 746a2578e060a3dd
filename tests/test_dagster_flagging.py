"""Flagging through Dagster, scored against the simulator's record of its interference.

A small simulated group with every kind of interference the simulator injects (narrowband
transmitters, broadband bursts, an always-bad channel, a broken receiver) goes through the
sensor, the conversion and the ``flagged_ms`` asset. The flags are scored against the
simulator's own record, mapped to MS rows by the simulator (not by the flagger's layout):
at least 95 % of the injected samples flagged, at most 5 % of the clean ones. The flag
versions are read back and restored; a re-run flags the same; and the flagged group images
with noise within 1.3x of the same sky without interference (WSClean), while the same group
unflagged does not.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import dagster as dg
import numpy as np
import pytest
from casacore import tables as pt
from helpers import first_group_files, land_observations, simulate_into

from dsa110_assets.conversion.convert import convert_group
from dsa110_assets.definitions import build_definitions
from dsa110_assets.flagging.versions import list_flag_versions, restore_flag_version
from dsa110_assets.imaging.image_stats import image_statistics
from dsa110_assets.imaging.wsclean import WSCleanParams, choose_image_geometry, run_wsclean
from dsa110_assets.registry import Registry
from dsa110_assets.simulation.rfi import RFIConfig, load_rfi_record, ms_rfi_mask
from resources.pipeline import PipelineResource

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore::astropy.wcs.FITSFixedWarning"),
]

SIM = dict(
    n_antennas=32,
    n_channels=16,
    seed=21,
    calibrator="3C286",
    n_background_sources=10,
    noise=True,
    corruptions=False,  # DATA images directly: the comparison is about interference only
    n_groups=1,
)
FLAGGING_ASSETS = [dg.AssetKey(k) for k in ("subband_group", "measurement_set", "flagged_ms")]


def _materialize(defs: dg.Definitions, instance, key: str):
    job = defs.resolve_job_def("process_group")
    return job.execute_in_process(
        partition_key=key, instance=instance, asset_selection=FLAGGING_ASSETS
    )


def _metadata(run, asset: str) -> dict[str, object]:
    (event,) = [
        e for e in run.get_asset_materialization_events() if e.asset_key.to_user_string() == asset
    ]
    return {k: v.value for k, v in event.materialization.metadata.items()}


def _flags_any(ms: Path) -> np.ndarray:
    with pt.table(str(ms), ack=False) as t:
        return t.getcol("FLAG").any(axis=2)


def _copy_ms(ms: Path, to: Path) -> None:
    """Copy an MS with its flag versions (CASA keeps them beside it, in <ms>.flagversions)."""
    shutil.copytree(ms, to)
    shutil.copytree(f"{ms}.flagversions", f"{to}.flagversions")


def _cross_rows(ms: Path) -> np.ndarray:
    with pt.table(str(ms), ack=False) as t:
        return t.getcol("ANTENNA1") != t.getcol("ANTENNA2")


@pytest.fixture(scope="module")
def flagged(tmp_path_factory):
    """Land, convert and flag one group with interference; yield what the tests look at."""
    root = tmp_path_factory.mktemp("flagging")
    pipeline, sim = land_observations(root, rfi=RFIConfig(), **{**SIM, "n_groups": 1})
    pipeline = PipelineResource(**pipeline.model_dump())
    defs = build_definitions(pipeline)
    with dg.instance_for_test() as instance:
        sensor = defs.resolve_sensor_def("incoming_sensor")
        result = sensor(
            dg.build_sensor_context(
                instance=instance, definitions=defs, resources={"pipeline": pipeline}
            )
        )
        (key,) = sorted(r.partition_key for r in result.run_requests)
        instance.add_dynamic_partitions("group_id", [key])
        run = _materialize(defs, instance, key)
        with Registry(pipeline.settings().db_path) as registry:
            (ms_row,) = registry.query("SELECT * FROM ms_index WHERE group_id = ?", (key,))
        ms = Path(ms_row["path"])
        yield dict(
            root=root,
            pipeline=pipeline,
            sim=sim,
            key=key,
            run=run,
            defs=defs,
            instance=instance,
            ms=ms,
            ms_row=ms_row,
            truth=ms_rfi_mask(load_rfi_record(sim.truth_path), 0, ms),
        )


def test_flags_score_against_the_simulators_record(flagged) -> None:
    assert flagged["run"].success
    ms, truth = flagged["ms"], flagged["truth"]
    flags = _flags_any(ms)
    cross = _cross_rows(ms)
    injected = truth[cross]
    caught = flags[cross][injected].mean()
    clean = flags[cross][~injected].mean()
    print(f"injected samples flagged {caught:.4f}, clean samples flagged {clean:.4f}")
    assert caught >= 0.95, caught
    assert clean <= 0.05, clean


def test_metadata_summary_and_registry_agree(flagged) -> None:
    meta = _metadata(flagged["run"], "flagged_ms")
    assert set(meta["per_spw"]) == {f"spw{k:02d}" for k in range(16)}
    assert len(meta["per_integration"]) == 24 and len(meta["per_antenna"]) == 32
    assert meta["flags"].startswith("![flagged fraction](data:image/png;base64,")
    record = load_rfi_record(flagged["sim"].truth_path)
    assert record.broken_antenna_name in meta["flagged_antennas"]
    assert 0.0 < meta["flagged_fraction"] < 0.5
    assert flagged["ms_row"]["flagged_fraction"] == pytest.approx(meta["flagged_fraction"])
    with Registry(flagged["pipeline"].settings().db_path) as registry:
        rows = registry.query(
            "SELECT * FROM flag_summary WHERE group_id = ? ORDER BY step", (flagged["key"],)
        )
    assert [r["step"] for r in rows] == ["aoflagger", "quality"]
    steps = {r["step"]: r for r in rows}
    assert steps["quality"]["fraction_after"] == pytest.approx(
        steps["aoflagger"]["fraction_before"]
    )
    assert steps["aoflagger"]["fraction_after"] == pytest.approx(meta["flagged_fraction"])
    detail = json.loads(steps["quality"]["detail"])
    named = detail["dead_antennas"] + detail["out_of_range_antennas"] + detail["noisy_antennas"]
    assert record.broken_antenna_name in named, detail


def test_flag_versions_restore_each_step(flagged, tmp_path: Path) -> None:
    ms = tmp_path / "copy.ms"
    _copy_ms(flagged["ms"], ms)
    names = [v.name for v in list_flag_versions(ms)]
    assert names[:3] == ["before_flagging", "before_aoflagger", "flagged"]
    final = _flags_any(ms)
    restore_flag_version(ms, "before_flagging")
    converted = _flags_any(ms)
    assert not converted.any()  # every subband was there: the converter flagged nothing
    restore_flag_version(ms, "before_aoflagger")
    quality = _flags_any(ms)
    assert 0 < quality.sum() < final.sum()
    restore_flag_version(ms, "flagged")
    assert np.array_equal(_flags_any(ms), final)


def test_rerun_flags_the_same(flagged) -> None:
    before = _flags_any(flagged["ms"])
    run = _materialize(flagged["defs"], flagged["instance"], flagged["key"])
    assert run.success
    assert np.array_equal(_flags_any(flagged["ms"]), before)
    first = _metadata(flagged["run"], "flagged_ms")["flagged_fraction"]
    assert _metadata(run, "flagged_ms")["flagged_fraction"] == pytest.approx(first)


@pytest.mark.skipif(shutil.which("wsclean") is None, reason="wsclean is not installed")
def test_flagged_group_images_like_the_sky_without_interference(flagged, tmp_path: Path) -> None:
    files = first_group_files(simulate_into(tmp_path, **SIM))
    clean_ms = tmp_path / "clean.ms"
    convert_group(files, clean_ms, tmpfs_dir=None, scratch_dir=tmp_path / "s", durable=False)
    unflagged = tmp_path / "unflagged.ms"
    _copy_ms(flagged["ms"], unflagged)
    restore_flag_version(unflagged, "before_flagging")
    geometry = choose_image_geometry(clean_ms, max_size=1024)
    params = WSCleanParams(
        size=geometry.size, scale_arcsec=geometry.scale_arcsec, data_column="DATA", threads=2,
        niter=500,
    )  # fmt: skip
    noise = {}
    for name, ms in (("clean", clean_ms), ("flagged", flagged["ms"]), ("raw", unflagged)):
        result = run_wsclean(ms, tmp_path / "images", name, params)
        noise[name] = image_statistics(result.residual).noise_jy
    print("residual noise (Jy):", {k: round(v, 5) for k, v in noise.items()})
    assert noise["flagged"] <= 1.3 * noise["clean"], noise
    assert noise["raw"] > 3.0 * noise["clean"], noise  # the interference does matter
