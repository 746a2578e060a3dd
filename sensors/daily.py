"""The daily sensor: requests a day's products once the day is complete.

Complete means over (plus a margin) with every group of the day settled; see
:mod:`dsa110_assets.processing.daily_step`. The run key carries the day's image count and
a digest of when each image was last made, so a late group or a re-imaged day (a quick look
replaced by its calibrated image) is requested again, and nothing runs twice for one state.
"""

import time
from typing import Any

import dagster as dg

from dsa110_assets.defs.partitions import DAILY_START
from dsa110_assets.processing.daily_step import day_status, observed_days
from resources.pipeline import PipelineResource


def build_daily_sensor(target: dg.AssetSelection | dg.JobDefinition | Any):
    @dg.sensor(
        name="daily_sensor",
        target=target,
        minimum_interval_seconds=300,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Requests a day's mosaic, photometry and light curves when the day is "
        "complete (over plus 1 h, every group settled), and again if its images change.",
    )
    def daily_sensor(context: dg.SensorEvaluationContext, pipeline: PipelineResource):
        now = time.time()
        requests = []
        try:
            with pipeline.registry() as registry:
                for day in observed_days(registry):
                    if day < DAILY_START:
                        continue
                    status = day_status(registry, day, now=now)
                    if status.complete and status.images:
                        requests.append(
                            dg.RunRequest(
                                partition_key=day, run_key=f"{day}:{status.images}:{status.version}"
                            )
                        )
        except Exception as exc:  # never raise: a broken registry is a skip, not a crash
            return dg.SkipReason(f"registry unavailable: {exc}")
        if not requests:
            return dg.SkipReason("no complete day with new images")
        return requests

    return daily_sensor
