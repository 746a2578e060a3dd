"""Daily products over UTC-date partitions: mosaic, its photometry, and light-curve metrics.

A day's images come from the registry (every image of the day's group_id partitions), not
from Dagster lineage, because group_ids are dynamic; the edge from ``image`` drawn in the
graph (``AllPartitionMapping``) is lineage only. One run per day (``BackfillPolicy
.multi_run(1)``): a day's mosaic holds one output grid plus one input image in memory, so a
backfill over weeks runs as many small, independently retryable runs.
"""

from pathlib import Path

import dagster as dg

from dsa110_assets.defs.asset_shapes import daily_asset
from dsa110_assets.defs.failures import reported_failures
from dsa110_assets.defs.imaging.assets import image
from dsa110_assets.imaging.thumbnail import thumbnail_markdown
from dsa110_assets.processing.daily_step import (
    build_daily_mosaic,
    day_images,
    day_mosaics,
    write_variability,
)
from dsa110_assets.processing.photometry_step import concatenate_csv, measure_and_register
from dsa110_assets.storage import product_path
from resources.pipeline import PipelineResource


@daily_asset(
    kinds={"fits", "python"},
    deps=[dg.AssetDep(image, partition_mapping=dg.AllPartitionMapping())],
    metadata={"dsa110/kind": "mosaics", "dsa110/pattern": "{partition}*.fits"},
    description="The day's images reprojected (reproject) onto a common TAN grid for the "
    "declination strip, weighted by primary beam^2 / rms^2 (Airy, 4.65 m, cutoff 0.2): "
    "{products}/mosaics/{date}_ra{HH}h.fits per hourly RA tile (one TAN grid cannot hold 24 h "
    "of a strip) with EFFNOISE, a weights FITS and a thumbnail; a `mosaics` row per tile "
    "(replaced on re-run). Images whose FITS is missing or corrupt are skipped "
    "with the reason. Empty for a day without images.",
)
def daily_mosaic(context: dg.AssetExecutionContext, pipeline: PipelineResource) -> list[Path]:
    """Mosaic the day's images, one mosaic per hourly RA tile (none for a day without images)."""
    settings = pipeline.settings()
    day = context.partition_key
    with reported_failures(), pipeline.registry() as registry:
        if not day_images(registry, day):
            context.add_output_metadata({"images": 0, "note": f"no images registered for {day}"})
            return []
        outcomes = build_daily_mosaic(settings, registry, day, pb_cutoff=pipeline.pb_cutoff)
    tiles = {
        o.result.path.name: {
            "images": o.result.n_images,
            "skipped": len(o.result.skipped),
            "effective_noise_mjy": round(o.result.effective_noise_jy * 1e3, 4),
            "shape": f"{o.result.shape[1]} x {o.result.shape[0]}",
            "dec_strip_deg": round(o.result.centre_dec_deg, 1),
        }
        for o in outcomes
    }
    skipped = {path: reason for o in outcomes for path, reason in o.skipped}
    previews = "\n".join(thumbnail_markdown(o.thumbnail) for o in outcomes[:4])
    context.add_output_metadata(
        {
            "images": sum(o.result.n_images for o in outcomes),
            "tiles": dg.MetadataValue.json(tiles),
            "skipped": dg.MetadataValue.json(skipped),
            "effective_noise_mjy": round(
                min(o.result.effective_noise_jy for o in outcomes) * 1e3, 4
            ),
            "preview": dg.MetadataValue.md(previews),
            "seconds": round(sum(sum(o.result.timings_s.values()) for o in outcomes), 2),
        }
    )
    return [p for o in outcomes for p in (o.result.path, o.result.weights_path)]


@daily_asset(
    kinds={"python", "csv"},
    deps=[daily_mosaic],
    metadata={"dsa110/kind": "photometry", "dsa110/suffix": "-mosaic.csv"},
    description="Forced photometry of the survey catalog on the day's mosaics (already primary-"
    "beam corrected): `photometry` rows per mosaic and {products}/photometry/"
    "{date}-mosaic.csv.",
)
def mosaic_photometry(context: dg.AssetExecutionContext, pipeline: PipelineResource) -> Path:
    """Measure the survey catalog on each of the day's mosaics, into one CSV."""
    settings = pipeline.settings()
    day = context.partition_key
    csv_path = product_path(settings, "photometry", day, "-mosaic.csv")
    measured = skipped = 0
    catalog = None
    with reported_failures(), pipeline.registry() as registry:
        mosaics = [(p, mid) for p, mid in day_mosaics(registry, day) if p.exists()]
        parts = []
        for mosaic, mid in mosaics:
            part = csv_path.with_name(f".{mosaic.stem}.part.csv")
            outcome = measure_and_register(
                registry,
                settings.catalogs_dir,
                mosaic,
                part,
                pb_fits=None,
                group_id=None,
                mjd=mid,
            )
            parts.append(part)
            measured += outcome.measured
            skipped += outcome.skipped
            catalog = catalog or outcome.catalog
    concatenate_csv(parts, csv_path)
    context.add_output_metadata(
        {
            "mosaics": len(mosaics),
            "catalog": catalog or "none ingested",
            "measured": measured,
            "skipped": skipped,
        }
    )
    return csv_path


@daily_asset(
    kinds={"python", "csv"},
    deps=[mosaic_photometry],
    metadata={"dsa110/kind": "lightcurves", "dsa110/suffix": ".csv"},
    description="Every source's light curve (per-group forced photometry up to the end of the "
    "day) summarised by the Mooley et al. (2016) variability metrics eta, V, Vs and m, with "
    "candidates flagged: {products}/lightcurves/{date}.csv.",
)
def light_curves(context: dg.AssetExecutionContext, pipeline: PipelineResource) -> Path:
    """Write every source's variability metrics up to the end of the day, candidates flagged."""
    settings = pipeline.settings()
    with reported_failures(), pipeline.registry() as registry:
        outcome = write_variability(
            settings,
            registry,
            context.partition_key,
            min_epochs=pipeline.min_epochs,
            thresholds=pipeline.variability_thresholds(),
        )
    context.add_output_metadata(
        {
            "sources": outcome.sources,
            "candidates": dg.MetadataValue.json(outcome.candidates[:100]),
            "n_candidates": len(outcome.candidates),
            "thresholds": dg.MetadataValue.json(outcome.thresholds),
        }
    )
    return outcome.path
