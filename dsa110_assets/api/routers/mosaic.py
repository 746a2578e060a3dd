"""``/api/mosaic``: a mosaic over a time range, launched as Dagster runs, and its state.

How a range maps onto the platform's daily mosaic partitions is in
:mod:`dsa110_assets.api.mosaic_runs`: one run of ``daily_mosaic`` per UTC day, all tagged
with the request's name, which ``/api/mosaic/status/{name}`` looks up.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException

from dsa110_assets.api import queries
from dsa110_assets.api.context import ApiContext, api_context
from dsa110_assets.api.dagster_client import RunInfo
from dsa110_assets.api.models import (
    ErrorBody,
    MosaicCreate,
    MosaicProduct,
    MosaicRun,
    MosaicStatus,
)
from dsa110_assets.api.mosaic_runs import (
    END_TAG,
    MOSAIC_ASSET,
    MOSAIC_JOB,
    NAME_TAG,
    PARTITION_TAG,
    START_TAG,
    MosaicState,
    check_partitions,
    is_mosaic_name,
    plan_mosaic,
    request_state,
    run_state,
    run_tags,
)

router = APIRouter(prefix="/api/mosaic", tags=["mosaic"])

NOTE = (
    f"one {MOSAIC_JOB} run of {MOSAIC_ASSET} per UTC day the range touches; each day's"
    " mosaics (one per hourly RA tile) cover the whole day"
)


def mosaic_status(
    ctx: ApiContext, name: str, runs: list[RunInfo], products: bool = True
) -> MosaicStatus:
    """Return a request's state from its runs, with its products once it is done."""
    state = request_state(r.status for r in runs)
    days = sorted({r.tags[PARTITION_TAG] for r in runs if PARTITION_TAG in r.tags})
    found: list[MosaicProduct] = []
    if products and state is MosaicState.DONE:
        with ctx.registry() as conn:
            found = [
                MosaicProduct(
                    path=m["path"],
                    date=m["date"],
                    n_images=m["n_images"],
                    effective_noise_jy=m["effective_noise_jy"],
                    thumbnail_path=m["thumbnail_path"],
                )
                for m in queries.mosaics_of_days(conn, days)
            ]
    tags = runs[0].tags if runs else {}
    return MosaicStatus(
        name=name,
        state=state.value,
        start=tags.get(START_TAG),
        end=tags.get(END_TAG),
        days=days,
        runs=[
            MosaicRun(
                run_id=r.run_id,
                partition=r.tags.get(PARTITION_TAG),
                dagster_status=r.status,
                state=run_state(r.status).value,
            )
            for r in sorted(runs, key=lambda r: r.tags.get(PARTITION_TAG, ""))
        ],
        products=found,
        note=NOTE,
    )


@router.post(
    "/create",
    response_model=MosaicStatus,
    status_code=202,
    summary="Create mosaic",
    responses={422: {"model": ErrorBody}, 502: {"model": ErrorBody}, 503: {"model": ErrorBody}},
)
def create_mosaic(
    body: MosaicCreate, ctx: Annotated[ApiContext, Depends(api_context)]
) -> MosaicStatus:
    """Launch the mosaic of ``[start, end)`` as Dagster runs; return its ``name`` and state.

    The range must lie in days whose daily partition exists (from ``PIPELINE_DAILY_START``
    to yesterday, UTC) and span at most 31 days.
    """
    plan = plan_mosaic(body.start, body.end)
    first, last = ctx.dagster.partition_bounds(MOSAIC_JOB)
    check_partitions(plan.days, first, last)
    runs = [
        ctx.dagster.launch_run(MOSAIC_JOB, [[MOSAIC_ASSET]], run_tags(plan, day))
        for day in plan.days
    ]
    return mosaic_status(ctx, plan.name, runs, products=False)


@router.get(
    "/status/{name}",
    response_model=MosaicStatus,
    summary="Mosaic status",
    responses={404: {"model": ErrorBody}, 502: {"model": ErrorBody}, 503: {"model": ErrorBody}},
)
def get_mosaic(name: str, ctx: Annotated[ApiContext, Depends(api_context)]) -> MosaicStatus:
    """Return the request's state (queued, running, done, failed), with its mosaics when done.

    An unknown name (or one not of the shape ``create`` makes) is 404.
    """
    runs = ctx.dagster.runs_tagged(NAME_TAG, name) if is_mosaic_name(name) else []
    if not runs:
        raise HTTPException(404, f"no mosaic named {name!r}")
    return mosaic_status(ctx, name, runs)
