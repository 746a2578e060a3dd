"""The one upsert: insert rows or update them in place on their unique key.

Every product table is written the same way (a re-run updates its row, never duplicates
it), so the statement is built once from the columns of the rows given, instead of each
table listing its columns twice by hand.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from dsa110_assets.registry.connection import Registry


def upsert_sql(
    table: str, columns: Sequence[str], *, conflict: Sequence[str], keep: Sequence[str] = ()
) -> str:
    """Return ``INSERT ... ON CONFLICT(conflict) DO UPDATE`` for ``columns``.

    Parameters
    ----------
    table, columns
        The table and the columns inserted, in the order of the rows' values.
    conflict
        The unique key; its columns are never updated.
    keep
        Further columns an update leaves as they were (e.g. what identifies the product).
    """
    update = [c for c in columns if c not in conflict and c not in keep]
    return (
        f"INSERT INTO {table}({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
        f" ON CONFLICT({', '.join(conflict)}) DO UPDATE SET "
        + ", ".join(f"{c} = excluded.{c}" for c in update)
    )


def upsert(
    registry: Registry,
    table: str,
    rows: Sequence[Mapping[str, object]],
    *,
    conflict: Sequence[str] = ("path",),
    keep: Sequence[str] = (),
) -> int:
    """Upsert ``rows`` (column -> value, all with the same columns) into ``table``.

    Runs inside the caller's transaction. Returns the number of rows given.
    """
    if not rows:
        return 0
    columns = list(rows[0])
    sql = upsert_sql(table, columns, conflict=conflict, keep=keep)
    registry.conn.executemany(sql, [tuple(row[c] for c in columns) for row in rows])
    return len(rows)
