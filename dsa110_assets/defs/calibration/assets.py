"""Calibration assets: solutions on calibrator groups, applied to every group's MS."""

from pathlib import Path

import dagster as dg

from dsa110_assets.defs.asset_shapes import group_asset
from dsa110_assets.defs.failures import reported_failures
from dsa110_assets.processing.apply_step import CalStatus, apply_and_register
from dsa110_assets.processing.calibrate_step import solve_and_register
from dsa110_assets.registry.products import ms_record
from resources.pipeline import PipelineResource


@group_asset(
    group_name="calibration",
    kinds={"casa", "numpy"},
    metadata={"dsa110/kind": "caltables", "dsa110/pattern": "{partition}_*cal"},
    description="Which VLA calibrators transit the primary beam during the observation "
    "(has_calibrator / calibrators in processing_queue) and, on a calibrator group, the "
    "bandpass (B Jones) and complex gain (G Jones) solutions as CASA calibration tables in "
    "{products}/caltables, registered with their validity windows. Empty on other groups.",
)
def calibration_tables(
    context: dg.AssetExecutionContext, pipeline: PipelineResource, flagged_ms: Path
) -> list[Path]:
    """Detect the calibrators in the beam and, on a calibrator group, solve and register B and G."""
    settings = pipeline.settings()
    with reported_failures(), pipeline.registry() as registry:
        record = ms_record(registry, context.partition_key)
        outcome = solve_and_register(settings, registry, record, pipeline.calibration_policy())
    transits = {
        t.name: {
            "transit_mjd": round(t.transit_mjd, 6),
            "beam_response": round(t.beam_response, 3),
            "apparent_flux_jy": round(t.apparent_flux_jy, 2),
        }
        for t in outcome.transits
    }
    context.add_output_metadata(
        {
            "has_calibrator": bool(outcome.transits),
            "calibrators": dg.MetadataValue.json(transits),
            "solved_on": outcome.calibrator or "none (no calibrator in the beam)",
            "refant": outcome.refant or "n/a",
            "field_model_sources": dg.MetadataValue.json(
                [
                    {"name": f.name, "flux_1400_jy": round(f.flux_1400_jy, 3)}
                    for f in outcome.field_sources
                ]
            ),
            "solve_s": round(outcome.solve_s, 2),
            "write_s": round(outcome.write_s, 2),
            **{k: v for k, v in outcome.details.items() if isinstance(v, (int, float, str))},
        }
    )
    return outcome.tables


@group_asset(
    group_name="calibration",
    kinds={"casa", "numpy"},
    deps=[calibration_tables],
    metadata={"dsa110/kind": "ms", "dsa110/suffix": ".ms"},
    description="The group's Measurement Set with the best calibration available now applied "
    "into CORRECTED_DATA: its own calibrator gains, gains interpolated between the calibrator "
    "solutions on either side, or the nearest within gain_window_h (12 h); else gains solved "
    "against the catalog field model; else none (CORRECTED_DATA = DATA, a quick look). It "
    "never waits: the calibration sensor re-materializes a quick look when a calibrator "
    "solution covering it appears. cal_method / cal_choice in ms_index say which.",
)
def calibrated_ms(
    context: dg.AssetExecutionContext, pipeline: PipelineResource, flagged_ms: Path
) -> Path:
    """Apply the best calibration available now (or none: a quick look) to the group's MS."""
    policy = pipeline.calibration_policy()
    with reported_failures(), pipeline.registry() as registry:
        record = ms_record(registry, context.partition_key)
        outcome = apply_and_register(registry, record, policy, settings=pipeline.settings())
    for reason in outcome.rejected:
        context.log.warning(f"calibration table not applied: {reason}")
    metadata: dict[str, object] = {
        "cal_status": outcome.status.value,
        "cal_applied": outcome.status is CalStatus.APPLIED,
        "cal_method": outcome.method.value,
        "apply_s": round(outcome.duration_s, 2),
        "rejected_tables": len(outcome.rejected),
        "cal_choice": dg.MetadataValue.json(outcome.details),
    }
    if outcome.pair is not None:
        metadata["bandpass_table"] = dg.MetadataValue.path(str(outcome.pair.bandpass))
        metadata["gain_table"] = dg.MetadataValue.path(str(outcome.pair.gain))
        metadata["calibrator"] = outcome.pair.calibrator or ""
        metadata["solved_in_group"] = outcome.pair.source_group or ""
        if outcome.pair.age_h is not None:
            metadata["gain_age_h"] = round(outcome.pair.age_h, 3)
    else:
        metadata["note"] = (
            "quick look: no calibration covers this group yet, CORRECTED_DATA = DATA "
            "(uncalibrated); re-calibrated when a calibrator solution covering it appears"
        )
    metadata.update({k: v for k, v in outcome.details.items() if isinstance(v, (int, float))})
    context.add_output_metadata(metadata)
    return record.path
