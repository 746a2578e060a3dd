"""``storage_usage``: each tier's bytes and fullness, with the tier alerts as asset checks.

A thin shell over :mod:`dsa110_assets.storage.usage`. One check per tier, so the UI shows
which tier is in trouble: a warning of the tiered-storage design (staging above 10 GB) fails
its check with severity WARN, a critical one (staging above 30 GB, a filesystem above 90%
full) with ERROR. The thresholds are run config (:class:`UsageConfig`), held to the same
rules as :class:`~dsa110_assets.storage.usage.UsageThresholds`.
"""

import dagster as dg
from pydantic import ValidationInfo, field_validator

from dsa110_assets.defs.asset_shapes import OWNERS
from dsa110_assets.settings import NumberRule
from dsa110_assets.storage.placement import Tier
from dsa110_assets.storage.usage import (
    TierAlert,
    TierUsage,
    UsageThresholds,
    tier_alerts,
    tier_usage,
)
from resources.pipeline import PipelineResource

_GB = 1e9
#: tier -> the name of its check.
TIER_CHECKS = {tier.value: f"{tier.value}_within_limits" for tier in Tier}
_DEFAULTS = UsageThresholds()
_GB_RULE = NumberRule(float, 0.0, 1e9)
_PERCENT_RULE = NumberRule(float, 0.0, 100.0, low_open=True)


class UsageConfig(dg.Config):
    """The alert thresholds, in the design's units (decimal GB, percent)."""

    staging_warning_gb: float = _DEFAULTS.staging_warning_bytes / _GB
    staging_critical_gb: float = _DEFAULTS.staging_critical_bytes / _GB
    critical_percent_full: float = _DEFAULTS.critical_fraction * 100

    @field_validator("staging_warning_gb", "staging_critical_gb", "critical_percent_full")
    @classmethod
    def _finite_in_range(cls, value: float, info: ValidationInfo) -> float:
        """Refuse NaN, infinities and negative sizes by name; a percent must be in (0, 100]."""
        rule = _PERCENT_RULE if info.field_name == "critical_percent_full" else _GB_RULE
        return rule.check(value, name=info.field_name)

    def thresholds(self) -> UsageThresholds:
        """Return the thresholds in bytes and as a fraction."""
        return UsageThresholds(
            staging_warning_bytes=round(self.staging_warning_gb * _GB),
            staging_critical_bytes=round(self.staging_critical_gb * _GB),
            critical_fraction=self.critical_percent_full / 100,
        )


def _check_result(usage: TierUsage, alerts: list[TierAlert]) -> dg.AssetCheckResult:
    """Return the check of one tier: failed when it raised an alert, ERROR if critical."""
    critical = any(a.level == "critical" for a in alerts)
    return dg.AssetCheckResult(
        check_name=TIER_CHECKS[usage.tier],
        passed=not alerts,
        severity=dg.AssetCheckSeverity.ERROR if critical else dg.AssetCheckSeverity.WARN,
        metadata={
            "alerts": "; ".join(f"{a.level}: {a.reason}" for a in alerts) or "none",
            "used_bytes": usage.used_bytes,
            "free_bytes": usage.free_bytes,
            "percent_full": round(usage.fraction_full * 100, 1),
        },
    )


@dg.asset(
    group_name="storage",
    owners=OWNERS,
    kinds={"python"},
    check_specs=[
        dg.AssetCheckSpec(
            name,
            asset="storage_usage",
            description=f"The {tier} tier within the tiered-storage design's limits (staging "
            "tiers: 10 GB warning, 30 GB critical; every tier: 90% full critical).",
        )
        for tier, name in TIER_CHECKS.items()
    ],
    description="Bytes the pipeline holds on each storage tier (input, tmpfs, SSD scratch, "
    "SSD products, state, archive) and how full each filesystem is, with one check per tier "
    "against the tiered-storage design's thresholds. Materialized hourly by "
    "storage_usage_schedule.",
)
def storage_usage(
    context: dg.AssetExecutionContext, config: UsageConfig, pipeline: PipelineResource
) -> dg.MaterializeResult:
    """Measure every tier once; the checks judge those numbers."""
    usages = tier_usage(pipeline.settings())
    alerts = tier_alerts(usages, config.thresholds())
    for alert in alerts:
        context.log.warning("%s %s: %s", alert.level, alert.tier, alert.reason)
    metadata: dict[str, object] = {"alerts": len(alerts)}
    for u in usages:
        metadata[f"{u.tier}_used_bytes"] = u.used_bytes
        metadata[f"{u.tier}_percent_full"] = round(u.fraction_full * 100, 1)
    metadata["tiers"] = dg.MetadataValue.json([u.__dict__ for u in usages])
    return dg.MaterializeResult(
        metadata=metadata,
        check_results=[_check_result(u, [a for a in alerts if a.tier == u.tier]) for u in usages],
    )
