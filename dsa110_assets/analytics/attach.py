"""The registry as DuckDB sees it: attached read-only, and the UTC date of every row.

DuckDB attaches ``pipeline.sqlite3`` through its SQLite scanner, shipped as a Python package
(``duckdb-extension-sqlite-scanner``) and loaded from disk, so nothing downloads at run time.
The registry stays the single source of truth; DuckDB and plain SQLite only read it.

Every row is given a UTC date for per-day counts and for the Hive partitions of the Parquet
export (see :data:`DATE_SOURCES`): the observation's ``group_id`` (the group's UTC start) where
the row belongs to a group, so all products of one observation land in the same partition;
photometry by its own ``mjd`` (light curves and time-range queries filter on it); mosaics by
their own ``date``; and the row's bookkeeping time (``created_at`` and the like) only when
nothing better is present. Dates are pure integer arithmetic on MJD or Unix seconds, so no time
zone database is involved.
"""

from __future__ import annotations

import importlib.resources
import os
import shutil
import sqlite3
import tempfile
import weakref
from pathlib import Path

import duckdb

from dsa110_assets.registry.connection import connect_readonly
from dsa110_assets.settings import Settings

# UTC date (YYYY-MM-DD string) of each table's rows, tried left to right (first non-NULL wins).
_GROUP = "strftime(TRY_CAST(substr(group_id, 1, 10) AS DATE), '%Y-%m-%d')"


def _from_mjd(column: str) -> str:
    """Return SQL for the UTC date of an MJD column (NULL outside years 1858..9999)."""
    # MJD 0 is 1858-11-17 00:00 UTC and MJD days start at UTC midnight; values outside
    # years 1858..9999 are treated as missing rather than failing the whole query.
    return (
        f"CASE WHEN {column} >= 0 AND {column} < 2973484 THEN strftime(DATE '1858-11-17'"
        f" + CAST(floor({column}) AS INTEGER), '%Y-%m-%d') END"
    )


def _from_unix(column: str) -> str:
    """Return SQL for the UTC date of a Unix-seconds column (NULL outside years 1970..9999)."""
    return (
        f"CASE WHEN {column} >= 0 AND {column} < 253402300800 THEN strftime(DATE '1970-01-01'"
        f" + CAST(floor({column} / 86400.0) AS INTEGER), '%Y-%m-%d') END"
    )


DATE_SOURCES: dict[str, tuple[str, ...]] = {
    "processing_queue": (_GROUP, _from_unix("received_at")),
    "subband_files": (_GROUP, _from_unix("registered_at")),
    "ms_index": (_GROUP, _from_mjd("mid_mjd"), _from_mjd("start_mjd"), _from_unix("created_at")),
    "images": (_GROUP, _from_unix("created_at")),
    "calibration_tables": (_GROUP, _from_mjd("valid_start_mjd")),
    "photometry": (_from_mjd("mjd"), _GROUP, _from_unix("created_at")),
    "mosaics": (
        "strftime(TRY_CAST(date AS DATE), '%Y-%m-%d')",
        _from_mjd("start_mjd"),
        _from_unix("created_at"),
    ),
    "stage_status": (_GROUP, _from_unix("updated_at")),
    "ingest_conflicts": (_GROUP, _from_unix("detected_at")),
}


def date_sql(table: str) -> str:
    """Return the SQL expression of a row's UTC date in ``table`` (see :data:`DATE_SOURCES`)."""
    return f"COALESCE({', '.join(DATE_SOURCES[table])})"


def registry_path(settings_or_db_path: Settings | str | os.PathLike[str]) -> Path:
    """Return the registry file named by settings or given as a path."""
    if isinstance(settings_or_db_path, Settings):
        return settings_or_db_path.db_path
    return Path(settings_or_db_path)


def _sqlite_extension_path() -> str:
    """Return the packaged SQLite scanner matching the installed DuckDB release."""
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
    """Open an in-memory DuckDB with the registry attached read-only as schema ``reg``.

    The registry is first opened with :func:`~dsa110_assets.registry.connect_readonly`, which
    checks its schema version and finds out whether it can be read in place. DuckDB's SQLite
    scanner takes no URI, so it cannot open a WAL registry in a read-only folder (no ``-shm``
    can be made there); in that case a consistent copy is taken with SQLite's backup API into
    a private temporary folder, attached instead, and deleted when the connection is
    collected (or the process exits).
    """
    db_path = Path(db_path)
    source = connect_readonly(db_path)
    snapshot_dir: str | None = None
    try:
        if source.immutable:
            snapshot_dir = tempfile.mkdtemp(prefix="dsa110-registry-snapshot-")
            target = Path(snapshot_dir) / db_path.name
            copy = sqlite3.connect(target)
            try:
                source.backup(copy)
                copy.execute("PRAGMA journal_mode = DELETE")
            finally:
                copy.close()
            attach = target
        else:
            attach = db_path
    except BaseException:
        if snapshot_dir is not None:
            shutil.rmtree(snapshot_dir, ignore_errors=True)
        raise
    finally:
        source.close()
    con = duckdb.connect()
    if snapshot_dir is not None:
        weakref.finalize(con, shutil.rmtree, snapshot_dir, True)
    con.load_extension(_sqlite_extension_path())
    escaped = str(attach).replace("'", "''")
    con.execute(f"ATTACH '{escaped}' AS reg (TYPE sqlite, READ_ONLY)")
    return con
