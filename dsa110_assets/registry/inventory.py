"""What the registry holds, for the operator: its tables, their row counts, the newest group.

The SQL of ``dsa110 db info`` and of ``dsa110 simulate``'s "start after the newest group"
lives here, with the rest of the registry's SQL, not in the command line.
"""

from __future__ import annotations

from dsa110_assets.registry.connection import Registry


def latest_group_id(registry: Registry) -> str | None:
    """Return the newest ``group_id`` in the processing queue, or None when it is empty.

    Group ids are ISO timestamps, so the largest string is the latest observation.
    """
    row = registry.execute("SELECT MAX(group_id) FROM processing_queue").fetchone()
    return row[0] if row and row[0] else None


def table_names(registry: Registry) -> list[str]:
    """Return the registry's own tables (not SQLite's), sorted by name."""
    return [
        row[0]
        for row in registry.query(
            "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'"
            " ORDER BY name"
        )
    ]


def _quote_identifier(name: str) -> str:
    """Quote a table name for SQL; a name with a NUL cannot be quoted and is refused."""
    if "\x00" in name:
        raise ValueError(f"table name {name!r} contains a NUL character")
    return '"' + name.replace('"', '""') + '"'


def table_row_counts(registry: Registry) -> dict[str, int]:
    """Return the number of rows of each table of :func:`table_names`."""
    return {
        name: int(registry.execute(f"SELECT COUNT(*) FROM {_quote_identifier(name)}").fetchone()[0])
        for name in table_names(registry)
    }


def journal_mode(registry: Registry) -> str:
    """Return the registry's journal mode (``wal`` in production).

    Opened ``immutable`` (a read-only registry in a read-only folder), SQLite reports
    "delete" whatever the file says, so the mode is read from the file header's read/write
    version bytes instead (2 means WAL).
    """
    if registry.is_immutable and registry.path is not None:
        with open(registry.path, "rb") as fh:
            header = fh.read(20)
        return "wal" if len(header) == 20 and header[18] == 2 else "delete"
    return str(registry.execute("PRAGMA journal_mode").fetchone()[0])
