"""The incoming-files sensor: files land, partitions appear, runs start."""

from typing import Any

import dagster as dg

from dsa110_assets.defs.partitions import group_id_partitions
from dsa110_assets.ingest.tick import TickCursor, ingest_tick
from dsa110_assets.naming import group_id_to_epoch
from resources.pipeline import PipelineResource

#: The run tag that dagster.yaml's tag concurrency limit counts: at most N per-group runs at
#: once (``concurrency.runs.tag_concurrency_limits``, 2 by default).
QUEUE_TAG = "dsa110/queue"
QUEUE_VALUE = "process_group"
#: Dagster's queue starts the queued run of highest priority first (ties: first queued).
PRIORITY_TAG = "dagster/priority"
#: Run monitoring cancels a per-group run still going after this (dagster.yaml's
#: ``max_runtime_seconds``, 6 h, is for every run, mosaics and backfills included). A full
#: group takes minutes; a run left ``STARTED`` by a code server that died with its worker
#: would otherwise hold one of the two per-group slots for the whole 6 h.
MAX_RUNTIME_TAG = "dagster/max_runtime"
GROUP_MAX_RUNTIME_S = 7200
#: Seconds between ticks. A group's last file waits for the next tick (plus the settle time),
#: half the interval on average (30 s: 5-35 s with the 5 s settle time, 20 s on average). An idle
#: tick is a listing of the input folder and one registry query, so 10 s is cheap.
TICK_INTERVAL_S = 10


def group_run_tags(group_id: str) -> dict[str, str]:
    """Return the tags of a per-group run: group, queue, place in the queue, longest run time.

    The priority is minus the group's start time in Unix seconds, so the oldest observation
    waiting is always the next to start, whatever order its run was queued in: a requeued
    group (a retry, a dead attempt) or a late one does not wait behind a backlog of newer
    ones. Being negative, it also lets a run started by hand (priority 0) go first.
    """
    return {
        "group_id": group_id,
        QUEUE_TAG: QUEUE_VALUE,
        PRIORITY_TAG: str(-group_id_to_epoch(group_id)),
        MAX_RUNTIME_TAG: str(GROUP_MAX_RUNTIME_S),
    }


def build_incoming_sensor(
    target: dg.AssetSelection | dg.JobDefinition | Any,
    interval_s: int = TICK_INTERVAL_S,
) -> dg.SensorDefinition:
    """Build the incoming-files sensor, aimed at the job that processes one group_id partition.

    Parameters
    ----------
    target
        The per-group job; each ready group is one run of it.
    interval_s
        Seconds between ticks (:data:`TICK_INTERVAL_S`; the benchmarks' baseline: 30).
    """

    @dg.sensor(
        name="incoming_sensor",
        target=target,
        default_status=dg.DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=interval_s,
        description="Normalizes and registers new UVH5 subband files in PIPELINE_INPUT_DIR, "
        "adds a group_id partition when a group is complete (or has waited long enough) and "
        "requests one run per ready group (run key = group_id and retry count), oldest first, "
        "tagged for the per-group concurrency limit and prioritised by age.",
    )
    def incoming_sensor(context: dg.SensorEvaluationContext, pipeline: PipelineResource):
        cursor = TickCursor.from_json(context.cursor)
        try:
            with pipeline.registry() as registry:
                tick = ingest_tick(
                    pipeline.settings(),
                    registry,
                    cursor,
                    max_files=pipeline.max_files_per_tick,
                    group_timeout_s=pipeline.group_timeout_s,
                    min_subbands=pipeline.min_subbands,
                )
        except Exception as exc:  # the sensor never raises: one bad tick must not stop ingest
            context.log.exception("ingest tick failed")
            return dg.SensorResult(skip_reason=f"ingest tick failed: {exc}", cursor=context.cursor)

        if tick.report is not None:
            stats = tick.report.stats()
            context.log.info(
                f"ingest: {stats['files_scanned']} files, {stats['files_renamed']} renamed, "
                f"{stats['files_registered']} registered, {stats['conflicts']} conflicts, "
                f"{stats['skipped']} skipped; backlog {tick.backlog}"
            )
            # Each refused file alone, by name (escaped: names come from outside).
            for outcome in tick.report.outcomes:
                if outcome.action in ("mismatch", "error", "conflict"):
                    context.log.warning(f"{outcome.action}: {outcome.name!r}: {outcome.reason}")
        for group_id, status in tick.requeued.items():
            context.log.warning(
                f"{group_id}: its conversion died without finishing; now {status.state.value}"
                f" (retry {status.retry_count})"
            )
        for group_id, message in tick.stale.failed.items():
            context.log.warning(f"{group_id} failed: {message}")
        new_keys = [
            g
            for g, _ in tick.ready
            if not context.instance.has_dynamic_partition(group_id_partitions.name, g)
        ]
        run_requests = [
            dg.RunRequest(partition_key=g, run_key=f"{g}:{retries}", tags=group_run_tags(g))
            for g, retries in sorted(tick.ready)
        ]
        return dg.SensorResult(
            run_requests=run_requests,
            dynamic_partitions_requests=[group_id_partitions.build_add_request(new_keys)]
            if new_keys
            else [],
            cursor=tick.cursor.to_json(),
        )

    return incoming_sensor
