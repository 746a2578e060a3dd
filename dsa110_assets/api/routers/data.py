"""``/api/data``: observations and images, paged, and each image's FITS file and thumbnail.

Files are served only from the SSD products tier: a registry path anywhere else (a row
edited by hand, a symlink out of the tier) is refused by the placement rule
(:func:`~dsa110_assets.storage.placement.check_placement`), so the API cannot be made to
serve arbitrary files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import FileResponse

from dsa110_assets.api import queries
from dsa110_assets.api.context import ApiContext, api_context
from dsa110_assets.api.inputs import (
    IMAGE_TYPES,
    PAGE_SIZE_RULE,
    check_page,
    day_bounds,
    parse_day,
    parse_image_type,
    parse_int,
    parse_page,
    parse_state,
)
from dsa110_assets.api.models import (
    Beam,
    Calibration,
    ErrorBody,
    ImageItem,
    ImagePage,
    Observation,
    ObservationPage,
)
from dsa110_assets.registry.queue import QueueState
from dsa110_assets.settings import NumberRule
from dsa110_assets.storage.placement import WrongTierError, check_placement

router = APIRouter(prefix="/api/data", tags=["data"])

#: SQLite's integer range: ids outside it are malformed, not merely unknown.
IMAGE_ID_RULE = NumberRule(int, 1, 2**63 - 1)

PageQuery = Annotated[str | None, Query(description="page number, from 1 (default 1)")]
SizeQuery = Annotated[
    str | None,
    Query(
        description=f"rows per page, {PAGE_SIZE_RULE.low:g}-{PAGE_SIZE_RULE.high:g} (default 50)"
    ),
]
DateQuery = Annotated[str | None, Query(description="UTC date of the observation, YYYY-MM-DD")]
_LISTING_ERRORS = {422: {"model": ErrorBody}, 503: {"model": ErrorBody}}
_FILE_ERRORS = {
    403: {"model": ErrorBody},
    404: {"model": ErrorBody},
    422: {"model": ErrorBody},
    503: {"model": ErrorBody},
}


def _bounds(date: str | None) -> tuple[str | None, str | None]:
    """Return the group_id bounds of the ``date`` parameter (None, None without one)."""
    return day_bounds(parse_day("date", date)) if date is not None else (None, None)


@router.get(
    "/observations",
    response_model=ObservationPage,
    summary="List observations",
    responses=_LISTING_ERRORS,
)
def list_observations(
    ctx: Annotated[ApiContext, Depends(api_context)],
    page: PageQuery = None,
    page_size: SizeQuery = None,
    date: DateQuery = None,
    state: Annotated[
        str | None,
        Query(description="queue state: " + ", ".join(s.value for s in QueueState)),
    ] = None,
) -> ObservationPage:
    """Return one page of groups (observations), newest first.

    Each with its queue state, files, retries and error, Measurement Set, calibration,
    flagged fraction and stage outcomes.
    """
    asked = parse_page(page, page_size)
    lo, hi = _bounds(date)
    wanted = parse_state(state)
    state_value = wanted.value if wanted is not None else None
    with ctx.registry() as conn:
        total = queries.count_observations(conn, lo, hi, state_value)
        pages = check_page(asked, total)
        rows = queries.observations(conn, lo, hi, state_value, asked.size, asked.offset)
    return ObservationPage(
        page=asked.number,
        page_size=asked.size,
        total=total,
        pages=pages,
        items=[Observation(**{**r, "has_calibrator": bool(r["has_calibrator"])}) for r in rows],
    )


def image_item(row: dict[str, Any], request: Request) -> ImageItem:
    """Return an ``images`` row as the API shows it, with its file URLs."""
    image_id = row["id"]
    thumbnail = (
        str(request.url_for("image_thumbnail", image_id=str(image_id)))
        if row["thumbnail_path"]
        else None
    )
    return ImageItem(
        id=image_id,
        group_id=row["group_id"],
        image_type=row["image_type"],
        name=Path(row["path"]).name,
        field_name=row["field_name"],
        center_ra_deg=row["center_ra_deg"],
        center_dec_deg=row["center_dec_deg"],
        freq_hz=row["freq_hz"],
        bandwidth_hz=row["bandwidth_hz"],
        noise_jy=row["noise_jy"],
        expected_noise_jy=row["expected_noise_jy"],
        peak_jy=row["peak_jy"],
        dynamic_range=row["dynamic_range"],
        image_size=row["image_size"],
        cell_arcsec=row["cell_arcsec"],
        beam=Beam(
            major_arcsec=row["beam_major_arcsec"],
            minor_arcsec=row["beam_minor_arcsec"],
            pa_deg=row["beam_pa_deg"],
        ),
        calibration=Calibration(
            applied=bool(row["cal_applied"]),
            status=row["cal_status"],
            method=row["cal_method"],
            age_h=row["cal_age_h"],
            selfcal_applied=bool(row["selfcal_applied"]),
        ),
        created_at=row["created_at"],
        fits_url=str(request.url_for("image_fits", image_id=str(image_id))),
        thumbnail_url=thumbnail,
    )


@router.get("/images", response_model=ImagePage, summary="List images", responses=_LISTING_ERRORS)
def list_images(
    request: Request,
    ctx: Annotated[ApiContext, Depends(api_context)],
    page: PageQuery = None,
    page_size: SizeQuery = None,
    date: DateQuery = None,
    image_type: Annotated[
        str | None, Query(description="one product type: " + ", ".join(IMAGE_TYPES))
    ] = None,
) -> ImagePage:
    """Return one page of images, newest group first.

    Each with its noise, beam and calibration, and the URLs of its FITS file and thumbnail.
    """
    asked = parse_page(page, page_size)
    lo, hi = _bounds(date)
    kind = parse_image_type(image_type)
    with ctx.registry() as conn:
        total = queries.count_images(conn, lo, hi, kind)
        pages = check_page(asked, total)
        rows = queries.images(conn, lo, hi, kind, asked.size, asked.offset)
    return ImagePage(
        page=asked.number,
        page_size=asked.size,
        total=total,
        pages=pages,
        items=[image_item(r, request) for r in rows],
    )


def served_file(ctx: ApiContext, image_id: str, which: str) -> Path:
    """Return the FITS (``which="fits"``) or thumbnail file of an image, checked.

    Raises
    ------
    InputError
        ``image_id`` is not an id (422).
    HTTPException
        404 for an unknown image, one without a thumbnail, or a file gone from disk; 403 for
        a path outside the products tier.
    """
    number = parse_int("image_id", image_id, IMAGE_ID_RULE, 0)
    with ctx.registry() as conn:
        files = queries.image_files(conn, number)
    if files is None:
        raise HTTPException(404, f"no image with id {number}")
    fits, thumbnail = files
    text = fits if which == "fits" else thumbnail
    if not text:
        raise HTTPException(404, f"image {number} has no thumbnail")
    path = Path(text)
    try:
        check_placement(ctx.settings, "images" if which == "fits" else "thumbnails", path)
    except WrongTierError as exc:
        raise HTTPException(403, f"image {number}: not served: {exc}") from None
    if not path.is_file():
        raise HTTPException(404, f"image {number}: {path.name} is not on disk")
    return path


@router.get(
    "/images/{image_id}/fits",
    name="image_fits",
    summary="An image's FITS file",
    response_class=FileResponse,
    responses={200: {"content": {"application/fits": {}}}, **_FILE_ERRORS},
)
def image_fits(image_id: str, ctx: Annotated[ApiContext, Depends(api_context)]) -> FileResponse:
    """Return the image's FITS file (``application/fits``)."""
    path = served_file(ctx, image_id, "fits")
    return FileResponse(path, media_type="application/fits", filename=path.name)


@router.get(
    "/images/{image_id}/thumbnail",
    name="image_thumbnail",
    summary="An image's thumbnail",
    response_class=FileResponse,
    responses={200: {"content": {"image/png": {}}}, **_FILE_ERRORS},
)
def image_thumbnail(
    image_id: str, ctx: Annotated[ApiContext, Depends(api_context)]
) -> FileResponse:
    """Return the image's PNG preview."""
    path = served_file(ctx, image_id, "thumbnail")
    return FileResponse(path, media_type="image/png", filename=path.name)
