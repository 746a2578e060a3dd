"""How full each storage tier is, and the alerts the tiered-storage design raises on it.

Why. The tiered-storage design monitors two things: the staging area, whose growth means
the cleanup failed ("Normal: < 4GB, Warning: > 10GB (investigate cleanup job), Critical:
> 30GB (cleanup job failed!)"), and every filesystem ("Alert if > 90% full: staging and
clean cache need free space"). Here the staging area is the tmpfs folder and the SSD scratch
folder (both only ever hold conversions in flight), so each is held to the staging numbers on
the bytes the pipeline keeps there; every tier is held to the 90% rule on its filesystem.

``used_bytes`` is what the pipeline itself holds under a tier's root, counted by walking it
(disk blocks, so a sparse Measurement Set counts what it really occupies); a root that nests
another tier's root (the SSD products root holds ``scratch/``) does not count the nested
one twice. The tmpfs folder is usually ``/dev/shm``, shared with every program on the host,
so only the pipeline's own staging entries there count. ``total_bytes``, ``free_bytes`` and
``fraction_full`` are the filesystem's (``shutil.disk_usage``, fullness as ``df`` reports
it), whoever filled it.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from dsa110_assets.safe_fs import tree_bytes
from dsa110_assets.settings import NumberRule, Settings
from dsa110_assets.storage.placement import Tier, tier_root
from dsa110_assets.storage.stale_staging import STAGING_TIERS, staging_entries

__all__ = [
    "BYTES_RULE",
    "FRACTION_RULE",
    "STAGING_TIERS",
    "TierAlert",
    "TierUsage",
    "UsageThresholds",
    "tier_alerts",
    "tier_usage",
]

_GB = 10**9
#: A threshold in bytes, and a fullness fraction: the checks of :class:`UsageThresholds`.
BYTES_RULE = NumberRule(int, 0, None)
FRACTION_RULE = NumberRule(float, 0.0, 1.0, low_open=True)


@dataclass(frozen=True)
class TierUsage:
    """The bytes one tier holds, and how full its filesystem is.

    Attributes
    ----------
    tier
        The :class:`~dsa110_assets.storage.placement.Tier` value (``ssd_products``, ...).
    path
        The tier's root folder.
    used_bytes
        Bytes (disk blocks) of the pipeline's files under the root; 0 if it does not exist.
    total_bytes, free_bytes
        Of the root's filesystem (of its nearest existing ancestor if it does not exist yet).
    fraction_full
        ``used / (used + free)`` of that filesystem, 0..1: ``df``'s "Use%", which counts
        the blocks reserved for root as unavailable.
    """

    tier: str
    path: str
    used_bytes: int
    total_bytes: int
    free_bytes: int
    fraction_full: float


@dataclass(frozen=True)
class TierAlert:
    """One threshold crossed: which tier, how bad (``warning`` or ``critical``), and why."""

    tier: str
    level: Literal["warning", "critical"]
    reason: str


@dataclass(frozen=True)
class UsageThresholds:
    """The tiered-storage design's alert thresholds.

    Parameters
    ----------
    staging_warning_bytes
        A staging tier (tmpfs, SSD scratch) holding more than this is a warning: "investigate
        cleanup job" (default 10 GB).
    staging_critical_bytes
        More than this is critical: "cleanup job failed!" (default 30 GB).
    critical_fraction
        Any tier whose filesystem is more than this full is critical (default 0.9).
    """

    staging_warning_bytes: int = 10 * _GB
    staging_critical_bytes: int = 30 * _GB
    critical_fraction: float = 0.9

    def __post_init__(self) -> None:
        """Refuse thresholds that are not numbers in range, or a warning above critical.

        Raises
        ------
        ValueError
            Naming the field and the rule it broke.
        """
        for name, rule in (
            ("staging_warning_bytes", BYTES_RULE),
            ("staging_critical_bytes", BYTES_RULE),
            ("critical_fraction", FRACTION_RULE),
        ):
            value = rule.check(getattr(self, name), name=f"UsageThresholds.{name}")
            object.__setattr__(self, name, value)
        if self.staging_warning_bytes > self.staging_critical_bytes:
            raise ValueError(
                "UsageThresholds: staging_warning_bytes must not exceed staging_critical_bytes"
            )


def tier_usage(settings: Settings) -> list[TierUsage]:
    """Return the usage of every tier, in :class:`Tier` order.

    Never raises for a missing or unreadable folder: a root that does not exist yet holds
    0 bytes, and entries that vanish or cannot be read during the walk count as 0.
    """
    roots = {tier: tier_root(settings, tier) for tier in Tier}
    usages = []
    for tier, root in roots.items():
        if tier is Tier.TMPFS:  # shared with the host: only the pipeline's staging counts
            used = sum(e.bytes for e in staging_entries(settings, (Tier.TMPFS,)))
        else:
            nested = [root / rel for r in roots.values() if (rel := _nested(r, root)) is not None]
            used = tree_bytes(root, allocated=True, exclude=nested)
            if tier is Tier.SSD_PRODUCTS and _nested(settings.output_dir, root) is None:
                used += tree_bytes(settings.output_dir, allocated=True)
        total, disk_used, free = _disk(root)
        seen = disk_used + free
        fraction = 0.0 if seen <= 0 else min(1.0, max(0.0, disk_used / seen))
        usages.append(TierUsage(tier.value, str(root), used, total, free, fraction))
    return usages


def tier_alerts(
    usages: list[TierUsage], thresholds: UsageThresholds = UsageThresholds()
) -> list[TierAlert]:
    """Return the alerts ``usages`` raise against ``thresholds``, critical ones first.

    A staging tier above the critical size is critical (not also a warning); one above the
    warning size is a warning; any tier whose filesystem is fuller than
    ``critical_fraction`` is critical. Tiers sharing a filesystem each say so.
    """
    alerts: list[TierAlert] = []
    for usage in usages:
        if usage.tier in STAGING_TIERS:
            if usage.used_bytes > thresholds.staging_critical_bytes:
                alerts.append(
                    TierAlert(
                        usage.tier,
                        "critical",
                        f"staging holds {_size(usage.used_bytes)} in {usage.path}, above"
                        f" {_size(thresholds.staging_critical_bytes)}: the cleanup failed",
                    )
                )
            elif usage.used_bytes > thresholds.staging_warning_bytes:
                alerts.append(
                    TierAlert(
                        usage.tier,
                        "warning",
                        f"staging holds {_size(usage.used_bytes)} in {usage.path}, above"
                        f" {_size(thresholds.staging_warning_bytes)}: investigate the cleanup",
                    )
                )
        if usage.total_bytes > 0 and usage.fraction_full > thresholds.critical_fraction:
            alerts.append(
                TierAlert(
                    usage.tier,
                    "critical",
                    f"filesystem of {usage.path} is {usage.fraction_full:.0%} full"
                    f" ({_size(usage.free_bytes)} free), above"
                    f" {thresholds.critical_fraction:.0%}",
                )
            )
    return sorted(alerts, key=lambda a: a.level != "critical")


def _size(n: int) -> str:
    """Return ``n`` bytes in decimal units (the design's GB), e.g. ``12.3 GB``."""
    for unit, scale in (("TB", 10**12), ("GB", _GB), ("MB", 10**6), ("kB", 10**3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def _nested(inner: Path, outer: Path) -> Path | None:
    """Return where ``inner`` lies strictly inside ``outer``, relative to it, else None.

    Both are resolved, so a tier nested through a symlink is found; the relative path is
    what a walk of ``outer`` meets it as.
    """
    try:
        a, b = inner.resolve(), outer.resolve()
    except OSError:
        return None
    return a.relative_to(b) if a != b and a.is_relative_to(b) else None


def _disk(root: Path) -> tuple[int, int, int]:
    """Return (total, used, free) bytes of the filesystem ``root`` is (or will be) on."""
    folder = root
    while True:
        try:
            usage = shutil.disk_usage(folder)
            return int(usage.total), int(usage.used), int(usage.free)
        except OSError:
            if folder.parent == folder:
                return 0, 0, 0
            folder = folder.parent
