"""``GET /api/status``: the queue, the products per day, the tiers, the latency, the sensors."""

from __future__ import annotations

import time
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from dsa110_assets.api import queries
from dsa110_assets.api.context import ApiContext, api_context
from dsa110_assets.api.dagster_client import DagsterError, DagsterUnavailable
from dsa110_assets.api.inputs import DEFAULT_STATUS_DAYS, STATUS_DAYS_RULE, parse_int
from dsa110_assets.api.models import (
    DagsterReach,
    DayProducts,
    ErrorBody,
    GroupLatency,
    PipelineStatus,
)

router = APIRouter(prefix="/api", tags=["status"])


def group_latency(row: dict[str, Any] | None) -> GroupLatency | None:
    """Return a group's timing with its latency (None while it has no image)."""
    if row is None:
        return None
    last, image = row["last_file_at"], row["image_registered_at"]
    latency = None if last is None or image is None else image - last
    return GroupLatency(
        group_id=row["group_id"],
        state=row.get("state"),
        last_file_at=last,
        image_registered_at=image,
        latency_s=latency,
    )


def sensor_states(ctx: ApiContext) -> tuple[dict[str, str], DagsterReach]:
    """Return every sensor's state from Dagster, or the incoming sensor as ``unknown``.

    Status must answer when Dagster does not (that is when an operator looks), so a failure
    here is reported in the body, never raised.
    """
    try:
        states = ctx.dagster.sensor_states(timeout_s=ctx.status_timeout_s)
    except (DagsterUnavailable, DagsterError) as exc:
        return {ctx.incoming_sensor: "unknown"}, ctx.dagster_reach(exc)
    return states, ctx.dagster_reach()


def _first_day(newest: str | None, n_days: int) -> str:
    """Return the first UTC day of the ``n_days`` ending at the newest group's day.

    The window ends at the newest observation rather than today, so the registry of a replay
    or of a pipeline stopped a while ago (the demo's observations are dated in the past)
    still shows its last days; with no group it ends today.
    """
    last = date.fromisoformat(newest) if newest else datetime.now(UTC).date()
    return (last - timedelta(days=n_days - 1)).isoformat()


@router.get(
    "/status",
    response_model=PipelineStatus,
    summary="Pipeline status",
    responses={422: {"model": ErrorBody}, 503: {"model": ErrorBody}},
)
def pipeline_status(
    ctx: Annotated[ApiContext, Depends(api_context)],
    days: Annotated[
        str | None,
        Query(
            description="UTC days of products per day, ending at the newest group's day, "
            f"1-366 (default {DEFAULT_STATUS_DAYS})"
        ),
    ] = None,
) -> PipelineStatus:
    """Return the pipeline's status in one answer.

    Counts by queue state, products per day, bytes and free space per tier with the tier
    alerts, the latest group and the latency of the latest imaged one (last subband file
    registered to image registered), and the sensors' states (``unknown`` when Dagster does
    not answer: the status never fails for that).
    """
    n_days = parse_int("days", days, STATUS_DAYS_RULE, DEFAULT_STATUS_DAYS)
    with ctx.registry() as conn:
        first_day = _first_day(queries.newest_day(conn), n_days)
        queue = queries.queue_counts(conn)
        per_day = queries.products_per_day(conn, first_day)
        latest = queries.latest_group(conn)
        imaged = queries.latest_imaged_group(conn)
    reading = ctx.tiers.reading()
    sensors, reach = sensor_states(ctx)
    return PipelineStatus(
        generated_at=time.time(),
        registry=str(ctx.settings.db_path),
        queue=queue,
        products_per_day=[DayProducts(**d) for d in per_day],
        tiers=reading.usages,
        tier_alerts=reading.alerts,
        latest_group=group_latency(latest),
        latest_imaged_group=group_latency(imaged),
        sensors=sensors,
        dagster=reach,
    )
