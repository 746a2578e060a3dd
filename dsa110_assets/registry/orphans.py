"""The registry SQL of garbage collection: every path the registry names, and missing marks.

:mod:`dsa110_assets.storage.orphans` compares the product folders with the registry. What
the registry knows is read here, once per pass:

* every path a product row names (:data:`PATH_COLUMNS`: the row's own file, and those it
  refers to: thumbnails, mosaic weights, the derived calibration tables an MS was applied
  with);
* the partitions products are named after without a row of their own (the photometry and
  light-curve CSVs): the registry's group_ids and the UTC days they fall on;
* the groups with images, whose every WSClean product (``{group_id}-...fits``, the dirty
  image too, which has no row) belongs to the group's imaging;
* the product rows themselves (:data:`PRODUCT_TABLES`), whose ``missing_since`` (migration 9)
  records when their file was first found gone, and is cleared when it is back.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from dsa110_assets.registry.connection import Registry

#: table -> its columns holding the path of a product file or folder.
PATH_COLUMNS: dict[str, tuple[str, ...]] = {
    "ms_index": ("path", "bandpass_table", "gain_table"),
    "images": ("path", "thumbnail_path"),
    "calibration_tables": ("path",),
    "mosaics": ("path", "weights_path", "thumbnail_path"),
}
#: The tables with one row per product file, keyed by ``path``, that carry ``missing_since``.
PRODUCT_TABLES = ("ms_index", "images", "calibration_tables", "mosaics")


@dataclass(frozen=True)
class ProductRow:
    """A product row: its table, its file, and since when that file is missing (or None)."""

    table: str
    path: str
    missing_since: float | None


def known_paths(registry: Registry) -> set[str]:
    """Return every product path any registry row names (as written there)."""
    paths: set[str] = set()
    for table, columns in PATH_COLUMNS.items():
        for column in columns:
            for (value,) in registry.execute(
                f"SELECT {column} FROM {table} WHERE {column} IS NOT NULL"
            ):
                paths.add(str(value))
    return paths


def known_partitions(registry: Registry) -> set[str]:
    """Return the registry's group_ids, the UTC days they fall on, and the mosaics' days."""
    partitions = {str(g) for (g,) in registry.execute("SELECT group_id FROM processing_queue")}
    partitions |= {g[:10] for g in partitions}
    partitions |= {
        str(d)
        for (d,) in registry.execute("SELECT DISTINCT date FROM mosaics WHERE date IS NOT NULL")
    }
    return partitions


def imaged_groups(registry: Registry) -> set[str]:
    """Return the group_ids that have at least one ``images`` row."""
    return {
        str(g) for (g,) in registry.execute("SELECT DISTINCT group_id FROM images") if g is not None
    }


def product_rows(registry: Registry) -> list[ProductRow]:
    """Return every product row with its ``missing_since`` (None on a registry before v9)."""
    rows: list[ProductRow] = []
    for table in PRODUCT_TABLES:
        marked = _has_column(registry, table, "missing_since")
        mark = "missing_since" if marked else "NULL"
        for path, since in registry.execute(f"SELECT path, {mark} FROM {table}"):
            rows.append(ProductRow(table, str(path), None if since is None else float(since)))
    return rows


def set_missing(registry: Registry, marks: list[tuple[str, str, float | None]]) -> None:
    """Set ``missing_since`` of each ``(table, path, since)`` (None: found again), one transaction.

    Raises
    ------
    ValueError
        A table that is not one of :data:`PRODUCT_TABLES`.
    """
    by_table: dict[str, list[tuple[float | None, str]]] = {}
    for table, path, since in marks:
        if table not in PRODUCT_TABLES:
            raise ValueError(f"{table!r} is not a product table")
        by_table.setdefault(table, []).append((since, path))
    with registry.transaction():
        for table, values in by_table.items():
            registry.conn.executemany(
                f"UPDATE {table} SET missing_since = ? WHERE path = ?", values
            )


def _has_column(registry: Registry, table: str, column: str) -> bool:
    """Return whether ``table`` has ``column`` (a read-only registry may predate it)."""
    try:
        info = registry.execute(f"PRAGMA table_info({table})").fetchall()
    except sqlite3.Error:
        return False
    return any(row[1] == column for row in info)
