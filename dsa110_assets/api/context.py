"""What every request handler needs: the settings, the Dagster client, the tier readings.

One :class:`ApiContext` is made by :func:`~dsa110_assets.api.app.create_app` and kept on the
application; handlers receive it through :func:`api_context` (a FastAPI dependency), so
tests can build an app on any settings and any Dagster URL.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from fastapi import Request

from dsa110_assets.api.dagster_client import DagsterClient, DagsterUnavailable
from dsa110_assets.api.models import DagsterReach
from dsa110_assets.api.queries import open_registry
from dsa110_assets.api.tiers import TierUsageCache
from dsa110_assets.settings import Settings

#: The incoming-files sensor (``sensors/incoming.py``), which ``/api/streaming`` switches.
INCOMING_SENSOR = "incoming_sensor"
#: How long ``/api/status`` waits for Dagster before reporting sensors as unknown.
STATUS_DAGSTER_TIMEOUT_S = 3.0


@dataclass(frozen=True)
class ApiContext:
    """The application's shared state (immutable; the tier cache guards its own)."""

    settings: Settings
    dagster: DagsterClient
    tiers: TierUsageCache
    incoming_sensor: str = INCOMING_SENSOR
    status_timeout_s: float = STATUS_DAGSTER_TIMEOUT_S

    @contextmanager
    def registry(self) -> Iterator[sqlite3.Connection]:
        """Yield a read-only connection to the registry (see :func:`open_registry`)."""
        with open_registry(self.settings.db_path) as conn:
            yield conn

    def dagster_reach(self, error: Exception | None = None) -> DagsterReach:
        """Return whether Dagster answered, given the error of the call that failed (if any).

        Status calls report Dagster's failure in their body instead of failing: a
        :class:`~dsa110_assets.api.dagster_client.DagsterUnavailable` means nothing answered,
        any other error that Dagster answered with one.
        """
        if error is None:
            return DagsterReach(url=self.dagster.url, reachable=True)
        return DagsterReach(
            url=self.dagster.url,
            reachable=not isinstance(error, DagsterUnavailable),
            error=str(error),
        )


def api_context(request: Request) -> ApiContext:
    """Return the application's :class:`ApiContext` (FastAPI dependency)."""
    return request.app.state.context
