"""The incoming-files sensor: files land, partitions appear, runs start."""

from typing import Any

import dagster as dg

from dsa110_assets.defs.partitions import group_id_partitions
from dsa110_assets.ingest.tick import TickCursor, ingest_tick
from resources.pipeline import PipelineResource


def build_incoming_sensor(target: dg.AssetSelection | dg.JobDefinition | Any):
    """The sensor, aimed at the job that processes one group_id partition."""

    @dg.sensor(
        name="incoming_sensor",
        target=target,
        default_status=dg.DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=30,
        description="Normalizes and registers new UVH5 subband files in PIPELINE_INPUT_DIR, "
        "adds a group_id partition when a group is complete (or has waited long enough) and "
        "requests one run per ready group (run key = group_id and retry count).",
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
            dg.RunRequest(partition_key=g, run_key=f"{g}:{retries}", tags={"group_id": g})
            for g, retries in tick.ready
        ]
        return dg.SensorResult(
            run_requests=run_requests,
            dynamic_partitions_requests=[group_id_partitions.build_add_request(new_keys)]
            if new_keys
            else [],
            cursor=tick.cursor.to_json(),
        )

    return incoming_sensor
