"""``/api/streaming``: the incoming sensor's state, switched through Dagster, and the backlog.

"Streaming" is the incoming sensor (``sensors/incoming.py``): while it runs, files landing
in the input folder are registered and their groups processed. Start and stop send Dagster
the mutations the UI's toggle sends, so the switch is the instance's own sensor state and
the UI shows it. Unlike ``/api/status``, start and stop fail (503/502) when Dagster does not
do what was asked.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from dsa110_assets.api import queries
from dsa110_assets.api.backlog import input_backlog
from dsa110_assets.api.context import ApiContext, api_context
from dsa110_assets.api.dagster_client import DagsterError, DagsterUnavailable
from dsa110_assets.api.models import Backlog, ErrorBody, StreamingStatus

router = APIRouter(prefix="/api/streaming", tags=["streaming"])

_ERRORS = {502: {"model": ErrorBody}, 503: {"model": ErrorBody}}


def backlog(ctx: ApiContext) -> Backlog:
    """Return the input folder's unregistered files and the pending groups."""
    with ctx.registry() as conn:
        found = input_backlog(ctx.settings.input_dir, conn)
        pending = queries.queue_counts(conn)["pending"]
    return Backlog(**vars(found), pending_groups=pending)


def streaming_status(ctx: ApiContext, state: str | None = None) -> StreamingStatus:
    """Return the sensor's state (asked of Dagster unless given) and the backlog."""
    reach = ctx.dagster_reach()
    if state is None:
        try:
            state = ctx.dagster.sensor_state(
                ctx.incoming_sensor, timeout_s=ctx.status_timeout_s
            ).status
        except (DagsterUnavailable, DagsterError) as exc:
            state, reach = "unknown", ctx.dagster_reach(exc)
    return StreamingStatus(
        sensor=ctx.incoming_sensor, state=state, dagster=reach, backlog=backlog(ctx)
    )


@router.get(
    "/status",
    response_model=StreamingStatus,
    summary="Streaming queue status",
    responses={503: {"model": ErrorBody}},
)
def get_streaming(ctx: Annotated[ApiContext, Depends(api_context)]) -> StreamingStatus:
    """Return the incoming sensor's state and the input folder's backlog.

    The state is ``unknown`` when Dagster does not answer; the backlog is the files in the
    input folder not registered yet.
    """
    return streaming_status(ctx)


@router.post("/start", response_model=StreamingStatus, summary="Start streaming", responses=_ERRORS)
def start_streaming(ctx: Annotated[ApiContext, Depends(api_context)]) -> StreamingStatus:
    """Start the incoming sensor in Dagster (as the UI's toggle); return the new state."""
    return streaming_status(ctx, ctx.dagster.start_sensor(ctx.incoming_sensor))


@router.post("/stop", response_model=StreamingStatus, summary="Stop streaming", responses=_ERRORS)
def stop_streaming(ctx: Annotated[ApiContext, Depends(api_context)]) -> StreamingStatus:
    """Stop the incoming sensor in Dagster (as the UI's toggle); return the new state."""
    return streaming_status(ctx, ctx.dagster.stop_sensor(ctx.incoming_sensor))
