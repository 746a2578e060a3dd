"""Imaging assets: the WSClean image of each group and its thumbnail."""

from pathlib import Path

import dagster as dg

from dsa110_assets.defs.asset_shapes import group_asset
from dsa110_assets.defs.failures import reported_failures
from dsa110_assets.imaging.thumbnail import thumbnail_markdown
from dsa110_assets.processing.image_step import (
    MAX_CHANNEL_WIDTH_HZ,
    image_and_register,
    thumbnail_and_register,
)
from dsa110_assets.processing.selfcal_step import selfcal_table
from dsa110_assets.registry.products import ms_record
from resources.pipeline import PipelineResource
from resources.selfcal import SelfcalResource
from resources.wsclean import WSCleanResource


@group_asset(
    group_name="imaging",
    pool="wsclean",
    kinds={"wsclean", "fits"},
    metadata={"dsa110/kind": "images", "dsa110/pattern": "{partition}-*-image.fits"},
    description="WSClean image of the whole group (every integration phased to the central "
    f"field, adjacent channels averaged up to {MAX_CHANNEL_WIDTH_HZ / 1e6:g} MHz in an imaging "
    "copy of the MS): "
    "{group_id}-{field}-image/residual/model/psf.fits plus our Airy primary beam "
    "(-pb.fits) and the primary-beam-corrected image (-image-pb.fits), on the SSD products "
    "tier, each registered in `images` with beam, noise and dynamic range. A calibrated "
    "group is then self-calibrated (phase rounds, then amplitude+phase above an S/N "
    "threshold), each round kept only if the residual noise falls and the dynamic range "
    "rises; the rounds are in `selfcal_rounds` and this asset's metadata. No round on a "
    "calibrator's own group (its gains were solved on these data) or on a first image "
    "already near the radiometer noise (thermal-limited).",
)
def image(
    context: dg.AssetExecutionContext,
    pipeline: PipelineResource,
    wsclean: WSCleanResource,
    selfcal: SelfcalResource,
    calibrated_ms: Path,
) -> Path:
    """Image the group's calibrated MS with WSClean, self-calibrate, register every product."""
    settings = pipeline.settings()
    params = wsclean.params_for(calibrated_ms, data_column="CORRECTED_DATA")
    with reported_failures(), pipeline.registry() as registry:
        record = ms_record(registry, context.partition_key)
        outcome = image_and_register(
            settings,
            registry,
            record,
            params,
            wsclean_bin=wsclean.binary,
            timeout_s=wsclean.timeout_s,
            pb_cutoff=pipeline.pb_cutoff,
            selfcal=selfcal.policy(),
            max_channel_width_hz=wsclean.max_channel_width_hz,
        )
    s = outcome.stats
    wsclean_s = outcome.timings.get("wsclean_s", 0.0)
    overhead = _overhead_s(outcome.timings)
    context.add_output_metadata(
        {
            "field": outcome.field,
            "calibrated": outcome.cal_applied,
            "cal_state": "calibrated" if outcome.cal_applied else "uncalibrated (quick look)",
            "cal_method": outcome.cal_method,
            "cal_age_h": round(outcome.cal_age_h, 3) if outcome.cal_age_h is not None else -1.0,
            "calibrator": outcome.calibrator or "none",
            "noise_mjy_per_beam": round(s.noise_jy * 1e3, 4),
            "residual_noise_mjy_per_beam": round(outcome.residual_noise_jy * 1e3, 4),
            "expected_noise_mjy_per_beam": round(outcome.expected_noise_jy * 1e3, 4),
            "peak_jy_per_beam": round(s.peak_jy, 5),
            "dynamic_range": round(s.dynamic_range, 1),
            "beam_arcsec": f"{s.beam_major_arcsec or 0:.1f} x {s.beam_minor_arcsec or 0:.1f} "
            f"@ {s.beam_pa_deg or 0:.0f} deg",
            "image_size_px": s.nx,
            "cell_arcsec": round(s.cell_arcsec, 3),
            "products": dg.MetadataValue.json({k: str(v) for k, v in outcome.products.items()}),
            "wsclean_command": " ".join(outcome.command),
            "selfcal_applied": outcome.selfcal_applied,
            "channels_averaged": outcome.channels_averaged,
            "selfcal_rounds": dg.MetadataValue.md(
                selfcal_table(outcome.selfcal_rounds, outcome.selfcal_skipped)
            ),
            **{k: round(v, 2) for k, v in outcome.timings.items()},
            "overhead_vs_wsclean": round(overhead / wsclean_s, 4) if wsclean_s else 0.0,
        }
    )
    return outcome.image


def _overhead_s(timings: dict[str, float]) -> float:
    """Return the image step's own time: everything but WSClean's runs and the rephase.

    ``selfcal_s`` (a round: solve, apply, re-image) holds the rounds' WSClean time,
    ``selfcal_wsclean_s``, which is WSClean's, not the step's.
    """
    excluded = ("wsclean_s", "rephase_s", "selfcal_wsclean_s")
    total = sum(v for k, v in timings.items() if k not in excluded)
    return total - timings.get("selfcal_wsclean_s", 0.0)


@group_asset(
    group_name="imaging",
    kinds={"png"},
    metadata={"dsa110/kind": "thumbnails", "dsa110/suffix": ".png"},
    description="PNG preview (asinh stretch, 512 px, north up) of the group's image in "
    "{products}/thumbnails, shown inline here; regenerable from the FITS.",
)
def thumbnail(context: dg.AssetExecutionContext, pipeline: PipelineResource, image: Path) -> Path:
    """Write the PNG preview of the group's image."""
    settings = pipeline.settings()
    with reported_failures(), pipeline.registry() as registry:
        png = thumbnail_and_register(settings, registry, context.partition_key, image)
    context.add_output_metadata(
        {"preview": dg.MetadataValue.md(thumbnail_markdown(png)), "image": str(image)}
    )
    return png
