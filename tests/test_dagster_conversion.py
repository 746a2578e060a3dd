"""End to end through Dagster: files land, the sensor sees them, a Measurement Set comes out."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import numpy as np
import pytest
from casacore.tables import table
from helpers import land_observations

from dsa110_assets.definitions import build_definitions
from dsa110_assets.registry import QueueState, Registry, get_stage, get_status
from resources.pipeline import PipelineResource


def first_tick(defs: dg.Definitions, instance, pipeline: PipelineResource):
    sensor = defs.resolve_sensor_def("incoming_sensor")
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
    pipeline, sim = land_observations(tmp_path, n_antennas=6, n_background_sources=0, seed=3)
    settings = pipeline.settings()
    defs = build_definitions(pipeline)
    with dg.instance_for_test() as instance:
        tick = first_tick(defs, instance, pipeline)
        first, second = sorted(r.partition_key for r in tick.run_requests)
        # After registration, the disk fills up half way through one file being rewritten.
        bad = sorted(settings.input_dir.glob(f"{first}_sb*.hdf5"))[3]
        with open(bad, "r+b") as handle:
            handle.truncate(handle.seek(0, 2) // 3)
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


def test_a_killed_conversion_is_taken_over_by_the_next_run(tmp_path):
    """Check that a run after a killed worker records the dead attempt and converts.

    Issue 10 item 1 through Dagster: a worker SIGKILLed mid-write left the group
    ``in_progress`` and every later attempt failed with "illegal queue transition
    in_progress -> in_progress". Now the next run records the dead attempt and converts.
    """
    from test_write_faults import kill_mid_write

    pipeline, sim = land_observations(tmp_path, n_groups=1, n_antennas=5, n_background_sources=0)
    settings = pipeline.settings()
    defs = build_definitions(pipeline)
    with dg.instance_for_test() as instance:
        tick = first_tick(defs, instance, pipeline)
        (group_id,) = [r.partition_key for r in tick.run_requests]
        instance.add_dynamic_partitions("group_id", [group_id])

        class Killed:  # what kill_mid_write needs to know about the group
            def __init__(self, registry):
                self.registry, self.group_id = registry, group_id

        with Registry(settings.db_path) as registry:
            kill_mid_write(Killed(registry), tmp_path)
            assert get_status(registry, group_id).state is QueueState.IN_PROGRESS

        # The sensor's next tick finds the dead attempt and requests the group again, under
        # a new run key (the first run key is spent: Dagster would skip it).
        again = first_tick(defs, instance, pipeline)
        assert [(r.partition_key, r.run_key) for r in again.run_requests] == [
            (group_id, f"{group_id}:1")
        ]
        run = materialize_group(defs, instance, group_id)
        assert run.success
    assert (settings.output_dir / f"{group_id}.ms").is_dir()
    with Registry(settings.db_path) as registry:
        status = get_status(registry, group_id)
        assert status.state is QueueState.COMPLETED and status.retry_count == 1
        assert get_stage(registry, group_id, "convert").status.value == "done"
    leftovers = [
        e
        for folder in (settings.tmpfs_dir, settings.staging_dir, settings.output_dir)
        if folder.exists()
        for e in folder.iterdir()
        if e.name.startswith(".")
    ]
    assert not leftovers
