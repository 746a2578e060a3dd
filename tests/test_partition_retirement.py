"""Partitions over years: the retirement rule, the sensor, and the way back for a group.

The sensor runs on a real instance; the way back for an old group is ``dsa110 reprocess``.
Clocks are injected; nothing races the wall.
"""

from __future__ import annotations

import time
from pathlib import Path

import dagster as dg
import pytest
from helpers import tier_env, tier_folders

from dsa110_assets.cli import main
from dsa110_assets.definitions import build_definitions
from dsa110_assets.defs.ingest.assets import subband_group
from dsa110_assets.ingest.samples import write_header_only_subband
from dsa110_assets.naming import epoch_to_group_id, group_id_to_epoch, subband_filename
from dsa110_assets.partition_retirement import (
    RetentionPolicy,
    group_record,
    old_keys,
    plan_retirement,
    read_queue_states,
)
from dsa110_assets.registry import QueueState, Registry, transition
from resources.io_managers import TierIOManager
from resources.pipeline import PipelineResource
from sensors.retirement import build_retirement_sensor

DAY = 86400.0
NOW = group_id_to_epoch("2026-03-01T00:00:00")
POLICY = RetentionPolicy(retain_days=14, grace_s=DAY, max_per_tick=100)


# --- the rule -------------------------------------------------------------------------------


def test_only_old_finished_idle_groups_are_retired():
    keys = [
        "2026-01-10T00:00:00",  # old, completed: retired
        "2026-01-10T00:05:09",  # old, failed: retired
        "2026-01-11T00:00:00",  # old, pending: kept (not finished)
        "2026-01-11T00:05:09",  # old, no registry row: kept
        "2026-01-12T00:00:00",  # old, completed, but a run touched it: kept
        "2026-02-20T00:00:00",  # recent, completed: kept
        "not-a-group-id",  # not ours
    ]
    states = {
        "2026-01-10T00:00:00": "completed",
        "2026-01-10T00:05:09": "failed",
        "2026-01-11T00:00:00": "pending",
        "2026-01-12T00:00:00": "completed",
        "2026-02-20T00:00:00": "completed",
    }
    plan = plan_retirement(keys, states, {"2026-01-12T00:00:00"}, now=NOW, policy=POLICY)
    assert plan.retire == ["2026-01-10T00:00:00", "2026-01-10T00:05:09"]
    assert plan.horizon_key == "2026-02-15T00:00:00"
    assert plan.unfinished == ["2026-01-11T00:00:00"]
    assert plan.unregistered == ["2026-01-11T00:05:09"]
    assert plan.busy == ["2026-01-12T00:00:00"]
    assert (plan.total, plan.recent, plan.remaining, plan.deferred) == (7, 2, 5, 0)
    assert "retiring 2" in plan.summary()


def test_retirement_drains_oldest_first_within_the_per_tick_cap():
    start = group_id_to_epoch("2026-01-01T00:00:00")
    keys = [epoch_to_group_id(start + 300 * i) for i in range(250)]
    states = dict.fromkeys(keys, "completed")
    plan = plan_retirement(reversed(keys), states, (), now=NOW, policy=POLICY)
    assert plan.retire == keys[:100] and plan.deferred == 150
    assert old_keys(keys, plan.horizon_key) == keys


def test_retention_policy_is_validated_by_name():
    assert RetentionPolicy.from_env({}).retain_days == 14
    assert RetentionPolicy.from_env({"PIPELINE_PARTITION_RETAIN_DAYS": "30"}).retain_days == 30
    assert RetentionPolicy(retain_days=30).expected_partitions == 8640
    for bad in ("nan", "0", "400", "1_0", "-3"):
        with pytest.raises(ValueError, match="PIPELINE_PARTITION_RETAIN_DAYS"):
            RetentionPolicy.from_env({"PIPELINE_PARTITION_RETAIN_DAYS": bad})
    with pytest.raises(ValueError, match="max_per_tick"):
        RetentionPolicy(max_per_tick=0)


def test_queue_states_are_read_in_chunks(registry):
    ids = [epoch_to_group_id(NOW - 300 * i) for i in range(2000)]
    registry.conn.executemany(
        "INSERT INTO processing_queue(group_id, state, received_at, last_update)"
        " VALUES (?, ?, 0, 0)",
        [(g, "completed" if i % 2 else "failed") for i, g in enumerate(ids)],
    )
    registry.conn.commit()
    states = read_queue_states(registry, [*ids, "2000-01-01T00:00:00"])
    assert len(states) == 2000 and states[ids[1]] == "completed" and states[ids[0]] == "failed"
    assert group_record(registry, ids[0]).state == "failed"
    assert group_record(registry, "2000-01-01T00:00:00") is None


# --- the sensor and the way back, on a real instance -----------------------------------------

OLD = "2025-01-15T12:00:00"
OLD_PENDING = "2025-01-15T12:05:09"


def _write_group(folder: Path, gid: str) -> None:
    t0 = group_id_to_epoch(gid)
    for sb in range(16):
        write_header_only_subband(folder / subband_filename(gid, sb), t0, mtime=t0 + 400)


def _retire_tick(pipeline: PipelineResource, instance: dg.DagsterInstance, now: float):
    sensor = build_retirement_sensor(POLICY)
    context = dg.build_sensor_context(
        instance=instance, resources={"pipeline": pipeline, "clock": lambda: now}
    )
    return sensor(context)


def _incoming_tick(defs: dg.Definitions, instance: dg.DagsterInstance):
    context = dg.build_sensor_context(
        instance=instance, definitions=defs, resources={"pipeline": defs.resources["pipeline"]}
    )
    return defs.resolve_sensor_def("incoming_sensor")(context)


def _materializations(instance: dg.DagsterInstance, key: str) -> int:
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("subband_group"), asset_partitions=[key]),
        limit=100,
    ).records
    return len(records)


def _last_run_end(instance: dg.DagsterInstance) -> float:
    return max(r.end_time for r in instance.get_run_records() if r.end_time is not None)


def test_sensor_retires_finished_groups_and_reprocess_brings_one_back(tmp_path, monkeypatch):
    pipeline = PipelineResource(**tier_folders(tmp_path))
    monkeypatch.setenv("DSA110_DEBUG", "1")
    for name, value in tier_env(tmp_path).items():
        monkeypatch.setenv(name, value)
    incoming = Path(pipeline.settings().input_dir)
    _write_group(incoming, OLD)
    _write_group(incoming, OLD_PENDING)
    defs = build_definitions(pipeline)
    with dg.instance_for_test() as instance:
        first = _incoming_tick(defs, instance)
        (add,) = first.dynamic_partitions_requests
        assert sorted(add.partition_keys) == [OLD, OLD_PENDING]
        instance.add_dynamic_partitions("group_id", list(add.partition_keys))
        out = dg.materialize(
            [subband_group],
            partition_key=OLD,
            instance=instance,
            resources={"pipeline": pipeline, "tier_io_manager": TierIOManager(pipeline=pipeline)},
        )
        assert out.success
        with Registry(pipeline.settings().db_path) as registry:
            transition(registry, OLD, QueueState.IN_PROGRESS, now=time.time())
            transition(registry, OLD, QueueState.COMPLETED, now=time.time())
        ended = _last_run_end(instance)

        # A run ended an hour ago: kept for the grace period. Two days later: retired.
        soon = _retire_tick(pipeline, instance, ended + 3600)
        assert soon.dynamic_partitions_requests == []
        assert "1 old with a recent or active run" in soon.skip_reason.skip_message
        later = _retire_tick(pipeline, instance, ended + 2 * DAY)
        (delete,) = later.dynamic_partitions_requests
        assert isinstance(delete, dg.DeleteDynamicPartitionsRequest)
        assert list(delete.partition_keys) == [OLD]  # the pending group stays
        for key in delete.partition_keys:
            instance.delete_dynamic_partition("group_id", key)
        assert instance.get_dynamic_partitions("group_id") == [OLD_PENDING]
        assert _materializations(instance, OLD) == 1  # history is kept

        # The incoming sensor adds keys for pending groups only: the retired one stays out.
        again = _incoming_tick(defs, instance)
        assert all(OLD not in r.partition_keys for r in again.dynamic_partitions_requests)
        assert OLD not in {r.partition_key for r in again.run_requests}

        # The way back: re-add the key and run, recorded in this (DAGSTER_HOME) instance.
        assert main(["reprocess", OLD, "--assets", "subband_group"]) == 0
        assert instance.has_dynamic_partition("group_id", OLD)
        assert _materializations(instance, OLD) == 2
        (rerun,) = instance.get_runs(filters=dg.RunsFilter(tags={"dsa110/reprocess": "cli"}))
        assert rerun.tags["dagster/partition"] == OLD and rerun.is_success
        # Just re-run: the next retirement tick leaves it alone for the grace period.
        kept = _retire_tick(pipeline, instance, _last_run_end(instance) + 3600)
        assert kept.dynamic_partitions_requests == []


def test_reprocess_refuses_unknown_groups_and_bad_keys(tmp_path, monkeypatch, capsys):
    for name, value in tier_env(tmp_path).items():
        monkeypatch.setenv(name, value)
    with Registry(Path(tmp_path / "state" / "db" / "pipeline.sqlite3")) as registry:
        registry.execute(
            "INSERT INTO processing_queue(group_id, state, received_at, last_update)"
            " VALUES (?, 'failed', 0, 0)",
            (OLD_PENDING,),
        )
        registry.conn.commit()
    with dg.instance_for_test() as instance:
        assert main(["reprocess", OLD]) == 1
        assert "not in the registry" in capsys.readouterr().err
        with pytest.raises(SystemExit):
            main(["reprocess", "2025-13-01T00:00:00"])
        assert main(["reprocess", OLD_PENDING, "--assets", "no_such_asset"]) == 1
        assert "not in process_group" in capsys.readouterr().err
        # Only the key: the run is then launched from the UI or the dagster command.
        assert main(["reprocess", OLD_PENDING, "--partition-only"]) == 0
        assert "partition 2025-01-15T12:05:09 re-added" in capsys.readouterr().out
        assert instance.get_dynamic_partitions("group_id") == [OLD_PENDING]
        assert instance.get_runs() == []


def test_sensor_with_no_registry_retires_nothing(tmp_path):
    pipeline = PipelineResource(**tier_folders(tmp_path))
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("group_id", [OLD])
        result = _retire_tick(pipeline, instance, NOW)
    assert result.dynamic_partitions_requests == []
    assert "registry unavailable" in result.skip_reason.skip_message
