"""``GET /api/status``: the queue, the products per day, the tiers, the latency, the sensors."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
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
        Query(description=f"UTC days of products per day, 1-366 (default {DEFAULT_STATUS_DAYS})"),
    ] = None,
) -> PipelineStatus:
    """Return the pipeline's status in one answer.

    Counts by queue state, products per day, bytes and free space per tier with the tier
    alerts, the latest group and the latency of the latest imaged one (last subband file
    registered to image registered), and the sensors' states (``unknown`` when Dagster does
    not answer: the status never fails for that).
    """
    n_days = parse_int("days", days, STATUS_DAYS_RULE, DEFAULT_STATUS_DAYS)
    first_day = (datetime.now(UTC).date() - timedelta(days=n_days - 1)).isoformat()
    with ctx.registry() as conn:
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
