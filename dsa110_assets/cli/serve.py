"""``dsa110 serve``: the status API (FastAPI under uvicorn), port 8000 by default.

The storage document's API: ``/api/status``, ``/api/streaming/*``, ``/api/data/*``,
``/api/mosaic/*``, docs at ``/api/docs``, and Prometheus metrics at ``/metrics``. It reads the
registry named by ``PIPELINE_DB`` (read-only) and switches sensors and launches mosaics
through the Dagster webserver at ``--dagster-url``. Runs until interrupted (Ctrl-C or
SIGTERM, which uvicorn turns into a clean shutdown).
"""

from __future__ import annotations

import argparse
from typing import Any

from dsa110_assets.api.dagster_client import DEFAULT_DAGSTER_URL, check_url
from dsa110_assets.cli.arguments import add_command, add_number
from dsa110_assets.settings import NumberRule

PORT_RULE = NumberRule(int, 1, 65535)
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000


def dagster_url_arg(text: str) -> str:
    """Return ``text`` if it is an ``http(s)://HOST[:PORT]`` URL (argparse ``type``)."""
    try:
        return check_url(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_serve_parser(sub: Any) -> None:
    """Add ``serve`` and its options to ``sub``."""
    serve = add_command(
        sub,
        "serve",
        cmd_serve,
        help="run the status API (FastAPI, docs at /api/docs, metrics at /metrics)",
        description="Serves the pipeline status API: queue and products, storage tiers and "
        "alerts, the incoming sensor (switched through Dagster's GraphQL API), observations "
        "and images with their FITS files, mosaics launched as Dagster runs, and Prometheus "
        "metrics. Reads the registry at PIPELINE_DB read-only.",
    )
    serve.add_argument(
        "--host", default=DEFAULT_HOST, help=f"address to listen on (default {DEFAULT_HOST})"
    )
    add_number(
        serve,
        "--port",
        PORT_RULE,
        f"port, 1-65535 (default {DEFAULT_PORT})",
        default=DEFAULT_PORT,
    )
    serve.add_argument(
        "--dagster-url",
        type=dagster_url_arg,
        default=DEFAULT_DAGSTER_URL,
        help=f"the Dagster webserver (default {DEFAULT_DAGSTER_URL})",
    )


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve the API until interrupted; return 0."""
    import uvicorn

    from dsa110_assets.api.app import create_app
    from dsa110_assets.settings import Settings

    app = create_app(Settings.from_env(), dagster_url=args.dagster_url)
    print(
        f"dsa110 serve: API on http://{args.host}:{args.port}/api/docs"
        f" (metrics /metrics), Dagster at {args.dagster_url}",
        flush=True,
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    return 0
