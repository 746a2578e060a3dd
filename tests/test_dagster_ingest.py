"""The Dagster shell over ingest: sensor ticks on a real instance, materialization, placement."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import dagster as dg
import pytest
from helpers import tier_folders

from dsa110_assets.definitions import build_definitions
from dsa110_assets.defs.ingest.assets import subband_group
from dsa110_assets.ingest.groups import SubbandGroup
from dsa110_assets.ingest.samples import write_header_only_subband
from dsa110_assets.naming import epoch_to_group_id, group_id_to_epoch, subband_filename
from dsa110_assets.registry import QueueState, Registry, get_status
from dsa110_assets.storage import WrongTierError, check_placement, product_path
from resources.io_managers import TierIOManager
from resources.pipeline import PipelineResource

GID = "2025-01-15T12:00:00"


def make_pipeline(root: Path, **overrides) -> PipelineResource:
    fields = {
        **tier_folders(root),
        "group_timeout_s": 600,
        "min_subbands": 12,
    }
    return PipelineResource(**{**fields, **overrides})


@pytest.fixture
def pipeline(tmp_path: Path) -> PipelineResource:
    return make_pipeline(tmp_path)


def write_group(folder: Path, gid: str, subbands, age_s: float = 600.0) -> None:
    """Header-only subband files of the observation starting at ``gid``, names 0-2 s late."""
    t0 = group_id_to_epoch(gid)
    now = time.time()
    for i, sb in enumerate(subbands):
        name = subband_filename(epoch_to_group_id(t0 + sb % 3), sb)
        write_header_only_subband(folder / name, t0, mtime=now - age_s + i)


def tick(defs: dg.Definitions, instance: dg.DagsterInstance, cursor: str | None):
    """One evaluation of the sensor as the daemon would run it, on a real instance."""
    sensor = defs.resolve_sensor_def("incoming_sensor")
    context = dg.build_sensor_context(
        instance=instance,
        cursor=cursor,
        definitions=defs,
        resources={"pipeline": defs.resources["pipeline"]},
    )
    return sensor(context)


def test_sensor_adds_partitions_and_requests_one_run_per_group(pipeline, tmp_path):
    defs = build_definitions(pipeline)
    incoming = Path(pipeline.input_dir)
    incoming.mkdir(parents=True)
    write_group(incoming, GID, range(16))
    write_group(incoming, "2025-01-15T12:05:09", range(10))  # still collecting

    with dg.instance_for_test() as instance:
        result = tick(defs, instance, None)
        assert [r.partition_key for r in result.run_requests] == [GID]
        assert result.run_requests[0].run_key == f"{GID}:0"
        (add,) = result.dynamic_partitions_requests
        assert list(add.partition_keys) == [GID]
        instance.add_dynamic_partitions("group_id", list(add.partition_keys))
        cursor = json.loads(result.cursor)
        assert cursor["ctime_ns"] > 0

        # Nothing new: the same pending group is requested again with the same run key
        # (Dagster drops duplicates) and no partition is added twice.
        again = tick(defs, instance, result.cursor)
        assert [r.run_key for r in again.run_requests] == [f"{GID}:0"]
        assert again.dynamic_partitions_requests == []

    with Registry(pipeline.settings().db_path) as registry:
        assert get_status(registry, GID).state is QueueState.PENDING
        assert get_status(registry, "2025-01-15T12:05:09").state is QueueState.COLLECTING


def test_sensor_processes_only_new_files(pipeline):
    defs = build_definitions(pipeline)
    incoming = Path(pipeline.input_dir)
    incoming.mkdir(parents=True)
    write_group(incoming, GID, range(8))
    with dg.instance_for_test() as instance:
        first = tick(defs, instance, None)
        # Renames changed ctimes, so the next tick sees only those files, then nothing.
        second = tick(defs, instance, first.cursor)
        third = tick(defs, instance, second.cursor)
        write_group(incoming, GID, range(8, 16))
        fourth = tick(defs, instance, third.cursor)
    assert first.run_requests == [] and second.run_requests == [] and third.run_requests == []
    assert [r.partition_key for r in fourth.run_requests] == [GID]


def test_stale_groups_go_on_partial_or_fail(tmp_path):
    pipeline = make_pipeline(tmp_path, group_timeout_s=0.0)
    defs = build_definitions(pipeline)
    incoming = Path(pipeline.input_dir)
    incoming.mkdir(parents=True)
    write_group(incoming, GID, range(13))  # 13 >= 12: processed without 3 subbands
    write_group(incoming, "2025-01-15T12:05:09", range(5))  # too few: failed
    with dg.instance_for_test() as instance:
        result = tick(defs, instance, None)
    assert [r.partition_key for r in result.run_requests] == [GID]
    with Registry(pipeline.settings().db_path) as registry:
        row = registry.execute(
            "SELECT state, missing_subbands FROM processing_queue WHERE group_id = ?", (GID,)
        ).fetchone()
        assert row["state"] == "pending" and json.loads(row["missing_subbands"]) == [13, 14, 15]
        failed = get_status(registry, "2025-01-15T12:05:09")
        assert failed.state is QueueState.FAILED
        assert "only 5 of 16 subbands" in failed.error_message


def test_one_bad_file_never_stops_a_tick(pipeline):
    """Report each bad file alone and register every good one, through the sensor.

    Issue 10 item 2: names that overflow, empty and foreign files are reported alone and
    every good file is registered; the group is requested.
    """
    defs = build_definitions(pipeline)
    incoming = Path(pipeline.input_dir)
    incoming.mkdir(parents=True)
    write_group(incoming, GID, range(16))
    for bad in ("9999-12-31T23:59:30_sb00.hdf5", "0001-01-01T00:00:00_sb01.hdf5"):
        (incoming / bad).write_bytes(b"")
    empty = incoming / "2025-01-15T12:05:09_sb03.hdf5"
    empty.write_bytes(b"")
    os.utime(empty, (time.time(), time.time() - 60))  # settled, but still empty
    write_header_only_subband(
        incoming / "2026-01-20T00:00:00_sb04.hdf5", group_id_to_epoch(GID), mtime=time.time() - 60
    )
    with dg.instance_for_test() as instance:
        result = tick(defs, instance, None)
    assert [r.partition_key for r in result.run_requests] == [GID]
    with Registry(pipeline.settings().db_path) as registry:
        assert registry.query("SELECT COUNT(*) FROM subband_files")[0][0] == 16
        rejects = {
            Path(r["path"]).name: r["kind"]
            for r in registry.query("SELECT path, kind FROM ingest_rejects")
        }
    assert rejects == {
        "2025-01-15T12:05:09_sb03.hdf5": "unreadable",
        "2026-01-20T00:00:00_sb04.hdf5": "mismatch",
    }


def test_sensor_never_raises(tmp_path):
    broken = make_pipeline(tmp_path, db_path=str(tmp_path / "not-a-db"))
    (tmp_path / "not-a-db").write_text("this is not sqlite")
    with dg.instance_for_test() as instance:
        result = tick(build_definitions(broken), instance, None)
    assert result.run_requests == []
    assert "ingest tick failed" in result.skip_reason.skip_message


def test_materialize_subband_group(pipeline):
    incoming = Path(pipeline.input_dir)
    incoming.mkdir(parents=True)
    write_group(incoming, GID, range(16))
    defs = build_definitions(pipeline)
    with dg.instance_for_test() as instance:
        result = tick(defs, instance, None)
        instance.add_dynamic_partitions("group_id", [GID])
        out = dg.materialize(
            [subband_group],
            partition_key=GID,
            instance=instance,
            resources={"pipeline": pipeline, "tier_io_manager": TierIOManager(pipeline=pipeline)},
        )
        assert out.success and result.run_requests
        group = out.output_for_node("subband_group")
        assert isinstance(group, SubbandGroup) and group.is_complete
        (event,) = out.get_asset_materialization_events()
        metadata = event.materialization.metadata
        assert metadata["subbands_present"].value == 16
        assert metadata["subbands_missing"].value == "none"


def test_placement_rule(pipeline):
    settings = pipeline.settings()
    ms = product_path(settings, "ms", GID, ".ms")
    assert ms == settings.output_dir / f"{GID}.ms"
    assert check_placement(settings, "ms", ms).value == "ssd_products"
    assert check_placement(settings, "raw", settings.input_dir / "x.hdf5").value == "hdd_input"
    assert check_placement(settings, "staging", settings.staging_dir / "x").value == "ssd_scratch"
    with pytest.raises(WrongTierError, match="refusing to place ms .* hdd_input tier"):
        check_placement(settings, "ms", settings.input_dir / f"{GID}.ms")
    with pytest.raises(WrongTierError, match="refusing to place raw"):
        check_placement(settings, "raw", settings.products_dir / "ms" / "x.hdf5")
    with pytest.raises(WrongTierError, match="no storage tier"):
        check_placement(settings, "images", Path("/somewhere/else.fits"))
    with pytest.raises(WrongTierError, match="unknown product kind"):
        product_path(settings, "bogus", GID)


def test_io_manager_refuses_a_product_on_the_wrong_tier(pipeline):
    settings = pipeline.settings()
    wrong = settings.input_dir / f"{GID}.ms"
    wrong.mkdir(parents=True)

    @dg.asset(
        partitions_def=subband_group.partitions_def,
        io_manager_key="tier_io_manager",
        metadata={"dsa110/kind": "ms", "dsa110/suffix": ".ms"},
    )
    def misplaced() -> Path:
        return wrong

    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("group_id", [GID])
        with pytest.raises(WrongTierError, match="refusing to place ms"):
            dg.materialize(
                [misplaced],
                partition_key=GID,
                instance=instance,
                resources={"tier_io_manager": TierIOManager(pipeline=pipeline)},
            )


def test_definitions_load_with_groups_kinds_and_owners():
    from dsa110_assets.definitions import defs

    spec = defs.resolve_asset_graph().get(dg.AssetKey("subband_group"))
    assert spec.group_name == "ingest"
    assert {"hdf5"} <= set(spec.kinds)
    assert spec.owners == ["team:dsa110-pipeline"]
    sensor = defs.resolve_sensor_def("incoming_sensor")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
