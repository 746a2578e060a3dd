"""Asset checks on flagging: a group that lost most of its data should be looked at."""

import dagster as dg

from dsa110_assets.defs.flagging.assets import flagged_ms
from dsa110_assets.defs.partitions import group_id_partitions
from dsa110_assets.registry.flags import flag_steps
from resources.pipeline import PipelineResource

#: Above this fraction of cross-correlation samples flagged a group warns: the existing
#: DSA-110 pipeline flags 2-5 % of a typical observation, and a group that loses half its data
#: has a problem (a dead correlator node, a storm of interference) worth an astronomer's eye.
MAX_FLAGGED_FRACTION = 0.5


@dg.asset_check(
    asset=flagged_ms,
    partitions_def=group_id_partitions,
    description=f"At most {MAX_FLAGGED_FRACTION:.0%} of the cross-correlation samples flagged "
    "(a warning: the group still goes on to calibration).",
)
def flagged_fraction_acceptable(
    context: dg.AssetCheckExecutionContext, pipeline: PipelineResource
) -> dg.AssetCheckResult:
    """Warn when flagging removed more than :data:`MAX_FLAGGED_FRACTION` of the group."""
    with pipeline.registry() as registry:
        steps = {row["step"]: row for row in flag_steps(registry, context.partition_key)}
    if not steps:
        return dg.AssetCheckResult(
            passed=False,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"problem": "no flagging summary recorded for this group"},
        )
    fractions = {step: round(row["fraction_after"], 6) for step, row in steps.items()}
    total = max(fractions.values())
    return dg.AssetCheckResult(
        passed=total <= MAX_FLAGGED_FRACTION,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "flagged_fraction": total,
            "max_flagged_fraction": MAX_FLAGGED_FRACTION,
            **{f"after_{step}": value for step, value in fractions.items()},
        },
    )
