"""Read-only analytics over the registry with DuckDB.

DuckDB attaches ``pipeline.sqlite3`` through its SQLite scanner, shipped as a Python package
(``duckdb-extension-sqlite-scanner``) and loaded from disk, so nothing downloads at run time.
The registry stays the single source of truth; DuckDB only reads it.
"""

from __future__ import annotations

import importlib.resources
import os
from pathlib import Path
from typing import Any

import duckdb

from dsa110_assets.settings import Settings


def _sqlite_extension_path() -> str:
    root = importlib.resources.files("duckdb_extension_sqlite_scanner") / "extensions"
    version = f"v{duckdb.__version__}"
    path = root / version / "sqlite_scanner.duckdb_extension"
    if not path.is_file():
        raise RuntimeError(
            f"DuckDB SQLite scanner for {version} is not installed; "
            "duckdb and duckdb-extension-sqlite-scanner must be the same release"
        )
    return str(path)


def connect_registry(db_path: Path) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with the registry attached read-only as schema ``reg``."""
    if not db_path.is_file():
        raise FileNotFoundError(f"registry {db_path} does not exist (run 'dsa110 db init')")
    con = duckdb.connect()
    con.load_extension(_sqlite_extension_path())
    con.execute(f"ATTACH '{db_path}' AS reg (TYPE sqlite, READ_ONLY)")
    return con


def folder_bytes(folder: Path) -> tuple[int, int]:
    """(bytes, files) below ``folder``, not following symlinks."""
    total = count = 0
    if not folder.exists():
        return 0, 0
    for dirpath, _dirnames, filenames in os.walk(folder):
        for name in filenames:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
                count += 1
            except OSError:
                continue
    return total, count


def pipeline_stats(settings: Settings) -> dict[str, Any]:
    """Counts by state, products per day and bytes per storage tier."""
    con = connect_registry(settings.db_path)
    try:
        by_state = dict(
            con.execute(
                "SELECT state, COUNT(*) FROM reg.processing_queue GROUP BY state ORDER BY state"
            ).fetchall()
        )
        per_day = [
            {"date": str(day), "groups": groups, "subband_files": files, "ms": ms}
            for day, groups, files, ms in con.execute(
                """
                SELECT substr(q.group_id, 1, 10) AS day,
                       COUNT(DISTINCT q.group_id),
                       COUNT(sf.path),
                       COUNT(DISTINCT m.path)
                FROM reg.processing_queue q
                LEFT JOIN reg.subband_files sf ON sf.group_id = q.group_id
                LEFT JOIN reg.ms_index m ON m.group_id = q.group_id
                GROUP BY day ORDER BY day
                """
            ).fetchall()
        ]
        products = {
            table: con.execute(f"SELECT COUNT(*) FROM reg.{table}").fetchone()[0]
            for table in (
                "subband_files",
                "ms_index",
                "images",
                "calibration_tables",
                "photometry",
                "mosaics",
            )
        }
        registered_raw = con.execute(
            "SELECT COALESCE(SUM(size_bytes), 0) FROM reg.subband_files"
        ).fetchone()[0]
    finally:
        con.close()
    tiers = {
        "hdd_input": settings.input_dir,
        "ssd_products": settings.products_dir,
        "hdd_state": settings.state_dir,
        "cold_archive": settings.archive_dir,
    }
    bytes_per_tier = {}
    for tier, folder in tiers.items():
        size, files = folder_bytes(folder)
        bytes_per_tier[tier] = {"path": str(folder), "bytes": size, "files": files}
    return {
        "registry": str(settings.db_path),
        "groups_by_state": by_state,
        "products": products,
        "registered_raw_bytes": int(registered_raw),
        "per_day": per_day,
        "bytes_per_tier": bytes_per_tier,
    }
