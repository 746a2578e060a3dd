"""``dsa110 query``: analytics over the registry, read through DuckDB."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

from dsa110_assets.cli.arguments import add_actions, add_command, add_json
from dsa110_assets.cli.common import CommandError
from dsa110_assets.cli.display import display_name, print_json
from dsa110_assets.settings import Settings


def add_query_parser(sub: Any) -> None:
    """Add ``query`` with ``stats`` and ``lightcurve`` to ``sub``."""
    query = add_command(sub, "query", None, help="analytics over the registry (DuckDB)")
    actions = add_actions(query, "query_command", "QUERY")
    stats = add_command(
        actions,
        "stats",
        cmd_query_stats,
        help="counts by state, products per day, bytes per tier",
        description="Pipeline statistics read through DuckDB.",
    )
    add_json(stats)
    lc = add_command(
        actions,
        "lightcurve",
        cmd_query_lightcurve,
        help="one source's forced-photometry light curve",
        description="Every epoch of SOURCE (catalog source id) in the photometry table.",
    )
    lc.add_argument("source")
    add_json(lc)


def cmd_query_lightcurve(args: argparse.Namespace) -> int:
    """Print every epoch of one source's forced photometry; return 0.

    Raises
    ------
    CommandError
        When the source has no photometry (the JSON form prints an empty list instead).
    """
    from dsa110_assets.analytics import light_curve

    points = light_curve(Settings.from_env().db_path, args.source)
    if args.json:
        print_json([dataclasses.asdict(p) for p in points])
        return 0
    if not points:
        raise CommandError(f"no photometry for source {args.source!r}")
    print(f"{display_name(args.source)}: {len(points)} epochs")
    for p in points:
        err = f" +/- {p.flux_err_jy * 1e3:.2f}" if p.flux_err_jy is not None else ""
        flux = f"{p.flux_jy * 1e3:9.2f}{err} mJy" if p.flux_jy is not None else "      n/a"
        print(f"  {p.mjd if p.mjd is not None else float('nan'):.5f}  {p.date}  {flux}"
              f"  {display_name(Path(p.image_path).name)}")  # fmt: skip
    return 0


def cmd_query_stats(args: argparse.Namespace) -> int:
    """Print the pipeline's counts by state, per day and per storage tier; return 0."""
    from dsa110_assets.analytics import pipeline_stats

    stats = pipeline_stats(Settings.from_env())
    if args.json:
        print_json(stats)
        return 0
    print(f"registry: {display_name(stats['registry'])}")
    print(
        "groups by state: "
        + (
            ", ".join(f"{display_name(k)}={v}" for k, v in stats["groups_by_state"].items())
            or "none"
        )
    )
    print("products: " + ", ".join(f"{k}={v}" for k, v in stats["products"].items()))
    for day in stats["per_day"]:
        print(
            f"  {day['date']}: {day['groups']} groups, {day['subband_files']} subband files,"
            f" {day['ms']} measurement sets"
        )
    for tier, usage in stats["bytes_per_tier"].items():
        print(
            f"  {tier:<13} {usage['bytes'] / 1e6:>10.1f} MB in {usage['files']:>6} files"
            f"  {display_name(usage['path'])}"
        )
    return 0
