"""``dsa110 db``: create, describe and export the ``pipeline.sqlite3`` registry."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from dsa110_assets.cli.arguments import add_actions, add_command, add_json
from dsa110_assets.cli.common import existing_registry, tier_settings
from dsa110_assets.cli.display import display_name, print_json
from dsa110_assets.settings import Settings


def add_db_parser(sub: Any) -> Any:
    """Add ``db`` with ``init`` and ``info`` to ``sub``; return its actions, for ``export``.

    ``export`` is added after ``query`` (see :func:`add_db_export_parser`) so the order of
    the help stays what it has always been.
    """
    db = add_command(sub, "db", None, help="the pipeline.sqlite3 registry")
    actions = add_actions(db, "db_command", "ACTION")
    add_command(
        actions,
        "init",
        cmd_db_init,
        help="create or upgrade the registry",
        description="Create pipeline.sqlite3 or apply pending migrations.",
    )
    info = add_command(
        actions,
        "info",
        cmd_db_info,
        help="schema version and row counts",
        description="Show the registry's path, schema version, rows.",
    )
    add_json(info)
    return actions


def add_db_export_parser(actions: Any) -> None:
    """Add ``db export`` to the ``db`` actions."""
    export = add_command(
        actions,
        "export",
        cmd_db_export,
        help="write the registry and photometry to Parquet in the archive tier",
        description="DuckDB COPY of the registry tables to ARCHIVE/parquet/{table}/date=.../ "
        "(zstd, Hive-partitioned by UTC date); each table is swapped in atomically.",
    )
    export.add_argument("--out", help="folder (default: ARCHIVE/parquet)")
    add_json(export)


def cmd_db_init(args: argparse.Namespace) -> int:
    """Create the registry or apply its pending migrations; return 0."""
    from dsa110_assets.registry import Registry

    settings = tier_settings()
    with Registry(settings.db_path) as registry:
        print(
            f"registry {display_name(settings.db_path)} at schema version {registry.schema_version}"
        )
    return 0


def registry_info(settings: Settings) -> dict[str, Any]:
    """Return the registry's path, size, schema versions, journal mode, rows and the settings.

    Read-only: works on a registry this user may not write, and cannot change it.

    Raises
    ------
    CommandError
        When there is no registry yet.
    """
    from dsa110_assets.registry import LATEST_VERSION, Registry
    from dsa110_assets.registry.inventory import journal_mode, table_row_counts

    path = existing_registry(settings)
    with Registry(path, readonly=True) as registry:
        return {
            "path": str(path),
            "bytes": path.stat().st_size,
            "schema_version": registry.schema_version,
            "latest_version": LATEST_VERSION,
            "journal_mode": journal_mode(registry),
            "rows": table_row_counts(registry),
            "settings": dict(settings.as_table()),
        }


def cmd_db_info(args: argparse.Namespace) -> int:
    """Print :func:`registry_info` (as JSON with ``--json``); return 0."""
    info = registry_info(Settings.from_env())
    if args.json:
        print_json(info)
        return 0
    print(
        f"registry:       {display_name(info['path'])} ({info['bytes']} bytes, "
        f"{info['journal_mode']})"
    )
    print(f"schema version: {info['schema_version']} (latest {info['latest_version']})")
    for table, rows in info["rows"].items():
        print(f"  {display_name(table):<20} {rows:>10} rows")
    return 0


def cmd_db_export(args: argparse.Namespace) -> int:
    """Export the registry tables to Parquet and print where; return 0.

    Raises
    ------
    dsa110_assets.analytics.ExportError
        When a table cannot be written (the message names the table and folder).
    """
    from dsa110_assets.analytics import export_parquet

    settings = Settings.from_env()
    report = export_parquet(settings, out_dir=Path(args.out) if args.out else None)
    if args.json:
        print_json(
            {
                t.table: {"rows": t.rows, "bytes": t.bytes, "path": str(t.path)}
                for t in report.tables
            }
        )
        return 0
    print(f"exported to {display_name(report.out_dir)} (Parquet, zstd, Hive-partitioned by date)")
    for t in report.tables:
        print(f"  {t.table:<20} {t.rows:>9} rows {t.bytes / 1e6:>9.2f} MB  {len(t.dates)} dates")
    return 0
