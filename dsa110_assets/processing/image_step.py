"""Image a group's calibrated Measurement Set with WSClean and register every product.

All integrations are first phased to the central one (the group's field: its own name, or
``{calibrator}_t{i}`` on a calibrator group, as the storage document's examples), so one
WSClean run images the whole ~5 minutes. Products are ``{group_id}-{field}-{type}.fits`` in
``{products}/images`` (image, residual, model, psf, and our primary beam ``pb`` and
``image-pb``, the primary-beam-corrected image, blank below the cutoff). Each gets an ``images``
row (upserted: a re-run updates, never duplicates) with beam, noise, dynamic range, geometry,
calibration state and the radiometer-equation noise of the data imaged.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path

from astropy.io import fits

from dsa110_assets.imaging.image_stats import ImageStats, image_statistics
from dsa110_assets.imaging.primary_beam import primary_beam_image, write_pb_products
from dsa110_assets.imaging.radiometer import expected_image_noise
from dsa110_assets.imaging.rephase import phase_to_common_centre
from dsa110_assets.imaging.thumbnail import make_thumbnail
from dsa110_assets.imaging.wsclean import WSCleanParams, run_wsclean
from dsa110_assets.processing.calibrate_step import MSRecord
from dsa110_assets.registry import Registry, StageOutcome, record_stage
from dsa110_assets.settings import Settings
from dsa110_assets.storage import product_path

STAGE = "image"
THUMBNAIL_STAGE = "thumbnail"


@dataclass
class ImagingOutcome:
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

    @property
    def image(self) -> Path:
        return self.products["image"]


def images_folder(settings: Settings) -> Path:
    return product_path(settings, "images", "x").parent


def group_calibrator(registry: Registry, group_id: str) -> str | None:
    """The calibrator a group was centred on (brightest in the beam), if any."""
    row = registry.execute(
        "SELECT has_calibrator, calibrators FROM processing_queue WHERE group_id = ?",
        (group_id,),
    ).fetchone()
    if row is None or not row[0] or not row[1]:
        return None
    listed = json.loads(row[1])
    return str(listed[0]["name"]) if listed else None


def _cal_state(registry: Registry, ms_path: Path) -> tuple[bool, str, float | None]:
    """(applied, method, gain age in hours) of the MS as the apply step recorded it."""
    row = registry.execute(
        "SELECT cal_applied, cal_method, cal_age_h FROM ms_index WHERE path = ?", (str(ms_path),)
    ).fetchone()
    if row is None:
        return False, "uncalibrated", None
    applied = bool(row[0])
    method = row[1] or ("calibrator" if applied else "uncalibrated")
    return applied, str(method), None if row[2] is None else float(row[2])


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


def image_and_register(
    settings: Settings,
    registry: Registry,
    record: MSRecord,
    params: WSCleanParams,
    *,
    wsclean_bin: str = "wsclean",
    timeout_s: float | None = None,
    pb_cutoff: float = 0.2,
) -> ImagingOutcome:
    """Phase, image, primary-beam-correct and register ``record``'s MS.

    Raises :class:`dsa110_assets.imaging.wsclean.WSCleanError` (with WSClean's output tail)
    after recording the stage as failed.
    """
    timings: dict[str, float] = {}
    record_stage(registry, record.group_id, STAGE, StageOutcome.RUNNING, "phasing and imaging")
    try:
        started = time.perf_counter()
        phased = phase_to_common_centre(record.path)
        timings["rephase_s"] = time.perf_counter() - started
        calibrator = group_calibrator(registry, record.group_id)
        # By index, not by name: on a calibrator group the field of the calibrator's closest
        # approach is named after it (``3C286``, for CASA), and it may be the central one.
        field_label = f"{calibrator}_t{phased.field_id}" if calibrator else phased.field_name
        name = f"{record.group_id}-{field_label}"
        folder = images_folder(settings)
        folder.mkdir(parents=True, exist_ok=True)
        result = run_wsclean(
            record.path, folder, name, params, wsclean_bin=wsclean_bin, timeout_s=timeout_s
        )
        timings["wsclean_s"] = result.duration_s
        started = time.perf_counter()
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
        pb = primary_beam_image(record.path, products["image"])
        pb_path, pbcor_path = write_pb_products(products["image"], pb, cutoff=pb_cutoff)
        products["pb"], products["image-pb"] = pb_path, pbcor_path
        timings["primary_beam_s"] = time.perf_counter() - started
        applied, method, age_h = _cal_state(registry, record.path)
        for kind in ("image", "image-pb", "residual", "model"):
            if kind in products:
                stamp_calibration_state(products[kind], applied, method, age_h, record.group_id)
        started = time.perf_counter()
        stats = image_statistics(products["image"])
        residual = image_statistics(products["residual"])
        expected = expected_image_noise(
            record.path,
            data_column=params.data_column,
            weighting=params.weight,
            image_size=params.size,
            scale_arcsec=params.scale_arcsec,
        )
        timings["statistics_s"] = time.perf_counter() - started
    except BaseException as exc:
        record_stage(
            registry,
            record.group_id,
            STAGE,
            StageOutcome.FAILED,
            str(exc) or f"interrupted ({type(exc).__name__})",
            error=type(exc).__name__,
        )
        raise
    outcome = ImagingOutcome(
        field=field_label,
        name=name,
        products=products,
        stats=stats,
        residual_noise_jy=residual.noise_jy,
        expected_noise_jy=expected,
        cal_applied=applied,
        calibrator=calibrator,
        cal_method=method,
        cal_age_h=age_h,
        timings=timings,
        command=list(result.command),
    )
    _register_images(registry, record, outcome)
    record_stage(
        registry,
        record.group_id,
        STAGE,
        StageOutcome.DONE,
        f"{name}: noise {stats.noise_jy * 1e3:.2f} mJy/beam, peak {stats.peak_jy:.3f} Jy/beam"
        + (f" ({method})" if outcome.cal_applied else " (uncalibrated quick look)"),
    )
    return outcome


def _register_images(registry: Registry, record: MSRecord, outcome: ImagingOutcome) -> None:
    s = outcome.stats
    now = time.time()
    rows = []
    for image_type, path in outcome.products.items():
        main = image_type == "image"
        rows.append(
            (
                str(path),
                str(record.path),
                record.group_id,
                {"image-pb": "pbcor"}.get(image_type, image_type),
                outcome.field,
                s.centre_ra_deg,
                s.centre_dec_deg,
                s.ref_freq_hz,
                s.bandwidth_hz,
                s.beam_major_arcsec,
                s.beam_minor_arcsec,
                s.beam_pa_deg,
                s.noise_jy if main else None,
                s.peak_jy if main else None,
                s.dynamic_range if main else None,
                s.nx,
                s.cell_arcsec,
                int(outcome.cal_applied),
                outcome.expected_noise_jy if main else None,
                now,
            )
        )
    with registry.transaction():
        registry.conn.executemany(
            "INSERT INTO images(path, ms_path, group_id, image_type, field_name, center_ra_deg,"
            " center_dec_deg, freq_hz, bandwidth_hz, beam_major_arcsec, beam_minor_arcsec,"
            " beam_pa_deg, noise_jy, peak_jy, dynamic_range, image_size, cell_arcsec,"
            " cal_applied, expected_noise_jy, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT(path) DO UPDATE SET ms_path = excluded.ms_path,"
            " group_id = excluded.group_id, image_type = excluded.image_type,"
            " field_name = excluded.field_name, center_ra_deg = excluded.center_ra_deg,"
            " center_dec_deg = excluded.center_dec_deg, freq_hz = excluded.freq_hz,"
            " bandwidth_hz = excluded.bandwidth_hz,"
            " beam_major_arcsec = excluded.beam_major_arcsec,"
            " beam_minor_arcsec = excluded.beam_minor_arcsec,"
            " beam_pa_deg = excluded.beam_pa_deg, noise_jy = excluded.noise_jy,"
            " peak_jy = excluded.peak_jy, dynamic_range = excluded.dynamic_range,"
            " image_size = excluded.image_size, cell_arcsec = excluded.cell_arcsec,"
            " cal_applied = excluded.cal_applied,"
            " expected_noise_jy = excluded.expected_noise_jy, created_at = excluded.created_at",
            rows,
        )
        registry.execute(
            "UPDATE ms_index SET phased_field = ?, stage = 'imaged' WHERE path = ?",
            (outcome.field, str(record.path)),
        )


def thumbnail_path(settings: Settings, group_id: str) -> Path:
    return product_path(settings, "thumbnails", group_id, ".png")


def thumbnail_and_register(
    settings: Settings, registry: Registry, group_id: str, image: Path
) -> Path:
    """PNG preview of ``image`` in ``{products}/thumbnails/{group_id}.png``, recorded on the
    image's ``images`` row (regenerable from the FITS at any time).
    """
    png = thumbnail_path(settings, group_id)
    png.parent.mkdir(parents=True, exist_ok=True)
    make_thumbnail(image, png)
    with registry.transaction():
        registry.execute(
            "UPDATE images SET thumbnail_path = ? WHERE path = ?", (str(png), str(image))
        )
    record_stage(registry, group_id, THUMBNAIL_STAGE, StageOutcome.DONE, png.name)
    return png
