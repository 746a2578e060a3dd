"""The ``/metrics`` families: what the existing pipeline alerts on, from the registry and tiers.

Groups by queue state, the queue and input backlogs, stage outcomes and latencies, tier
usage and alerts, the flagged fraction and the image noise. Distributions (latencies,
flagged fractions, noise) are over the *recent* groups, those observed within a day of the
newest group (:data:`~dsa110_assets.api.queries.RECENT_WINDOW_S`), summarised as gauges with
a ``stat`` label (``p50``, ``p95``, ``max``): they describe a sliding window, so they are not
Prometheus summaries, whose ``_sum`` and ``_count`` must only grow.

A stage's latency is the time from the group's last subband file being registered to the
stage's outcome being recorded ``done``: how far behind the telescope each product is
(``stage_status`` keeps when each outcome was written, not when the stage started, so this
is the quantity the registry can give without new bookkeeping).

Plain functions over a read-only connection and the tier usages; the HTTP shell only calls
:func:`collect` and renders it (:mod:`dsa110_assets.api.prometheus`).
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Iterable, Sequence

from dsa110_assets.api import queries
from dsa110_assets.api.prometheus import MetricFamily
from dsa110_assets.storage.usage import TierAlert, TierUsage

#: The statistics of a windowed distribution, and the quantile each is.
STATS: tuple[tuple[str, float], ...] = (("p50", 0.5), ("p95", 0.95), ("max", 1.0))


def quantile(values: Sequence[float], q: float) -> float:
    """Return the ``q`` quantile of ``values`` (linear between order statistics; NaN if none).

    Examples
    --------
    >>> quantile([1.0, 2.0, 3.0, 4.0], 0.5)
    2.5
    """
    if not values:
        return math.nan
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def _add_stats(family: MetricFamily, values: Sequence[float], **labels: object) -> None:
    """Add one sample per :data:`STATS` entry (``stat`` label) of ``values`` to ``family``."""
    for stat, q in STATS:
        family.add(quantile(values, q), **labels, stat=stat)


def _by_key(pairs: Iterable[tuple[str, float]]) -> dict[str, list[float]]:
    """Group ``(key, value)`` pairs (stage, step) into one list of values per key."""
    grouped: dict[str, list[float]] = {}
    for key, value in pairs:
        grouped.setdefault(key, []).append(value)
    return grouped


def registry_families(conn: sqlite3.Connection) -> list[MetricFamily]:
    """Return the families read from the registry (see the module docstring)."""
    return [*_queue_families(conn), *_recent_families(conn)]


def _queue_families(conn: sqlite3.Connection) -> list[MetricFamily]:
    """Return the groups by queue state, the queue backlog and the stage outcomes."""
    counts = queries.queue_counts(conn)
    groups = MetricFamily("dsa110_groups", "Groups (observations) in each queue state.")
    for state, n in counts.items():
        groups.add(n, state=state)
    backlog = MetricFamily(
        "dsa110_queue_backlog_groups",
        "Groups complete and waiting for their processing run (queue state pending).",
    ).add(counts["pending"])
    stages = MetricFamily(
        "dsa110_stage_groups", "Groups by the recorded outcome of each stage (stage_status)."
    )
    for stage, status, n in sorted(queries.stage_counts(conn)):
        stages.add(n, stage=stage, status=status)
    return [groups, backlog, stages]


def _recent_families(conn: sqlite3.Connection) -> list[MetricFamily]:
    """Return the distributions over the recent groups, and the newest image's noise.

    A family with no recent values is still declared (HELP and TYPE, no sample), so a
    scrape always lists the same families.
    """
    latency = MetricFamily(
        "dsa110_stage_latency_seconds",
        "Seconds from a recent group's last subband file registered to each stage done.",
    )
    measured = MetricFamily(
        "dsa110_stage_latency_groups", "Recent groups whose stage latency was measured."
    )
    flagged = MetricFamily(
        "dsa110_flagged_fraction",
        "Fraction of visibilities flagged after each flagging step, recent groups.",
    )
    noise = MetricFamily(
        "dsa110_image_noise_jy", "Robust rms of the recent groups' images, Jy/beam."
    )
    ratio = MetricFamily(
        "dsa110_image_noise_ratio",
        "Image rms over the radiometer-equation noise, recent groups' images.",
    )
    latest = MetricFamily(
        "dsa110_latest_image_noise_jy", "Robust rms of the newest group's image, Jy/beam."
    )
    lo = queries.recent_bound(conn)
    if lo is not None:
        for stage, seconds in sorted(_by_key(queries.stage_latencies(conn, lo)).items()):
            _add_stats(latency, seconds, stage=stage)
            measured.add(len(seconds), stage=stage)
        for step, fractions in sorted(_by_key(queries.flagged_fractions(conn, lo)).items()):
            _add_stats(flagged, fractions, step=step)
        noises = queries.image_noises(conn, lo)
        if noises:
            _add_stats(noise, [n for n, _ in noises])
        ratios = [n / e for n, e in noises if e]
        if ratios:
            _add_stats(ratio, ratios)
    newest_noise = queries.latest_image_noise(conn)
    if newest_noise is not None:
        latest.add(newest_noise)
    return [latency, measured, flagged, noise, ratio, latest]


def tier_families(usages: Sequence[TierUsage], alerts: Sequence[TierAlert]) -> list[MetricFamily]:
    """Return the tier usage families, one sample per tier, and the alerts raised."""
    used = MetricFamily(
        "dsa110_tier_used_bytes", "Bytes the pipeline holds under each storage tier's root."
    )
    total = MetricFamily("dsa110_tier_total_bytes", "Size of each tier's filesystem, bytes.")
    free = MetricFamily("dsa110_tier_free_bytes", "Free bytes on each tier's filesystem.")
    full = MetricFamily(
        "dsa110_tier_fraction_full", "Fraction of each tier's filesystem in use (as df)."
    )
    for u in usages:
        used.add(u.used_bytes, tier=u.tier, path=u.path)
        total.add(u.total_bytes, tier=u.tier, path=u.path)
        free.add(u.free_bytes, tier=u.tier, path=u.path)
        full.add(u.fraction_full, tier=u.tier, path=u.path)
    alert = MetricFamily(
        "dsa110_tier_alerts", "Tier alerts raised now (tiered-storage thresholds), by level."
    )
    levels: dict[tuple[str, str], int] = {}
    for a in alerts:
        levels[(a.tier, a.level)] = levels.get((a.tier, a.level), 0) + 1
    for (tier, level), n in sorted(levels.items()):
        alert.add(n, tier=tier, level=level)
    return [used, total, free, full, alert]


def collect(
    conn: sqlite3.Connection | None,
    usages: Sequence[TierUsage],
    alerts: Sequence[TierAlert],
    input_backlog_files: int | None,
) -> list[MetricFamily]:
    """Return every family of ``/metrics``; ``conn`` None means the registry is unreadable.

    The tier families do not need the registry, so a missing or damaged registry still
    reports them, with ``dsa110_registry_up 0``.
    """
    up = MetricFamily("dsa110_registry_up", "1 if the registry could be read, else 0.")
    up.add(0 if conn is None else 1)
    families = [up]
    if conn is not None:
        families += registry_families(conn)
    backlog = MetricFamily(
        "dsa110_input_backlog_files",
        "Files in the input folder not registered yet (the incoming sensor's backlog).",
    )
    if input_backlog_files is not None:
        backlog.add(input_backlog_files)
    return [*families, backlog, *tier_families(usages, alerts)]
