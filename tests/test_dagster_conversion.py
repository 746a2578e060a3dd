"""End to end through Dagster: files land, the sensor sees them, a Measurement Set comes out."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import numpy as np
import pytest
from casacore.tables import table
from helpers import land_observations

from dsa110_assets.definitions import build_definitions
from dsa110_assets.registry import QueueState, Registry, get_status
from resources.pipeline import PipelineResource


def first_tick(defs: dg.Definitions, instance, pipeline: PipelineResource):
    sensor = defs.get_sensor_def("incoming_sensor")
    return sensor(
        dg.build_sensor_context(
            instance=instance, definitions=defs, resources={"pipeline": pipeline}
        )
    )


@pytest.fixture(scope="module")
def landed(tmp_path_factory):
    """Two small observations in a fresh input folder, the first on a 3C286 transit."""
    return land_observations(
        tmp_path_factory.mktemp("e2e"), n_antennas=8, n_background_sources=2, seed=7
    )


#: These tests stop at the Measurement Set; calibration and imaging have their own tests.
CONVERSION = [dg.AssetKey("subband_group"), dg.AssetKey("measurement_set")]


def materialize_group(defs: dg.Definitions, instance, group_id: str, **kwargs):
    job = defs.resolve_job_def("process_group")
    return job.execute_in_process(
        partition_key=group_id, instance=instance, asset_selection=CONVERSION, **kwargs
    )


def test_sensor_to_measurement_set(landed):
    pipeline, sim = landed
    defs = build_definitions(pipeline)
    with dg.instance_for_test() as instance:
        tick = first_tick(defs, instance, pipeline)
        keys = [r.partition_key for r in tick.run_requests]
        assert len(keys) == 2
        instance.add_dynamic_partitions("group_id", keys)
        run = materialize_group(defs, instance, keys[0])
        assert run.success
        ms_path = Path(pipeline.settings().output_dir) / f"{keys[0]}.ms"
        assert ms_path.is_dir()
        materializations = {
            e.asset_key.to_user_string(): e.materialization.metadata
            for e in run.get_asset_materialization_events()
        }
        meta = materializations["measurement_set"]
        assert meta["tier"].value == "ssd_products"
        assert meta["spectral_windows"].value == 16
        assert meta["staging_tier"].value in ("tmpfs", "ssd")
        with table(str(ms_path / "SPECTRAL_WINDOW"), ack=False) as spw:
            ref = spw.getcol("REF_FREQUENCY")
        assert np.all(np.diff(ref) > 0)

        with Registry(pipeline.settings().db_path) as registry:
            assert get_status(registry, keys[0]).state is QueueState.COMPLETED
            row = registry.execute(
                "SELECT path, start_mjd, end_mjd, field_name FROM ms_index WHERE group_id = ?",
                (keys[0],),
            ).fetchone()
            assert row["path"] == str(ms_path) and row["end_mjd"] > row["start_mjd"]

        # Re-running a completed group changes nothing.
        before = ms_path.stat().st_mtime_ns
        again = materialize_group(defs, instance, keys[0])
        assert again.success and ms_path.stat().st_mtime_ns == before


def test_truncated_file_fails_its_group_only(tmp_path):
    def truncate(result):  # the disk filled up half way through one file
        with open(sorted(result.groups[0].files)[3], "r+b") as handle:
            handle.truncate(handle.seek(0, 2) // 3)

    pipeline, sim = land_observations(
        tmp_path, damage=truncate, n_antennas=6, n_background_sources=0, seed=3
    )
    settings = pipeline.settings()
    bad = sorted(sim.groups[0].files)[3]
    defs = build_definitions(pipeline)
    with dg.instance_for_test() as instance:
        tick = first_tick(defs, instance, pipeline)
        first, second = sorted(r.partition_key for r in tick.run_requests)
        instance.add_dynamic_partitions("group_id", [first, second])
        failed = materialize_group(defs, instance, first, raise_on_error=False)
        ok = materialize_group(defs, instance, second)
    assert not failed.success and ok.success
    with Registry(settings.db_path) as registry:
        status = get_status(registry, first)
        assert status.state is QueueState.FAILED
        assert status.error == "InvalidSubbandFile" and bad.name in status.error_message
        assert get_status(registry, second).state is QueueState.COMPLETED
    assert not (settings.output_dir / f"{first}.ms").exists()
    assert (settings.output_dir / f"{second}.ms").is_dir()
    assert bad.exists()  # the raw file is never deleted
