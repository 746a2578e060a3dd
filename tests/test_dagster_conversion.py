"""End to end through Dagster: files land, the sensor sees them, a Measurement Set comes out."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg
import numpy as np
import pytest
from casacore.tables import table
from helpers import tier_folders

from dsa110_assets.definitions import build_definitions
from dsa110_assets.registry import QueueState, Registry, get_status
from dsa110_assets.simulation import SimulationConfig, simulate_observations
from resources.pipeline import PipelineResource


def land_observations(root: Path, *, damage=None, **config):
    """Simulate two small observations into ``root``'s input folder, written a minute ago.

    ``damage(result)`` may spoil files first (before their times are set back).
    """
    pipeline = PipelineResource(**tier_folders(root))
    result = simulate_observations(
        SimulationConfig(
            output_dir=pipeline.settings().input_dir,
            truth_dir=root / "truth",
            n_groups=2,
            n_channels=2,
            **config,
        )
    )
    if damage is not None:
        damage(result)
    for path in result.files:
        st = path.stat()
        os.utime(path, (st.st_atime - 60, st.st_mtime - 60))
    return pipeline, result


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


def materialize_group(defs: dg.Definitions, instance, group_id: str):
    job = defs.resolve_job_def("process_group")
    return job.execute_in_process(partition_key=group_id, instance=instance)


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
        job = defs.resolve_job_def("process_group")
        failed = job.execute_in_process(
            partition_key=first, instance=instance, raise_on_error=False
        )
        ok = job.execute_in_process(partition_key=second, instance=instance)
    assert not failed.success and ok.success
    with Registry(settings.db_path) as registry:
        status = get_status(registry, first)
        assert status.state is QueueState.FAILED
        assert status.error == "InvalidSubbandFile" and bad.name in status.error_message
        assert get_status(registry, second).state is QueueState.COMPLETED
    assert not (settings.output_dir / f"{first}.ms").exists()
    assert (settings.output_dir / f"{second}.ms").is_dir()
    assert bad.exists()  # the raw file is never deleted
