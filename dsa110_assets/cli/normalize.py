"""``dsa110 normalize``: rename subband files to their canonical group_id and register them."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from dsa110_assets.cli.arguments import add_command, add_json, add_number
from dsa110_assets.cli.common import CommandError
from dsa110_assets.cli.display import display_name, print_json
from dsa110_assets.settings import CLUSTER_TOLERANCE_RULE, SETTLE_RULE, Settings


def add_normalize_parser(sub: Any) -> None:
    """Add ``normalize`` and its options to ``sub``."""
    norm = add_command(
        sub,
        "normalize",
        cmd_normalize,
        help="rename subband files to their canonical group_id",
        description="Normalize subband file names in DIR to the canonical "
        "group_id and register them. Never overwrites or deletes a file.",
    )
    norm.add_argument("directory", metavar="DIR", help="input folder")
    norm.add_argument("--dry-run", action="store_true", help="report only; change nothing")
    norm.add_argument("--verbose", "-v", action="store_true", help="list every file's outcome")
    add_number(
        norm,
        "--tolerance",
        CLUSTER_TOLERANCE_RULE,
        "clustering tolerance in seconds, > 0 and <= 300 (default PIPELINE_CLUSTER_"
        "TOLERANCE_S, 60)",
        metavar="S",
    )
    add_number(
        norm,
        "--settle",
        SETTLE_RULE,
        "skip files modified less than S seconds ago (default 5)",
        metavar="S",
    )
    norm.add_argument(
        "--no-register",
        dest="register",
        action="store_false",
        help="rename only; do not touch the registry",
    )
    add_json(norm, "print the stats as JSON")


def cmd_normalize(args: argparse.Namespace) -> int:
    """Normalize the names in ``DIR`` (and register the files unless ``--no-register``); return 0.

    Raises
    ------
    CommandError
        When ``DIR`` is not a folder.
    """
    from dsa110_assets.ingest import normalize_directory
    from dsa110_assets.registry import Registry

    settings = Settings.from_env()
    directory = Path(args.directory)
    if not directory.is_dir():
        raise CommandError(f"{directory} is not a folder")
    registry = None
    if args.register:
        settings.ensure_dirs()
        registry = Registry(settings.db_path)
    try:
        stats = normalize_directory(
            directory,
            cluster_tolerance_s=settings.cluster_tolerance_s
            if args.tolerance is None
            else args.tolerance,
            dry_run=args.dry_run,
            registry=registry,
            settle_s=settings.settle_s if args.settle is None else args.settle,
            details=args.verbose or args.json,
            expected_subbands=settings.expected_subbands,
        )
    finally:
        if registry is not None:
            registry.close()
    if args.json:
        print_json(stats)
        return 0
    if args.verbose:
        _print_outcomes(stats["files"], args.dry_run)
    _print_summary(stats, args.dry_run, settings.db_path if registry else None)
    return 0


def _print_outcomes(files: list[dict[str, Any]], dry_run: bool) -> None:
    """Print each renamed or refused file on a line (unchanged and registered files are quiet)."""
    for f in files:
        if f["action"] == "renamed":
            print(
                f"{'would rename' if dry_run else 'renamed'}: {display_name(f['name'])}"
                f" -> {display_name(f['new_name'])}"
            )
        elif f["action"] not in ("unchanged", "registered"):
            print(
                f"{display_name(f['action'])}: {display_name(f['name'])}: "
                f"{display_name(f.get('reason', ''))}"
            )


def _print_summary(stats: dict[str, Any], dry_run: bool, registered_in: Path | None) -> None:
    """Print the one-line count of what happened."""
    verb = "would rename" if dry_run else "renamed"
    print(
        f"{stats['files_scanned']} files scanned, {verb} {stats['files_renamed']}, "
        f"{stats['files_unchanged']} already canonical, {stats['groups']} groups "
        f"({stats['groups_created']} new, {stats['groups_completed']} complete), "
        f"{stats['conflicts']} conflicts, {stats['skipped']} skipped"
        + (
            f", {stats['files_registered']} registered in {display_name(registered_in)}"
            if registered_in is not None
            else ""
        )
    )
