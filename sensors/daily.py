"""The daily sensor: requests a day's products once the day is complete.

Complete means over (plus a margin) with every group of the day settled; see
:mod:`dsa110_assets.processing.daily_step`. The run key carries the day's image count and
a digest of when each image was last made, so a late group or a re-imaged day (a quick look
replaced by its calibrated image) is requested again, and nothing runs twice for one state.

The cursor records the state (``images:version``) last requested per day, so a tick requests
only the days whose state changed instead of leaning on the run-key de-duplication alone;
the run key stays, so a cursor lost or reset still never runs one state twice.
"""

import json
import time
from typing import Any

import dagster as dg

from dsa110_assets.defs.partitions import DAILY_START
from dsa110_assets.processing.daily_step import day_status
from dsa110_assets.registry.days import observed_days
from resources.pipeline import PipelineResource


def read_cursor(cursor: str | None) -> dict[str, str]:
    """Return the state last requested per day, from the sensor's cursor.

    Parameters
    ----------
    cursor
        The JSON object the previous tick stored (``None`` on the first tick).

    Returns
    -------
    dict[str, str]
        Day (``YYYY-MM-DD``) to ``"{images}:{version}"``; empty when there is no cursor or it
        is not a JSON object (an unreadable cursor requests every complete day again, and the
        run keys keep that from running anything twice).
    """
    try:
        loaded = json.loads(cursor) if cursor else {}
    except ValueError:
        return {}
    if not isinstance(loaded, dict):
        return {}
    return {str(day): str(state) for day, state in loaded.items()}


def complete_days(pipeline: PipelineResource, now: float) -> dict[str, str]:
    """Return ``"{images}:{version}"`` for every complete day with images since DAILY_START.

    Parameters
    ----------
    pipeline
        Where the registry is.
    now
        The time "complete" is judged at (a day is complete once over plus a margin).
    """
    states: dict[str, str] = {}
    with pipeline.registry() as registry:
        for day in observed_days(registry):
            if day < DAILY_START:
                continue
            status = day_status(registry, day, now=now)
            if status.complete and status.images:
                states[day] = f"{status.images}:{status.version}"
    return states


def build_daily_sensor(target: dg.AssetSelection | dg.JobDefinition | Any) -> dg.SensorDefinition:
    """Build the daily sensor, aimed at the job that makes one day's products.

    Parameters
    ----------
    target
        The daily products job (or an asset selection of the daily group).
    """

    @dg.sensor(
        name="daily_sensor",
        target=target,
        minimum_interval_seconds=300,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Requests a day's mosaic, photometry and light curves when the day is "
        "complete (over plus 1 h, every group settled), and again if its images change.",
    )
    def daily_sensor(
        context: dg.SensorEvaluationContext, pipeline: PipelineResource
    ) -> dg.SensorResult:
        requested = read_cursor(context.cursor)
        try:
            states = complete_days(pipeline, time.time())
        except Exception as exc:  # never raise: a broken registry is a skip, not a crash
            return dg.SensorResult(
                skip_reason=f"registry unavailable: {exc}", cursor=context.cursor
            )
        changed = {day: state for day, state in states.items() if requested.get(day) != state}
        if not changed:
            return dg.SensorResult(
                skip_reason="no complete day with new images", cursor=context.cursor
            )
        return dg.SensorResult(
            run_requests=[
                dg.RunRequest(partition_key=day, run_key=f"{day}:{state}")
                for day, state in sorted(changed.items())
            ],
            cursor=json.dumps({**requested, **changed}, sort_keys=True),
        )

    return daily_sensor
