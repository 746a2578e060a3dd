"""``dsa110 storage``: the lifecycle of the bytes, by hand (the daily job does the same).

``archive`` moves finished groups' raw subbands to the archive tier (checksum verified),
``gc`` quarantines orphan products and marks rows whose file is gone, ``report`` shows each
tier's usage against the tiered-storage design's thresholds and cleans the staging of dead
conversions. The lifecycle modules are plain Python without astropy or Dagster, cheap to
import with the parser.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from typing import Any

from dsa110_assets.cli.arguments import add_actions, add_command, add_json, add_number
from dsa110_assets.cli.common import CommandError, existing_registry, tier_settings
from dsa110_assets.cli.display import display_name, print_json
from dsa110_assets.registry import Registry
from dsa110_assets.settings import Settings
from dsa110_assets.storage.lifecycle_rules import (
    DEFAULT_GRACE_DAYS,
    DEFAULT_OLDER_THAN_DAYS,
    GRACE_DAYS_RULE,
    OLDER_THAN_DAYS_RULE,
)
from dsa110_assets.storage.orphans import GcReport, collect_garbage
from dsa110_assets.storage.retention import ArchiveReport, archive_raw
from dsa110_assets.storage.stale_staging import StagingReport, clean_stale_staging
from dsa110_assets.storage.usage import TierAlert, TierUsage, tier_alerts, tier_usage


def add_storage_parser(sub: Any) -> None:
    """Add ``storage`` with ``archive``, ``gc`` and ``report`` to ``sub``."""
    storage = add_command(sub, "storage", None, help="raw retention, orphan products, tier usage")
    actions = add_actions(storage, "storage_command", "ACTION")
    archive = add_command(
        actions,
        "archive",
        cmd_storage_archive,
        help="move finished groups' raw subbands to the archive tier",
        description="Moves the raw subband files of groups that are converted, whose "
        "products are done (never a failed group) and that were observed more than DAYS ago "
        "to ARCHIVE/raw/YYYY-MM-DD/, each copy's SHA-256 verified against its original "
        "before the original is removed; the registry's paths follow. Exits 1 if any file "
        "was left in place (each is listed with the reason).",
    )
    add_number(
        archive,
        "--older-than",
        OLDER_THAN_DAYS_RULE,
        f"only groups observed at least DAYS ago (default {DEFAULT_OLDER_THAN_DAYS:g})",
        metavar="DAYS",
        default=DEFAULT_OLDER_THAN_DAYS,
    )
    archive.add_argument("--dry-run", action="store_true", help="report; move nothing")
    add_json(archive)
    gc = add_command(
        actions,
        "gc",
        cmd_storage_gc,
        help="quarantine orphan products; mark rows whose file is gone",
        description="Products on the SSD tier that no registry row names (and older than a "
        "day) move to PRODUCTS/.quarantine/YYYY-MM-DD/, and are removed by the first run N "
        "days after that day; rows whose file is gone get missing_since. Raw input, "
        "staging, the registry and names starting with '.' are never touched.",
    )
    add_number(
        gc,
        "--grace-days",
        GRACE_DAYS_RULE,
        f"days quarantine is kept (default {DEFAULT_GRACE_DAYS})",
        metavar="N",
        default=DEFAULT_GRACE_DAYS,
    )
    gc.add_argument("--dry-run", action="store_true", help="report; move, remove, mark nothing")
    add_json(gc)
    report = add_command(
        actions,
        "report",
        cmd_storage_report,
        help="usage per tier, alerts, and staging of dead conversions cleaned",
        description="Bytes the pipeline holds on each tier and how full its filesystem is, "
        "the alerts of the tiered-storage design (staging above 10 GB: warning, 30 GB: "
        "critical; a filesystem above 90% full: critical), and the tmpfs/SSD staging left "
        "by dead conversions, removed.",
    )
    report.add_argument(
        "--dry-run", action="store_true", help="list stale staging without removing it"
    )
    add_json(report)


@contextmanager
def _lifecycle_registry(dry_run: bool) -> Iterator[tuple[Settings, Registry]]:
    """Yield the settings and the registry: read-only for a dry run (nothing can change)."""
    settings = Settings.from_env() if dry_run else tier_settings()
    with Registry(existing_registry(settings), readonly=dry_run) as registry:
        yield settings, registry


def _refuse_problems(what: str, problems: list[tuple[Any, str]], *, listed: bool) -> None:
    """Print every problem (unless ``listed`` already, in the JSON) and raise if any.

    Raises
    ------
    CommandError
        Naming how many and the first.
    """
    if not problems:
        return
    if not listed:
        for path, reason in problems:
            print(f"problem: {display_name(path)}: {display_name(reason)}")
    first_path, first_reason = problems[0]
    raise CommandError(f"{len(problems)} {what} (first: {first_path}: {first_reason})")


def cmd_storage_archive(args: argparse.Namespace) -> int:
    """Archive the raw files of finished old groups; return 0, or raise on a problem.

    Raises
    ------
    CommandError
        No registry, or a file was left in place (checksum mismatch, missing, changed).
    """
    with _lifecycle_registry(args.dry_run) as (settings, registry):
        result = archive_raw(
            settings,
            registry,
            now=time.time(),
            older_than_days=args.older_than,
            dry_run=args.dry_run,
        )
    if args.json:
        print_json(_archive_json(result))
    else:
        verb = "would archive" if result.dry_run else "archived"
        for group_id in result.groups:
            files = [f for f in result.archived if f.group_id == group_id]
            folder = files[0].archived.parent
            size = sum(f.bytes for f in files)
            print(f"{verb} {group_id}: {len(files)} files, {size} bytes -> {display_name(folder)}")
        print(result.summary())
    _refuse_problems("raw files left in place", result.problems, listed=args.json)
    return 0


def cmd_storage_gc(args: argparse.Namespace) -> int:
    """Quarantine orphans, remove expired quarantine, mark missing rows; return 0.

    Raises
    ------
    CommandError
        No registry, or an orphan could not be moved.
    """
    with _lifecycle_registry(args.dry_run) as (settings, registry):
        result = collect_garbage(
            settings, registry, now=time.time(), grace_days=args.grace_days, dry_run=args.dry_run
        )
    if args.json:
        print_json(_gc_json(result))
        _refuse_problems("products not collected", result.problems, listed=True)
        return 0
    dry = result.dry_run
    for orphan, target in result.quarantined:
        verb = "would quarantine" if dry else "quarantined"
        print(f"{verb} {display_name(orphan)} -> {display_name(target)}")
    for folder in result.removed:
        print(f"{'would remove' if dry else 'removed'} {display_name(folder)} (grace over)")
    for row in result.missing:
        print(f"missing: {row.table} {display_name(row.path)}")
    print(result.summary())
    _refuse_problems("products not collected", result.problems, listed=False)
    return 0


def cmd_storage_report(args: argparse.Namespace) -> int:
    """Print each tier's usage, the alerts, and the stale staging cleaned; return 0."""
    settings = Settings.from_env()
    staging = clean_stale_staging(settings, dry_run=args.dry_run)
    usages = tier_usage(settings)
    alerts = tier_alerts(usages)
    if args.json:
        print_json(_report_json(usages, alerts, staging))
        return 0
    print(f"{'tier':<14} {'used':>10} {'free':>10} {'full':>5}  path")
    for u in usages:
        print(
            f"{u.tier:<14} {_gb(u.used_bytes):>10} {_gb(u.free_bytes):>10}"
            f" {u.fraction_full:>5.0%}  {display_name(u.path)}"
        )
    for alert in alerts:
        print(f"{alert.level.upper()} {alert.tier}: {display_name(alert.reason)}")
    if not alerts:
        print("no alerts")
    for entry in staging.stale:
        verb = "would remove" if staging.dry_run else "removed"
        print(f"{verb} stale staging {display_name(entry.path)} (pid {entry.pid} is gone)")
    print(staging.summary())
    return 0


def _gb(n: int) -> str:
    """Return ``n`` bytes in GB with two decimals (the design's unit)."""
    return f"{n / 1e9:.2f} GB"


def _archive_json(result: ArchiveReport) -> dict[str, Any]:
    """Return an archive pass as ``--json`` prints it."""
    return {
        "dry_run": result.dry_run,
        "horizon": result.horizon,
        "archived": [
            {
                "group_id": f.group_id,
                "subband": f.subband_idx,
                "source": f.source,
                "archived": f.archived,
                "bytes": f.bytes,
                "sha256": f.sha256,
            }
            for f in result.archived
        ],
        "finished": result.finished,
        "problems": [{"path": p, "reason": r} for p, r in result.problems],
    }


def _gc_json(result: GcReport) -> dict[str, Any]:
    """Return a garbage-collection pass as ``--json`` prints it."""
    return {
        "dry_run": result.dry_run,
        "quarantined": [{"path": a, "quarantine": b} for a, b in result.quarantined],
        "removed": result.removed,
        "missing": [
            {"table": r.table, "path": r.path, "missing_since": r.missing_since}
            for r in result.missing
        ],
        "newly_missing": result.newly_missing,
        "found_again": result.found_again,
        "young": result.young,
        "problems": [{"path": p, "reason": r} for p, r in result.problems],
    }


def _report_json(
    usages: list[TierUsage], alerts: list[TierAlert], staging: StagingReport
) -> dict[str, Any]:
    """Return the usage report as ``--json`` prints it."""
    return {
        "tiers": [asdict(u) for u in usages],
        "alerts": [asdict(a) for a in alerts],
        "stale_staging": {
            "dry_run": staging.dry_run,
            "removed": [{"path": e.path, "bytes": e.bytes} for e in staging.stale],
            "in_progress": [e.path for e in staging.live],
        },
    }
