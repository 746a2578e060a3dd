"""Parquet export of registry tables: Hive-partitioned by UTC date, swapped in atomically."""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import shutil
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import duckdb

from dsa110_assets.analytics.attach import DATE_SOURCES, connect_registry, date_sql
from dsa110_assets.analytics.queries import folder_bytes
from dsa110_assets.errors import PipelineError
from dsa110_assets.safe_fs import _AT_FDCWD, _renameat2
from dsa110_assets.settings import Settings

EXPORT_TABLES: tuple[str, ...] = (
    "processing_queue",
    "ms_index",
    "images",
    "calibration_tables",
    "photometry",
    "mosaics",
    "stage_status",
)


class ExportError(PipelineError, RuntimeError):
    """A Parquet export could not be made; the message names the table and folder."""


# --- Parquet export -----------------------------------------------------------------------


@dataclass(frozen=True)
class TableExport:
    """One table's export: where it is, how many rows, bytes and files, which dates."""

    table: str
    path: Path
    rows: int
    bytes: int
    files: int
    dates: tuple[str, ...]  # partition values, "__HIVE_DEFAULT_PARTITION__" for undated rows


@dataclass(frozen=True)
class ExportReport:
    """What :func:`export_parquet` wrote."""

    out_dir: Path
    tables: tuple[TableExport, ...]

    @property
    def rows(self) -> dict[str, int]:
        """Rows written, by table."""
        return {t.table: t.rows for t in self.tables}

    @property
    def bytes(self) -> dict[str, int]:
        """Bytes written, by table."""
        return {t.table: t.bytes for t in self.tables}


_RENAME_EXCHANGE = 2  # renameat2 flag: swap the two names atomically


def _swap_into_place(new: Path, final: Path) -> None:
    """Make ``new`` appear at ``final``; the previous ``final`` (if any) ends up at ``new``.

    Linux ``renameat2(RENAME_EXCHANGE)`` swaps the two folders in one atomic step, so a reader
    sees the old export or the new one, never neither. Without it (other filesystems), two
    renames leave a moment in which ``final`` is absent, but never half-written.
    """
    if not final.exists():
        os.rename(new, final)
        return
    if _renameat2 is not None:
        if _renameat2(_AT_FDCWD, os.fsencode(new), _AT_FDCWD, os.fsencode(final),
                      _RENAME_EXCHANGE) == 0:  # fmt: skip
            return
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
            raise OSError(err, os.strerror(err), str(new), None, str(final))
    aside = new.with_name(new.name + ".old")
    os.rename(final, aside)
    os.rename(new, final)
    os.rename(aside, new)


# Each export's temporary folder ``.{table}.tmp-{token}`` has a lock file beside it,
# ``.{table}.tmp-{token}.lock``, held (flock) by the exporting process from before the folder
# exists until after it is gone. The kernel drops the lock when that process dies, however it
# dies, so "lock free" means "owner gone": only then is a temporary folder a leftover.
_LOCK_SUFFIX = ".lock"


def _claim_temp(out_dir: Path, table: str) -> tuple[Path, Path, int]:
    """Claim a fresh temporary folder name for ``table`` and its held lock: ``(tmp, lock, fd)``."""
    token = f"{os.getpid()}-{uuid.uuid4().hex}"
    tmp = out_dir / f".{table}.tmp-{token}"
    lock = out_dir / f".{table}.tmp-{token}{_LOCK_SUFFIX}"
    fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_RDWR | os.O_CLOEXEC, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return tmp, lock, fd


def _release_temp(tmp: Path, lock: Path, fd: int) -> None:
    """Delete our temporary folder (and its ``.old`` aside), then the lock, then let go."""
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(tmp.with_name(tmp.name + ".old"), ignore_errors=True)
        lock.unlink(missing_ok=True)
    finally:
        os.close(fd)


def _remove_leftovers(out_dir: Path, table: str) -> list[Path]:
    """Delete temporary folders of this table whose export is no longer running.

    A folder whose lock another process holds belongs to a live export and is left alone
    (two ``dsa110 db export`` at once must not delete each other's work). Returns what was
    removed.
    """
    removed: list[Path] = []
    prefix = f".{table}.tmp-"
    for stale in sorted(out_dir.glob(f"{prefix}*")):
        name = stale.name
        base = name[: -len(_LOCK_SUFFIX)] if name.endswith(_LOCK_SUFFIX) else name
        base = base[: -len(".old")] if base.endswith(".old") else base
        lock = out_dir / (base + _LOCK_SUFFIX)
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            fd = None  # no lock at all: an export from before locks, or one long gone
        try:
            if fd is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # a live export's
            if stale.is_dir() and not stale.is_symlink():
                shutil.rmtree(stale, ignore_errors=True)
            else:
                stale.unlink(missing_ok=True)
            removed.append(stale)
            if fd is not None and not (out_dir / base).exists():
                lock.unlink(missing_ok=True)
        finally:
            if fd is not None:
                os.close(fd)
    return removed


def _table_columns(con: duckdb.DuckDBPyConnection, table: str) -> list[str]:
    return [row[0] for row in con.execute(f"DESCRIBE reg.{table}").fetchall()]


def export_parquet(
    settings: Settings,
    *,
    tables: Iterable[str] = EXPORT_TABLES,
    out_dir: Path | None = None,
) -> ExportReport:
    """Export registry tables to Hive-partitioned, zstd-compressed Parquet.

    Each table goes to ``{out_dir}/{table}/date=YYYY-MM-DD/data_*.parquet`` (``out_dir``
    defaults to ``{archive}/parquet``), dated as in :data:`DATE_SOURCES`; the partition column
    replaces a table's own ``date`` column (only ``mosaics`` has one, and it is the first
    choice there). Each table is written to a temporary folder beside its final one and swapped
    in, so a re-export replaces the previous one and no reader ever sees a partial export. An
    empty table gives an empty folder. Read back with
    ``read_parquet('{out_dir}/{table}/**/*.parquet', hive_partitioning=true)``.

    Raises
    ------
    ExportError
        A table is unknown or absent from the registry, or DuckDB failed to write it.
    """
    tables = tuple(tables)
    unknown = [t for t in tables if t not in DATE_SOURCES]
    if unknown:
        raise ExportError(
            f"cannot export {', '.join(unknown)}: no date rule (exportable: "
            f"{', '.join(DATE_SOURCES)})"
        )
    out_dir = Path(out_dir) if out_dir is not None else settings.archive_dir / "parquet"
    out_dir.mkdir(parents=True, exist_ok=True)
    con = connect_registry(settings.db_path)
    exports: list[TableExport] = []
    try:
        present = {
            row[0]
            for row in con.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_catalog = 'reg'"
            ).fetchall()
        }
        missing = [t for t in tables if t not in present]
        if missing:
            raise ExportError(
                f"registry {settings.db_path} has no table {', '.join(missing)}"
                " (is its schema migrated?)"
            )
        for table in tables:
            exports.append(_export_table(con, table, out_dir))
    finally:
        con.close()
    return ExportReport(out_dir=out_dir, tables=tuple(exports))


def _export_table(con: duckdb.DuckDBPyConnection, table: str, out_dir: Path) -> TableExport:
    _remove_leftovers(out_dir, table)
    final = out_dir / table
    columns = _table_columns(con, table)
    select = "* EXCLUDE (date)" if "date" in columns else "*"
    query = f"SELECT {select}, {date_sql(table)} AS date FROM reg.{table}"
    tmp, lock, lock_fd = _claim_temp(out_dir, table)
    target = str(tmp).replace("'", "''")
    try:
        rows = con.execute(
            f"COPY ({query}) TO '{target}' (FORMAT parquet, COMPRESSION zstd, PARTITION_BY (date))"
        ).fetchone()[0]
        tmp.mkdir(exist_ok=True)  # DuckDB may write nothing for an empty table
        _swap_into_place(tmp, final)
    except (duckdb.Error, OSError) as exc:
        raise ExportError(f"exporting {table} to {final} failed: {exc}") from exc
    finally:
        _release_temp(tmp, lock, lock_fd)  # the previous export, or a failed attempt
    size, files = folder_bytes(final)
    dates = tuple(
        sorted(p.name.split("=", 1)[1] for p in final.iterdir() if p.name.startswith("date="))
    )
    return TableExport(table, final, int(rows), size, files, dates)
