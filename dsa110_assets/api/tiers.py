"""Tier usage for the API, measured at most once per interval however often it is asked.

:func:`~dsa110_assets.storage.usage.tier_usage` walks every tier's tree to count the bytes the
pipeline holds: a second or more on a full products tier. ``/api/status`` and a Prometheus
scrape every 15 s would repeat that walk for every request, so the API keeps the last
measurement for ``ttl_s`` seconds (one walk at a time; concurrent requests wait for it and
share the result). Usage changes over minutes; a reading 30 s old says the same.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from dsa110_assets.settings import Settings
from dsa110_assets.storage.usage import (
    TierAlert,
    TierUsage,
    UsageThresholds,
    tier_alerts,
    tier_usage,
)

DEFAULT_TTL_S = 30.0


@dataclass(frozen=True)
class TierReading:
    """One measurement of every tier, its alerts, and when it was taken (Unix seconds)."""

    usages: list[TierUsage]
    alerts: list[TierAlert]
    measured_at: float


class TierUsageCache:
    """The latest :class:`TierReading`, renewed when older than ``ttl_s`` seconds."""

    def __init__(
        self,
        settings: Settings,
        *,
        ttl_s: float = DEFAULT_TTL_S,
        thresholds: UsageThresholds | None = None,
    ) -> None:
        self.settings = settings
        self.ttl_s = ttl_s
        self.thresholds = thresholds or UsageThresholds()
        self._lock = threading.Lock()
        self._reading: TierReading | None = None

    def reading(self) -> TierReading:
        """Return a reading at most ``ttl_s`` old, measuring one if needed."""
        with self._lock:
            now = time.time()
            if self._reading is None or now - self._reading.measured_at >= self.ttl_s:
                usages = tier_usage(self.settings)
                self._reading = TierReading(usages, tier_alerts(usages, self.thresholds), now)
            return self._reading
