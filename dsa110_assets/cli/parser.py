"""The ``dsa110`` argument parser: one small function per command family, assembled here."""

from __future__ import annotations

import argparse

from dsa110_assets.cli.arguments import Parser, add_actions
from dsa110_assets.cli.backfill import add_backfill_parser
from dsa110_assets.cli.catalog import add_catalog_parser
from dsa110_assets.cli.db import add_db_export_parser, add_db_parser
from dsa110_assets.cli.flags import add_flags_parser
from dsa110_assets.cli.mosaic import add_mosaic_parser
from dsa110_assets.cli.normalize import add_normalize_parser
from dsa110_assets.cli.query import add_query_parser
from dsa110_assets.cli.reprocess import add_reprocess_parser
from dsa110_assets.cli.serve import add_serve_parser
from dsa110_assets.cli.simulate import add_simulate_parser
from dsa110_assets.cli.storage import add_storage_parser


def build_parser() -> argparse.ArgumentParser:
    """Return the parser of every subcommand; each sets ``func``, the function that runs it."""
    parser = Parser(
        prog="dsa110",
        description="DSA-110 continuum pipeline platform. Configuration comes from PIPELINE_* "
        "environment variables (see README); defaults live in the checkout.",
    )
    sub = add_actions(parser, "command", "COMMAND")
    add_simulate_parser(sub)
    add_normalize_parser(sub)
    db_actions = add_db_parser(sub)
    add_query_parser(sub)
    add_db_export_parser(db_actions)
    add_backfill_parser(sub)
    add_reprocess_parser(sub)
    add_mosaic_parser(sub)
    add_catalog_parser(sub)
    add_flags_parser(sub)
    add_serve_parser(sub)
    add_storage_parser(sub)
    return parser
