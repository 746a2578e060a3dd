"""``GET /metrics``: the Prometheus scrape (text exposition format)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import PlainTextResponse

from dsa110_assets.api.backlog import input_backlog
from dsa110_assets.api.context import ApiContext, api_context
from dsa110_assets.api.metrics import collect
from dsa110_assets.api.prometheus import CONTENT_TYPE, render
from dsa110_assets.api.queries import RegistryUnavailable

router = APIRouter(tags=["metrics"])


@router.get(
    "/metrics",
    response_class=PlainTextResponse,
    summary="Prometheus metrics",
    responses={200: {"content": {CONTENT_TYPE: {}}}},
)
def metrics(ctx: Annotated[ApiContext, Depends(api_context)]) -> PlainTextResponse:
    """Return groups by state, backlogs, stage latencies, tier usage, flagging and noise.

    Always 200 while the server runs: an unreadable registry is ``dsa110_registry_up 0``
    (the tier metrics are still there), so the scrape itself never fails.
    """
    reading = ctx.tiers.reading()
    try:
        with ctx.registry() as conn:
            backlog = input_backlog(ctx.settings.input_dir, conn).files
            families = collect(conn, reading.usages, reading.alerts, backlog)
    except RegistryUnavailable:
        families = collect(None, reading.usages, reading.alerts, None)
    return PlainTextResponse(render(families), media_type=CONTENT_TYPE)
