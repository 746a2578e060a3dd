"""Flagging assets: the group's MS with its RFI and data-quality flags, before calibration."""

from pathlib import Path

import dagster as dg

from dsa110_assets.defs.asset_shapes import group_asset
from dsa110_assets.defs.failures import reported_failures
from dsa110_assets.flagging.summary import png_markdown
from dsa110_assets.processing.flag_step import FlagOutcome, flag_and_register
from dsa110_assets.registry.products import ms_record
from resources.flagging import FlaggingResource
from resources.pipeline import PipelineResource


@group_asset(
    group_name="flagging",
    kinds={"casa", "python"},
    metadata={"dsa110/kind": "ms", "dsa110/suffix": ".ms"},
    description="The group's Measurement Set with its FLAG column set before calibration: "
    "data-quality flags (zero or non-finite samples, band edges, dead, out-of-range and "
    "noisy antennas) and AOFlagger's RFI flags (the DSA-110 strategy in "
    "dsa110_assets/data/dsa110-aoflagger.lua, on each baseline's Stokes I amplitude over "
    "the whole band). The flags before each step are kept as CASA flag versions "
    "(<ms>.flagversions: before_flagging, before_aoflagger, flagged); fractions per window, "
    "antenna and integration are in flag_summary and ms_index.flagged_fraction.",
)
def flagged_ms(
    context: dg.AssetExecutionContext,
    pipeline: PipelineResource,
    flagging: FlaggingResource,
    measurement_set: Path,
) -> Path:
    """Flag the group's MS (data quality, then AOFlagger) and record what was flagged."""
    with reported_failures(), pipeline.registry() as registry:
        record = ms_record(registry, context.partition_key)
        outcome = flag_and_register(registry, record, flagging.policy())
    context.add_output_metadata(_metadata(outcome))
    return record.path


def _metadata(outcome: FlagOutcome) -> dict[str, object]:
    """Return the asset's metadata: fractions, what each step found, timings, the picture."""
    fractions = outcome.fractions
    worst = sorted(fractions.per_antenna.items(), key=lambda kv: -kv[1])[:10]
    metadata: dict[str, object] = {
        "flagged_fraction": fractions.total,
        "flagged_antennas": ", ".join(outcome.flagged_antennas) or "none",
        "per_spw": dg.MetadataValue.json(fractions.per_spw),
        "per_integration": dg.MetadataValue.json(fractions.per_integration),
        "most_flagged_antennas": dg.MetadataValue.json(dict(worst)),
        "per_antenna": dg.MetadataValue.json(fractions.per_antenna),
        "flags": dg.MetadataValue.md(png_markdown(outcome.png, "flagged fraction")),
    }
    for row in outcome.steps:
        metadata[f"{row.step}_fraction_before"] = round(row.fraction_before, 6)
        metadata[f"{row.step}_fraction_after"] = round(row.fraction_after, 6)
        metadata[f"{row.step}_detail"] = dg.MetadataValue.json(row.detail)
    metadata.update({f"time_{k}": round(v, 3) for k, v in outcome.timings.items()})
    return metadata
