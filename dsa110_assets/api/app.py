"""The application factory: one FastAPI app over a registry and a Dagster webserver.

The storage document's API (port 8000, docs at ``/api/docs``): a thin HTTP shell over plain
functions (:mod:`~dsa110_assets.api.queries` for the registry, :mod:`~dsa110_assets.api
.metrics` for ``/metrics``, :mod:`~dsa110_assets.api.mosaic_runs` for mosaics) and over
Dagster's GraphQL API (:mod:`~dsa110_assets.api.dagster_client`). It reads the registry
only, read-only, and changes the pipeline only through Dagster.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.responses import RedirectResponse

from dsa110_assets.api.context import STATUS_DAGSTER_TIMEOUT_S, ApiContext
from dsa110_assets.api.dagster_client import (
    DEFAULT_DAGSTER_URL,
    DEFAULT_LOCATION,
    DEFAULT_REPOSITORY,
    DEFAULT_TIMEOUT_S,
    DagsterClient,
)
from dsa110_assets.api.errors import install_handlers
from dsa110_assets.api.routers import data, metrics, mosaic, status, streaming
from dsa110_assets.api.tiers import DEFAULT_TTL_S, TierUsageCache
from dsa110_assets.settings import Settings

DOCS_URL = "/api/docs"


def create_app(
    settings: Settings,
    dagster_url: str = DEFAULT_DAGSTER_URL,
    *,
    location: str = DEFAULT_LOCATION,
    repository: str = DEFAULT_REPOSITORY,
    dagster_timeout_s: float = DEFAULT_TIMEOUT_S,
    status_timeout_s: float = STATUS_DAGSTER_TIMEOUT_S,
    tier_ttl_s: float = DEFAULT_TTL_S,
) -> FastAPI:
    """Return the status API for ``settings``' registry and tiers and Dagster at ``dagster_url``.

    Parameters
    ----------
    settings
        The tiers and the registry (``PIPELINE_*``); the registry may not exist yet (its
        endpoints answer 503 until ``dsa110 db init``).
    dagster_url
        The Dagster webserver whose GraphQL API switches sensors and launches runs.
    location, repository
        The code location (``workspace.yaml``'s ``location_name``) and repository name.
    dagster_timeout_s
        How long a mutation waits for Dagster.
    status_timeout_s
        How long read-only status calls wait for Dagster before reporting ``unknown``.
    tier_ttl_s
        How long a tier usage measurement is reused (see :mod:`dsa110_assets.api.tiers`).

    Raises
    ------
    ValueError
        ``dagster_url`` is not an http(s) URL.
    """
    client = DagsterClient(
        dagster_url, location=location, repository=repository, timeout_s=dagster_timeout_s
    )
    app = FastAPI(
        title="DSA-110 pipeline status API",
        description="Queue, products, storage tiers, streaming, data and mosaics of the DSA-110"
        " continuum pipeline (the storage architecture's API); Prometheus metrics at /metrics.",
        docs_url=DOCS_URL,
        openapi_url="/api/openapi.json",
        redoc_url=None,
    )
    app.state.context = ApiContext(
        settings=settings,
        dagster=client,
        tiers=TierUsageCache(settings, ttl_s=tier_ttl_s),
        status_timeout_s=status_timeout_s,
    )
    install_handlers(app)
    for module in (status, streaming, data, mosaic, metrics):
        app.include_router(module.router)

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse(DOCS_URL)

    return app
