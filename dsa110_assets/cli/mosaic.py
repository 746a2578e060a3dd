"""``dsa110 mosaic``: a mosaic of every image between two times, on demand."""

from __future__ import annotations

import argparse
from typing import Any

from dsa110_assets.cli.arguments import (
    PB_CUTOFF_RULE,
    add_actions,
    add_command,
    add_number,
    iso_time_arg,
    utc_naive_iso,
)
from dsa110_assets.cli.common import CommandError, tier_settings
from dsa110_assets.cli.display import display_name


def add_mosaic_parser(sub: Any) -> None:
    """Add ``mosaic create`` to ``sub``."""
    mosaic = add_command(sub, "mosaic", None, help="mosaics on demand")
    create = add_command(
        add_actions(mosaic, "mosaic_command", "ACTION"),
        "create",
        cmd_mosaic_create,
        help="mosaic every image between two times",
        description="Primary-beam-weighted mosaic of the images whose group_id lies in "
        "[START, END), written to PRODUCTS/mosaics/{START}_{END}.fits and registered.",
    )
    create.add_argument(
        "--start",
        required=True,
        type=iso_time_arg,
        help="ISO time, e.g. 2026-01-15T00:00:00; UTC unless it carries an offset (+05:00, Z)",
    )
    create.add_argument(
        "--end", required=True, type=iso_time_arg, help="ISO time (exclusive), as --start"
    )
    add_number(
        create,
        "--pb-cutoff",
        PB_CUTOFF_RULE,
        "primary-beam cutoff, in (0, 1) (default 0.2)",
        default=0.2,
    )


def cmd_mosaic_create(args: argparse.Namespace) -> int:
    """Build and register the mosaic of ``[--start, --end)``; return 0.

    Raises
    ------
    CommandError
        When ``--end`` is not after ``--start``.
    """
    from dsa110_assets.processing.daily_step import build_range_mosaic
    from dsa110_assets.registry import Registry

    settings = tier_settings()
    if args.end <= args.start:
        raise CommandError(
            f"--end {args.end.isoformat()} is not after --start {args.start.isoformat()} (UTC)"
        )
    with Registry(settings.db_path) as registry:
        outcome = build_range_mosaic(
            settings,
            registry,
            utc_naive_iso(args.start),
            utc_naive_iso(args.end),
            pb_cutoff=args.pb_cutoff,
        )
    r = outcome.result
    print(
        f"mosaic {display_name(r.path)}: {r.n_images} images ({len(r.skipped)} skipped), "
        f"{r.shape[1]}x{r.shape[0]} px, EFFNOISE {r.effective_noise_jy * 1e3:.3f} mJy/beam"
    )
    for path, reason in r.skipped:
        print(f"  skipped {display_name(path)}: {display_name(reason)}")
    return 0
