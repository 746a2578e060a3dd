"""The API's response and request bodies, as Pydantic models (and so its OpenAPI schema).

Times are Unix seconds (float, UTC) as the registry stores them, plus ISO strings where a
person reads them; paths are the registry's absolute paths; URLs are absolute, built from the
request, so a client follows them as they are. The tier usage and alerts are the storage
lifecycle's own dataclasses (:mod:`dsa110_assets.storage.usage`), served as they are.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from dsa110_assets.storage.usage import TierAlert, TierUsage


class ErrorBody(BaseModel):
    """Every error: one line saying what was wrong."""

    detail: str = Field(examples=["page: 9 is out of range: 120 rows make 3 pages of 50"])


# --- status --------------------------------------------------------------------------------


class DayProducts(BaseModel):
    """What one UTC day produced."""

    date: str
    groups: int
    ms: int
    images: int
    mosaics: int


class GroupLatency(BaseModel):
    """A group, when its last subband file and its image were registered, and the gap."""

    group_id: str
    state: str | None
    last_file_at: float | None
    image_registered_at: float | None
    latency_s: float | None = Field(
        description="image registered minus last subband file registered, seconds"
    )


class DagsterReach(BaseModel):
    """Whether Dagster answered, and why not."""

    url: str
    reachable: bool
    error: str | None = None


class PipelineStatus(BaseModel):
    """``GET /api/status``."""

    generated_at: float
    registry: str
    queue: dict[str, int] = Field(description="groups by queue state, every state present")
    products_per_day: list[DayProducts]
    tiers: list[TierUsage] = Field(description="bytes and free space per storage tier")
    tier_alerts: list[TierAlert] = Field(
        description="tiered-storage thresholds crossed (staging 10/30 GB, 90% full)"
    )
    latest_group: GroupLatency | None = Field(description="the newest group in the queue")
    latest_imaged_group: GroupLatency | None = Field(
        description="the newest group with an image: its latency from last file to image"
    )
    sensors: dict[str, str] = Field(
        description="sensor name -> RUNNING, STOPPED, or unknown when Dagster did not answer"
    )
    dagster: DagsterReach


# --- streaming -----------------------------------------------------------------------------


class Backlog(BaseModel):
    """Files in the input folder not registered yet."""

    input_dir: str
    files: int
    bytes: int
    incomplete: int = Field(description="of which the correlator is still writing")
    rejected: int = Field(description="of which ingest refused (see ingest_rejects)")
    oldest_mtime: float | None
    pending_groups: int = Field(description="groups complete and waiting for a run")


class StreamingStatus(BaseModel):
    """``/api/streaming/*``: the incoming sensor's state and the input backlog."""

    sensor: str
    state: str = Field(description="RUNNING, STOPPED, or unknown when Dagster did not answer")
    dagster: DagsterReach
    backlog: Backlog


# --- data ----------------------------------------------------------------------------------


class Observation(BaseModel):
    """One group (observation) of the processing queue."""

    group_id: str
    state: str
    obs_start: float | None
    received_at: float
    last_update: float
    subbands: int
    expected_subbands: int | None
    missing_subbands: list[int]
    retry_count: int
    error: str | None
    error_message: str | None
    processing_stage: str | None
    has_calibrator: bool
    calibrators: list[str]
    ms_path: str | None
    cal_method: str | None
    cal_age_h: float | None
    flagged_fraction: float | None
    stages: dict[str, str] = Field(description="stage -> outcome (stage_status)")


class Beam(BaseModel):
    """The restoring beam."""

    major_arcsec: float | None
    minor_arcsec: float | None
    pa_deg: float | None


class Calibration(BaseModel):
    """How the image's Measurement Set was calibrated."""

    applied: bool
    status: str | None = Field(description="ms_index.cal_status: applied / uncalibrated")
    method: str | None = Field(
        description="calibrator, interpolated, nearest, field-model or uncalibrated"
    )
    age_h: float | None = Field(description="hours between the group and its gain solution")
    selfcal_applied: bool


class ImageItem(BaseModel):
    """One registered image product, with URLs of its FITS file and thumbnail."""

    id: int
    group_id: str | None
    image_type: str
    name: str
    field_name: str | None
    center_ra_deg: float | None
    center_dec_deg: float | None
    freq_hz: float | None
    bandwidth_hz: float | None
    noise_jy: float | None
    expected_noise_jy: float | None
    peak_jy: float | None
    dynamic_range: float | None
    image_size: int | None
    cell_arcsec: float | None
    beam: Beam
    calibration: Calibration
    created_at: float
    fits_url: str
    thumbnail_url: str | None


class ObservationPage(BaseModel):
    """A page of observations, newest first."""

    page: int
    page_size: int
    total: int
    pages: int
    items: list[Observation]


class ImagePage(BaseModel):
    """A page of images, newest group first."""

    page: int
    page_size: int
    total: int
    pages: int
    items: list[ImageItem]


# --- mosaics -------------------------------------------------------------------------------


class MosaicCreate(BaseModel):
    """``POST /api/mosaic/create``: the time range, ISO 8601 (UTC unless it has an offset)."""

    model_config = ConfigDict(extra="forbid")

    start: str = Field(examples=["2026-01-15T00:00:00"])
    end: str = Field(examples=["2026-01-16T00:00:00"], description="exclusive")


class MosaicRun(BaseModel):
    """One Dagster run of a mosaic request (one UTC day)."""

    run_id: str
    partition: str | None
    dagster_status: str
    state: Literal["queued", "running", "done", "failed"]


class MosaicProduct(BaseModel):
    """A mosaic registered for one of the request's days."""

    path: str
    date: str | None
    n_images: int | None
    effective_noise_jy: float | None
    thumbnail_path: str | None


class MosaicStatus(BaseModel):
    """A mosaic request: its runs' state and, when done, its products."""

    name: str
    state: Literal["queued", "running", "done", "failed"]
    start: str | None
    end: str | None
    days: list[str]
    runs: list[MosaicRun]
    products: list[MosaicProduct]
    note: str = Field(
        description="how the request maps onto the daily mosaic partitions (whole UTC days)"
    )
