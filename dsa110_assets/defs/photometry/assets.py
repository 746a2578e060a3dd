"""Per-group photometry: each new image is measured minutes after it lands."""

from pathlib import Path

import dagster as dg

from dsa110_assets.defs.asset_shapes import group_asset
from dsa110_assets.defs.failures import reported_failures
from dsa110_assets.processing.photometry_step import measure_and_register
from dsa110_assets.registry.products import cal_state, ms_record
from dsa110_assets.storage import product_path
from dsa110_assets.storage.products import image_product
from resources.pipeline import PipelineResource


@group_asset(
    group_name="photometry",
    kinds={"python", "csv"},
    metadata={"dsa110/kind": "photometry", "dsa110/suffix": ".csv"},
    description="Forced photometry (restoring-beam fit at fixed position, Condon 1997) of the "
    "ingested survey catalog's sources in the group's image, divided by the primary beam: rows "
    "in `photometry` (replaced on re-run) and {products}/photometry/{group_id}.csv.",
)
def group_photometry(
    context: dg.AssetExecutionContext, pipeline: PipelineResource, image: Path
) -> Path:
    """Measure the survey catalog's sources on the group's image, into the registry and a CSV."""
    settings = pipeline.settings()
    pb = image_product(image, "pb")
    csv_path = product_path(settings, "photometry", context.partition_key, ".csv")
    with reported_failures(), pipeline.registry() as registry:
        record = ms_record(registry, context.partition_key)
        outcome = measure_and_register(
            registry,
            settings.catalogs_dir,
            image,
            csv_path,
            pb_fits=pb,
            group_id=context.partition_key,
            mjd=record.mid_mjd,
            pb_cutoff=pipeline.pb_cutoff,
        )
        cal = cal_state(registry, record.path)
    context.add_output_metadata(
        {
            # fluxes of a quick look are uncalibrated; a re-calibration replaces these rows
            "calibrated": cal.applied,
            "cal_method": cal.method,
            "catalog": outcome.catalog or "none ingested",
            "measured": outcome.measured,
            "skipped": outcome.skipped,
            "skip_reasons": dg.MetadataValue.json(outcome.skip_reasons),
            "duration_s": round(outcome.duration_s, 3),
        }
    )
    return csv_path
