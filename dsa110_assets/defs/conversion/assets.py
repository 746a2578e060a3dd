"""Conversion assets: one CASA Measurement Set per observation."""

from pathlib import Path

import dagster as dg

from dsa110_assets.defs.asset_shapes import group_asset
from dsa110_assets.defs.failures import reported_failures
from dsa110_assets.ingest.groups import SubbandGroup
from dsa110_assets.processing.convert_step import convert_and_register
from dsa110_assets.storage.products import ms_path_for
from resources.pipeline import PipelineResource


@group_asset(
    group_name="conversion",
    kinds={"casa", "python"},
    metadata={"dsa110/kind": "ms", "dsa110/suffix": ".ms"},
    retry_policy=dg.RetryPolicy(max_retries=2, delay=5),
    description="The 16 subbands as one CASA Measurement Set on the SSD products tier: 16 "
    "spectral windows in ascending frequency, one meridian field per integration "
    "(meridian_icrs_t{i}), DATA and CORRECTED_DATA (no MODEL_DATA). Staged in tmpfs when it fits "
    "(a full tmpfs falls back to the SSD); a retry takes over from an attempt that died.",
)
def measurement_set(
    context: dg.AssetExecutionContext, pipeline: PipelineResource, subband_group: SubbandGroup
) -> Path:
    """Convert the group's subbands to one Measurement Set (nothing to do when already done)."""
    settings = pipeline.settings()
    with reported_failures(), pipeline.registry() as registry:
        result = convert_and_register(settings, registry, subband_group, run_id=context.run.run_id)
    if result is None:
        context.log.info(f"{subband_group.group_id} already converted; nothing changed")
        context.add_output_metadata({"reused": True})
        return ms_path_for(settings, subband_group.group_id)
    context.add_output_metadata(
        {
            "rows": result.n_rows,
            "spectral_windows": result.n_spw,
            "channels": result.n_channels,
            "antennas": result.n_antennas,
            "integrations": result.n_times,
            "duration_s": round((result.end_mjd - result.start_mjd) * 86400.0, 2),
            "missing_subbands": ", ".join(f"sb{sb:02d}" for sb in result.missing_subbands)
            or "none",
            "staging_tier": str(getattr(result.tier, "value", result.tier)),
            "field_name": result.field_name,
            "pointing_ra_deg": result.pointing_ra_deg,
            "pointing_dec_deg": result.pointing_dec_deg,
            **{f"time_{k}": round(v, 3) for k, v in result.timings.items()},
        }
    )
    return result.ms_path
