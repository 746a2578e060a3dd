"""Image a group's calibrated Measurement Set with WSClean and register every product.

All integrations are first phased to the central one (the group's field: its own name, or
``{calibrator}_t{i}`` on a calibrator group, as the storage document's examples), so one
WSClean run images the whole ~5 minutes. Products are ``{group_id}-{field}-{type}.fits`` in
``{products}/images`` (image, residual, model, psf, and our primary beam ``pb`` and
``image-pb``, the primary-beam-corrected image, blank below the cutoff). Each gets an ``images``
row (upserted: a re-run updates, never duplicates) with beam, noise, dynamic range, geometry,
calibration state and the radiometer-equation noise of the data imaged.

With a self-calibration policy, a calibrated group's first image writes its clean model to
``MODEL_DATA`` and :mod:`.selfcal_step` runs its rounds; the image kept (``-selfcal{k}`` in
its name when a round was kept) is the one registered, with ``selfcal_applied`` set, and every
round goes to ``selfcal_rounds``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from astropy.io import fits

from dsa110_assets.calibration.selfcal_policy import SelfcalPolicy
from dsa110_assets.imaging.image_stats import ImageStats, image_statistics
from dsa110_assets.imaging.imaging_ms import channel_bin, write_imaging_ms
from dsa110_assets.imaging.primary_beam import primary_beam_image, write_pb_products
from dsa110_assets.imaging.radiometer import expected_image_noise
from dsa110_assets.imaging.rephase import phase_to_common_centre
from dsa110_assets.imaging.thumbnail import make_thumbnail
from dsa110_assets.imaging.wsclean import WSCleanParams, WSCleanResult, run_wsclean
from dsa110_assets.processing.selfcal_step import (
    RoundImage,
    SelfcalOutcome,
    SelfcalRound,
    measure,
    model_column_set_aside,
    self_calibrate,
)
from dsa110_assets.registry import Registry, StageOutcome, record_stage
from dsa110_assets.registry.products import (
    CalState,
    MSRecord,
    cal_state,
    group_calibrator,
    record_thumbnail,
    register_images,
)
from dsa110_assets.registry.selfcal import record_selfcal_rounds
from dsa110_assets.registry.stage_run import stage_run
from dsa110_assets.safe_fs import remove_path
from dsa110_assets.settings import Settings
from dsa110_assets.storage.placement import Tier, tier_root
from dsa110_assets.storage.products import images_folder, thumbnail_path
from dsa110_assets.timing import Timings

STAGE = "image"
#: The widest channel the imager gets (Hz): DSA-110's 244 kHz channels are averaged in fours.
#: The image's beam is about 73 x 44 arcsec (Briggs 0.5 on a compact array), so a point source
#: keeps >= 99.4% of its peak to the primary beam's half-power radius (1.36 deg at 1.4 GHz)
#: and >= 99% to 1.8 deg (:func:`~dsa110_assets.imaging.imaging_ms.bandwidth_smearing_peak`
#: on the minor axis). ``bench/imaging_levers.py`` measured it on a full-size group against
#: full resolution: fluxes within 0.22% to 1.9 deg, noise +0.25%, WSClean 15-27% faster than
#: with channel pairs.
MAX_CHANNEL_WIDTH_HZ = 1.0e6
THUMBNAIL_STAGE = "thumbnail"


@dataclass
class ImagingOutcome:
    """What one imaging run made and measured (for the registry and the asset's metadata)."""

    field: str
    name: str
    products: dict[str, Path]
    stats: ImageStats
    residual_noise_jy: float
    expected_noise_jy: float
    cal_applied: bool
    calibrator: str | None
    cal_method: str = "uncalibrated"
    cal_age_h: float | None = None
    timings: dict[str, float] = field(default_factory=dict)
    command: list[str] = field(default_factory=list)
    selfcal_rounds: list[SelfcalRound] = field(default_factory=list)
    selfcal_applied: bool = False
    selfcal_skipped: str = ""  # why no self-calibration round ran, if none did
    channels_averaged: int = 1  # adjacent channels averaged into each imaged channel

    @property
    def image(self) -> Path:
        """The main (restored) image."""
        return self.products["image"]


def stamp_calibration_state(
    path: Path, applied: bool, method: str, age_h: float | None, group_id: str
) -> None:
    """Write the calibration state into ``path``'s primary FITS header, atomically.

    ``CALSTATE`` = ``CALIBRATED`` or ``UNCALIBRATED`` (a quick look), ``CALMETH`` the method
    (calibrator, interpolated, nearest, field-model, uncalibrated), ``CALAGE`` the hours to
    the gain solution applied, and a ``HISTORY`` card; so a FITS file taken away from the
    registry still says whether its fluxes can be trusted. The header is rewritten into a
    temporary file beside it and renamed over the original.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with fits.open(path, memmap=False) as hdul:
            header = hdul[0].header
            header["CALSTATE"] = (
                "CALIBRATED" if applied else "UNCALIBRATED",
                "quick look if UNCALIBRATED",
            )
            header["CALMETH"] = (method, "calibrator/interpolated/nearest/field-model")
            if age_h is not None:
                header["CALAGE"] = (round(float(age_h), 4), "[h] to the gain solution applied")
            elif "CALAGE" in header:
                del header["CALAGE"]
            header.add_history(
                f"dsa110-assets: {group_id} {'calibrated' if applied else 'UNCALIBRATED'}"
                f" ({method})"
            )
            hdul.writeto(tmp, output_verify="silentfix")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _products(result: WSCleanResult, ms_path: Path, pb_cutoff: float) -> dict[str, Path]:
    """Return WSClean's products by type, plus the primary beam and the corrected image."""
    products = {
        kind: path
        for kind, path in (
            ("image", result.image),
            ("residual", result.residual),
            ("model", result.model),
            ("psf", result.psf),
        )
        if path is not None
    }
    pb = primary_beam_image(ms_path, products["image"])
    products["pb"], products["image-pb"] = write_pb_products(
        products["image"], pb, cutoff=pb_cutoff
    )
    return products


def _stamp_all(products: dict[str, Path], state: CalState, group_id: str) -> None:
    """Stamp the calibration state into every product whose fluxes it qualifies."""
    for kind in ("image", "image-pb", "residual", "model"):
        if kind in products:
            stamp_calibration_state(
                products[kind], state.applied, state.method, state.age_h, group_id
            )


def _field_label(
    registry: Registry, record: MSRecord, field_id: int, field_name: str
) -> tuple[str | None, str]:
    """Return the group's calibrator (if any) and the label of its phased field.

    By index, not by name: on a calibrator group the field of the calibrator's closest
    approach is named after it (``3C286``, for CASA), and it may be the central one.
    """
    calibrator = group_calibrator(registry, record.group_id)
    return calibrator, f"{calibrator}_t{field_id}" if calibrator else field_name


def _imaged_detail(outcome: ImagingOutcome) -> str:
    """Return the done message of an imaging run: noise, peak and calibration."""
    s = outcome.stats
    return (
        f"{outcome.name}: noise {s.noise_jy * 1e3:.2f} mJy/beam, peak {s.peak_jy:.3f} Jy/beam"
        + (f" ({outcome.cal_method})" if outcome.cal_applied else " (uncalibrated quick look)")
    )


def image_and_register(
    settings: Settings,
    registry: Registry,
    record: MSRecord,
    params: WSCleanParams,
    *,
    wsclean_bin: str = "wsclean",
    timeout_s: float | None = None,
    pb_cutoff: float = 0.2,
    selfcal: SelfcalPolicy | None = None,
    max_channel_width_hz: float | None = MAX_CHANNEL_WIDTH_HZ,
) -> ImagingOutcome:
    """Phase, image (and self-calibrate), primary-beam-correct and register ``record``'s MS.

    The imager gets a copy of the MS phased to the central field with adjacent channels
    averaged up to ``max_channel_width_hz``
    (:func:`~dsa110_assets.imaging.imaging_ms.write_imaging_ms`: one pass instead of the
    in-place rephase, and fewer visibilities to grid), on the SSD scratch tier under a
    staging name, removed once the image is made. ``None``, or channels already that wide:
    the MS itself is rephased in place and imaged as it is.
    Self-calibration runs when ``selfcal`` is enabled and the group is calibrated (an
    uncalibrated quick look has no flux scale to keep).

    Raises :class:`dsa110_assets.imaging.wsclean.WSCleanError` (with WSClean's output tail)
    after recording the stage as failed.
    """
    timings = Timings()
    with (
        stage_run(registry, record.group_id, STAGE, "phasing and imaging") as run,
        _ms_to_image(settings, record, max_channel_width_hz, timings) as imaged,
    ):
        ms, field_id, field_name, chan_bin = imaged
        calibrator, field_label = _field_label(registry, record, field_id, field_name)
        outcome = _image(
            settings, record, ms, params, f"{record.group_id}-{field_label}",
            state=cal_state(registry, record.path), wsclean_bin=wsclean_bin,
            timeout_s=timeout_s, pb_cutoff=pb_cutoff, selfcal=selfcal, timings=timings,
        )  # fmt: skip
        outcome = replace(
            outcome, field=field_label, calibrator=calibrator, channels_averaged=chan_bin
        )
        outcome.timings = dict(timings)
        _register_images(registry, record, outcome)
        run.done(_imaged_detail(outcome))
    return outcome


@contextlib.contextmanager
def _ms_to_image(
    settings: Settings, record: MSRecord, max_channel_width_hz: float | None, timings: Timings
) -> Iterator[tuple[Path, int, str, int]]:
    """Yield the MS the imager reads, its field, the field's name and the channels averaged.

    No averaging (``max_channel_width_hz`` None, or channels already that wide): ``record``'s
    own MS, rephased in place. Else an averaged imaging copy on the SSD scratch tier (a
    staging name: stale-staging cleanup removes it if this process dies), removed on the way
    out.
    """
    chan_bin = 1 if max_channel_width_hz is None else channel_bin(record.path, max_channel_width_hz)
    if chan_bin == 1:
        with timings.measure("rephase_s"):
            phased = phase_to_common_centre(record.path)
        yield record.path, phased.field_id, phased.field_name, 1
        return
    folder = tier_root(settings, Tier.SSD_SCRATCH)
    out = folder / f".{record.path.name}.imaging.staging-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        with timings.measure("imaging_ms_s"):
            copy = write_imaging_ms(record.path, out, chan_bin=chan_bin)
        yield copy.path, copy.field_id, copy.field_name, chan_bin
    finally:
        remove_path(out)


def _image(
    settings: Settings,
    record: MSRecord,
    ms: Path,
    params: WSCleanParams,
    name: str,
    *,
    state: CalState,
    wsclean_bin: str,
    timeout_s: float | None,
    pb_cutoff: float,
    selfcal: SelfcalPolicy | None,
    timings: Timings,
) -> ImagingOutcome:
    """Image ``ms`` (and self-calibrate it), make the beam products, measure the image.

    The expected (radiometer) noise is computed on ``ms``, the visibilities WSClean grids:
    an imaging copy keeps each bin's unflagged bandwidth, so the sum of bandwidth x time is
    ``record``'s own and only the Briggs factor is the copy's (and half the channels to read).
    It is computed first, so the self-calibration policy can skip the rounds on a first
    image already near it; a group the policy skips outright is imaged once, without its
    model written back.
    """
    folder = images_folder(settings)
    folder.mkdir(parents=True, exist_ok=True)

    def wsclean(run_params: WSCleanParams, run_name: str) -> WSCleanResult:
        return run_wsclean(
            ms, folder, run_name, run_params, wsclean_bin=wsclean_bin, timeout_s=timeout_s
        )

    with timings.measure("radiometer_s"):
        expected = expected_image_noise(
            ms,
            data_column=params.data_column,
            weighting=params.weight,
            image_size=params.size,
            scale_arcsec=params.scale_arcsec,
        )
    result, calibrated = _image_maybe_self_calibrated(
        ms, params, name, wsclean, selfcal, state, timings, thermal_noise_jy=expected
    )
    with timings.measure("primary_beam_s"):
        products = _products(result, ms, pb_cutoff)
    _stamp_all(products, state, record.group_id)
    with timings.measure("statistics_s"):
        stats = image_statistics(products["image"])
        residual = image_statistics(products["residual"])
    return ImagingOutcome(
        field="",
        name=products["image"].name.removesuffix("-image.fits"),
        products=products,
        stats=stats,
        residual_noise_jy=residual.noise_jy,
        expected_noise_jy=expected,
        cal_applied=state.applied,
        calibrator=None,
        cal_method=state.method,
        cal_age_h=state.age_h,
        command=list(result.command),
        selfcal_rounds=calibrated.rounds,
        selfcal_applied=calibrated.applied,
        selfcal_skipped=calibrated.skipped,
    )


def _image_maybe_self_calibrated(
    ms: Path,
    params: WSCleanParams,
    name: str,
    wsclean,  # noqa: ANN001  (_image's closure)
    selfcal: SelfcalPolicy | None,
    state: CalState,
    timings: Timings,
    *,
    thermal_noise_jy: float,
) -> tuple[WSCleanResult, _Rounds]:
    """Image once, or with self-calibration when the policy wants it; say which and why."""
    skipped = (
        "no self-calibration policy"
        if selfcal is None
        else selfcal.skip_before_imaging(state.applied, state.method)
    )
    if selfcal is None or skipped is not None:
        result = wsclean(params, name)
        timings["wsclean_s"] = result.duration_s
        return result, _Rounds(skipped=skipped or "")
    with model_column_set_aside(ms):
        result, outcome = _image_self_calibrated(
            ms, params, name, wsclean, selfcal, timings, thermal_noise_jy=thermal_noise_jy
        )
    return result, _Rounds(outcome.rounds, outcome.applied, outcome.skipped)


@dataclass(frozen=True)
class _Rounds:
    """What self-calibration did to one image: its rounds, whether one was kept, or why not."""

    rounds: list[SelfcalRound] = field(default_factory=list)
    applied: bool = False
    skipped: str = ""


def _image_self_calibrated(
    ms_path: Path,
    params: WSCleanParams,
    name: str,
    wsclean,  # noqa: ANN001  (image_and_register's closure)
    policy: SelfcalPolicy,
    timings: Timings,
    *,
    thermal_noise_jy: float | None,
) -> tuple[WSCleanResult, SelfcalOutcome]:
    """Image with the model written back, run the self-cal rounds, return what was kept."""
    with_model = replace(params, save_model_to_ms=True)
    first_result = wsclean(with_model, name)
    timings["wsclean_s"] = first_result.duration_s
    first = measure(first_result, params.data_column)

    reuse = _reuse_psf_args(first_result) if policy.reuse_psf else ()
    round_params = replace(with_model, extra_args=(*with_model.extra_args, *reuse))

    def image(column: str, suffix: str) -> RoundImage:
        result = wsclean(replace(round_params, data_column=column), f"{name}-{suffix}")
        timings["selfcal_wsclean_s"] = timings.get("selfcal_wsclean_s", 0.0) + result.duration_s
        return measure(result, column)

    with timings.measure("selfcal_s"):
        outcome = self_calibrate(
            ms_path, first, image, policy, discard=_discard, thermal_noise_jy=thermal_noise_jy
        )
    if outcome.applied:
        _discard(first_result)
    return outcome.final.result, outcome


def _reuse_psf_args(first: WSCleanResult) -> tuple[str, ...]:
    """Return WSClean's arguments to load ``first``'s PSF (none if it made no single one)."""
    if first.psf is None or not first.psf.name.endswith("-psf.fits"):
        return ()
    return ("-reuse-psf", str(first.psf)[: -len("-psf.fits")])


def _discard(result: WSCleanResult) -> None:
    """Remove the products of an image that is not kept (the registry keeps its numbers)."""
    for path in result.products:
        Path(path).unlink(missing_ok=True)


def _image_row(
    record: MSRecord, outcome: ImagingOutcome, image_type: str, path: Path, now: float
) -> dict[str, object]:
    """Return the ``images`` row of one product (noise, peak and DR on the main image only)."""
    s = outcome.stats
    main = image_type == "image"
    return {
        "path": str(path),
        "ms_path": str(record.path),
        "group_id": record.group_id,
        "image_type": {"image-pb": "pbcor"}.get(image_type, image_type),
        "field_name": outcome.field,
        "center_ra_deg": s.centre_ra_deg,
        "center_dec_deg": s.centre_dec_deg,
        "freq_hz": s.ref_freq_hz,
        "bandwidth_hz": s.bandwidth_hz,
        "beam_major_arcsec": s.beam_major_arcsec,
        "beam_minor_arcsec": s.beam_minor_arcsec,
        "beam_pa_deg": s.beam_pa_deg,
        "noise_jy": s.noise_jy if main else None,
        "peak_jy": s.peak_jy if main else None,
        "dynamic_range": s.dynamic_range if main else None,
        "image_size": s.nx,
        "cell_arcsec": s.cell_arcsec,
        "cal_applied": int(outcome.cal_applied),
        "selfcal_applied": int(outcome.selfcal_applied),
        "expected_noise_jy": outcome.expected_noise_jy if main else None,
        "created_at": now,
    }


def _register_images(registry: Registry, record: MSRecord, outcome: ImagingOutcome) -> None:
    """Register every product of the run and mark the MS imaged."""
    now = time.time()
    rows = [
        _image_row(record, outcome, image_type, path, now)
        for image_type, path in outcome.products.items()
    ]
    register_images(registry, record.path, outcome.field, rows)
    record_selfcal_rounds(registry, record.group_id, outcome.selfcal_rounds)


def thumbnail_and_register(
    settings: Settings, registry: Registry, group_id: str, image: Path
) -> Path:
    """Write a PNG preview of ``image`` and record it on the image's ``images`` row.

    The preview is ``{products}/thumbnails/{group_id}.png``, regenerable from the FITS at any
    time.
    """
    png = thumbnail_path(settings, group_id)
    png.parent.mkdir(parents=True, exist_ok=True)
    make_thumbnail(image, png)
    record_thumbnail(registry, image, png)
    record_stage(registry, group_id, THUMBNAIL_STAGE, StageOutcome.DONE, png.name)
    return png
