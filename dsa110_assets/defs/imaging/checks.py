"""Asset checks on images: finite, thermal-noise limited, and the calibrator where it belongs."""

from pathlib import Path

import dagster as dg

from dsa110_assets.defs.imaging.assets import image
from dsa110_assets.defs.partitions import group_id_partitions
from dsa110_assets.processing.image_checks import (
    calibrator_recovery,
    image_content_problems,
    noise_ratio,
)
from dsa110_assets.registry.products import latest_image
from resources.pipeline import PipelineResource

NOISE_FACTOR = 2.0
FLUX_TOLERANCE = 0.05


def _image_row(pipeline: PipelineResource, group_id: str) -> dict:
    """Return the group's newest image row, which the checks measure.

    Raises
    ------
    dagster.Failure
        No image is registered for the group.
    """
    with pipeline.registry() as registry:
        row = latest_image(registry, group_id)
    if row is None:
        raise dg.Failure(f"no image registered for {group_id}")
    return row


@dg.asset_check(
    asset=image,
    partitions_def=group_id_partitions,
    blocking=True,  # a malformed product must not reach its downstream assets
    description="The image has no NaN pixel and is not all zeros.",
)
def image_is_finite_and_nonzero(
    context: dg.AssetCheckExecutionContext, pipeline: PipelineResource
) -> dg.AssetCheckResult:
    """Check the image has no NaN pixel and is not all zeros."""
    row = _image_row(pipeline, context.partition_key)
    problems = image_content_problems(Path(row["path"]))
    return dg.AssetCheckResult(
        passed=not problems, metadata={"problems": "; ".join(problems) or "none"}
    )


@dg.asset_check(
    asset=image,
    partitions_def=group_id_partitions,
    description=f"Residual noise within a factor {NOISE_FACTOR:g} of the thermal noise the "
    "radiometer equation predicts for the visibilities actually imaged.",
)
def noise_near_radiometer(
    context: dg.AssetCheckExecutionContext, pipeline: PipelineResource
) -> dg.AssetCheckResult:
    """Check the residual noise is near the radiometer equation's prediction."""
    row = _image_row(pipeline, context.partition_key)
    measured, expected = noise_ratio(Path(row["path"]), row["expected_noise_jy"])
    ratio = measured / expected if expected else float("inf")
    return dg.AssetCheckResult(
        passed=1.0 / NOISE_FACTOR <= ratio <= NOISE_FACTOR,
        metadata={
            "residual_noise_mjy": round(measured * 1e3, 4),
            "expected_noise_mjy": round(expected * 1e3, 4),
            "ratio": round(ratio, 3),
        },
    )


@dg.asset_check(
    asset=image,
    partitions_def=group_id_partitions,
    description=f"On calibrator groups: the calibrator within {FLUX_TOLERANCE:.0%} of its "
    "catalog flux (after the primary beam) and within one beam of its catalog position.",
)
def calibrator_recovered(
    context: dg.AssetCheckExecutionContext, pipeline: PipelineResource
) -> dg.AssetCheckResult:
    """Check the group's calibrator (if any) has its catalog flux and position in the image."""
    row = _image_row(pipeline, context.partition_key)
    settings = pipeline.settings()
    with pipeline.registry() as registry:
        found = calibrator_recovery(settings, registry, context.partition_key, row)
    if found is None:
        return dg.AssetCheckResult(
            passed=True, metadata={"calibrator": "none in the beam; nothing to check"}
        )
    flux_error = abs(found.measured_jy / found.expected_jy - 1.0)
    return dg.AssetCheckResult(
        passed=flux_error <= FLUX_TOLERANCE and found.offset_arcsec <= found.beam_arcsec,
        metadata={
            "calibrator": found.name,
            "measured_jy": round(found.measured_jy, 4),
            "expected_jy": round(found.expected_jy, 4),
            "flux_error": round(flux_error, 4),
            "offset_arcsec": round(found.offset_arcsec, 2),
            "beam_arcsec": round(found.beam_arcsec, 2),
            "calibrated": found.calibrated,
        },
    )
