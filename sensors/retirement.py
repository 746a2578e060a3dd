"""The partition-retirement sensor: keeps the ``group_id`` partition list to recent groups.

A thin shell over :mod:`dsa110_assets.partition_retirement`: it reads the partition keys and
the runs from the Dagster instance and the queue states from the registry (read-only), lets
the plain-Python rule decide, and returns the deletions as a ``DeleteDynamicPartitionsRequest``
(the daemon applies it, as it applies the incoming sensor's additions).
"""

from __future__ import annotations

from datetime import UTC, datetime

import dagster as dg

from dsa110_assets.defs.partitions import RETENTION, group_id_partitions
from dsa110_assets.partition_retirement import (
    RetentionPolicy,
    old_keys,
    plan_retirement,
    read_queue_states,
)
from dsa110_assets.registry import Registry
from resources.clock import Clock
from resources.pipeline import PipelineResource

#: Run states in which a run may still write to its partition.
UNFINISHED_RUN_STATUSES = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]
PARTITION_TAG = "dagster/partition"


def busy_partitions(instance: dg.DagsterInstance, *, now: float, grace_s: float) -> set[str]:
    """Partition keys of runs not finished, or updated (ended) within ``grace_s`` of ``now``.

    Two bounded queries: unfinished runs are few, and runs updated in the grace window are
    about one per group per day; the run history as a whole is never read.
    """
    filters = [dg.RunsFilter(statuses=UNFINISHED_RUN_STATUSES)]
    if grace_s > 0:
        since = datetime.fromtimestamp(now - grace_s, UTC)
        filters.append(dg.RunsFilter(updated_after=since))
    keys: set[str] = set()
    for runs_filter in filters:
        for run in instance.get_runs(filters=runs_filter):
            if (key := run.tags.get(PARTITION_TAG)) is not None:
                keys.add(key)
    return keys


def build_retirement_sensor(policy: RetentionPolicy | None = None) -> dg.SensorDefinition:
    """Build the retirement sensor for ``policy``.

    Parameters
    ----------
    policy
        How long groups keep their partition; default
        :data:`~dsa110_assets.defs.partitions.RETENTION` (``PIPELINE_PARTITION_RETAIN_DAYS``,
        14 days).
    """
    policy = policy or RETENTION

    @dg.sensor(
        name="partition_retirement_sensor",
        minimum_interval_seconds=600,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Deletes the group_id partitions of groups observed more than "
        f"{policy.retain_days:g} days ago that are completed or failed in the registry and "
        f"have no run active or ended in the last {policy.grace_s / 3600:g} h (at most "
        f"{policy.max_per_tick} a tick). Registry rows, files, runs and materializations stay; "
        "'dsa110 reprocess GROUP_ID' brings a group back.",
    )
    def partition_retirement_sensor(
        context: dg.SensorEvaluationContext,
        pipeline: PipelineResource,
        clock: dg.ResourceParam[Clock],
    ) -> dg.SensorResult:
        now = clock()
        instance = context.instance
        keys = instance.get_dynamic_partitions(group_id_partitions.name)
        old = old_keys(keys, policy.horizon_key(now))
        if not old:
            return dg.SensorResult(
                skip_reason=f"{len(keys)} group_id partitions, none older than "
                f"{policy.retain_days:g} days"
            )
        try:
            with Registry(pipeline.settings().db_path, readonly=True) as registry:
                states = read_queue_states(registry, old)
        except Exception as exc:  # never raise; a missing registry retires nothing
            context.log.exception("registry unavailable")
            return dg.SensorResult(skip_reason=f"registry unavailable, nothing retired: {exc}")
        busy = busy_partitions(instance, now=now, grace_s=policy.grace_s)
        plan = plan_retirement(keys, states, busy, now=now, policy=policy)
        context.log.info(plan.summary())
        if not plan.retire:
            return dg.SensorResult(skip_reason=plan.summary())
        return dg.SensorResult(
            dynamic_partitions_requests=[group_id_partitions.build_delete_request(plan.retire)]
        )

    return partition_retirement_sensor
