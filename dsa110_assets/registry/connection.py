"""Opening ``pipeline.sqlite3``: WAL, busy timeout, foreign keys, migrations.

The existing pipeline's worst pain was "database is locked"; every connection here runs in WAL
mode (readers never block the writer) with a 30 s busy timeout, in autocommit mode with
explicit ``BEGIN IMMEDIATE`` write transactions so a writer takes the lock up front instead of
failing half way through.

Readers (``dsa110 db info``, ``query``, ``db export``) open the registry read-only with
:func:`connect_readonly` or ``Registry(path, readonly=True)``: SQLite ``mode=ro``, no journal
mode change, no migration, so they work on a registry they may not write (another user's, a
read-only mount) and cannot modify it. A WAL database read-only needs its ``-shm`` file; when
the folder is not writable and no writer has it open (no ``-shm``, an empty or absent
``-wal``), the file is fully checkpointed and nothing can be writing it, so it is opened
``immutable=1`` instead.

Every open refuses a registry whose schema is newer than this code
(:func:`~dsa110_assets.registry.migrations.check_version`).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

from dsa110_assets.registry.migrations import (
    LATEST_VERSION,
    check_version,
    current_version,
    migrate,
)

DEFAULT_BUSY_TIMEOUT_S = 30.0
#: Values bound in one ``IN (...)`` list: far below SQLite's limit of 32,766 host parameters.
IN_CHUNK = 900


def in_chunks(items: Sequence[Any], size: int = IN_CHUNK) -> Iterator[Sequence[Any]]:
    """Yield ``items`` in slices of at most ``size``, for ``IN`` lists of bound parameters.

    A list asked about in one statement could pass the host-parameter limit; in chunks, each
    statement is a lookup on an index whose cost follows the values asked about.
    """
    for start in range(0, len(items), size):
        yield items[start : start + size]


class CountingConnection(sqlite3.Connection):
    """A connection that counts statements sent, to measure database round trips."""

    round_trips: int = 0
    immutable: bool = False  # opened ``immutable=1`` (read-only registry in a read-only folder)

    def execute(self, sql: str, parameters: Sequence[Any] | dict = (), /) -> sqlite3.Cursor:
        """Execute ``sql``, counting the round trip."""
        self.round_trips += 1
        return super().execute(sql, parameters)

    def executemany(self, sql: str, parameters: Iterable[Any], /) -> sqlite3.Cursor:
        """Execute ``sql`` for every parameter set, counting one round trip."""
        self.round_trips += 1
        return super().executemany(sql, parameters)


class ReadOnlyRegistryError(sqlite3.OperationalError):
    """A read-only registry cannot be read consistently (e.g. an unapplied write-ahead log)."""


class RegistryUnreadable(sqlite3.DatabaseError):
    """The registry file is not a SQLite database, or a damaged one; the message names it."""


def _reraise_naming_the_file(exc: BaseException, path: object) -> NoReturn:
    """Re-raise ``exc``; SQLite's "file is not a database" names no file, so say which."""
    if type(exc) is sqlite3.DatabaseError:  # not SchemaTooNew, not OperationalError
        raise RegistryUnreadable(
            f"registry {path}: {exc} (not a SQLite database, or damaged; it was not changed)"
        ) from exc
    raise exc


def connect_readonly(
    path: str | Path,
    *,
    busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S,
    factory: type[CountingConnection] = CountingConnection,
) -> CountingConnection:
    """Open an existing registry read-only; never create, migrate or write it.

    ``mode=ro`` first; if that cannot open a WAL database because its folder is not writable
    (no ``-shm`` can be made), and no ``-wal`` holds changes, ``immutable=1`` (safe: nothing
    can write there). The schema version is checked.

    Raises
    ------
    FileNotFoundError
        The registry does not exist.
    ReadOnlyRegistryError
        It cannot be read consistently without write access.
    SchemaTooNew
        It was migrated by newer code.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"registry {path} does not exist (run 'dsa110 db init')")
    uri = path.resolve().as_uri()

    def open_uri(query: str) -> CountingConnection:
        conn = sqlite3.connect(
            f"{uri}?{query}",
            uri=True,
            timeout=busy_timeout_s,
            isolation_level=None,
            factory=factory,
            check_same_thread=False,
        )
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
            conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
        except BaseException:
            conn.close()
            raise
        return conn

    try:
        conn = open_uri("mode=ro")
    except sqlite3.OperationalError:
        if os.access(path.parent, os.W_OK):
            raise
        wal = path.with_name(path.name + "-wal")
        if wal.exists() and wal.stat().st_size > 0:
            raise ReadOnlyRegistryError(
                f"registry {path} has an unapplied write-ahead log ({wal.name}) and its folder"
                " is read-only: open it once with write access to checkpoint it"
            ) from None
        conn = None
    except sqlite3.DatabaseError as exc:
        _reraise_naming_the_file(exc, path)
    if conn is None:
        conn = open_uri("mode=ro&immutable=1")
        conn.immutable = True
    conn.row_factory = sqlite3.Row
    try:
        check_version(conn, f"registry {path}")
    except BaseException as exc:
        conn.close()
        _reraise_naming_the_file(exc, path)
    return conn


class Registry:
    """The pipeline registry: one SQLite connection plus transaction helpers.

    Parameters
    ----------
    path
        Database file; its folder is created. ``":memory:"`` is accepted for tests.
    busy_timeout_s
        How long a statement waits for another process's write lock.
    migrate_schema
        Apply pending migrations on open (the default).
    readonly
        Open read-only (:func:`connect_readonly`): the file must exist; nothing is created,
        migrated or written. For readers such as ``dsa110 db info``.

    Raises
    ------
    SchemaTooNew
        The registry was migrated by newer code (both versions named); never written to.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S,
        migrate_schema: bool = True,
        readonly: bool = False,
    ) -> None:
        self.path = Path(path) if str(path) != ":memory:" else None
        self.readonly = readonly
        if readonly:
            if self.path is None:
                raise ValueError("a read-only registry needs a file")
            self.conn = connect_readonly(self.path, busy_timeout_s=busy_timeout_s)
            self.conn.execute("PRAGMA foreign_keys = ON")
            return
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self.conn: CountingConnection = sqlite3.connect(
            str(path),
            timeout=busy_timeout_s,
            isolation_level=None,
            factory=CountingConnection,
            check_same_thread=False,
        )
        self.conn.row_factory = sqlite3.Row
        try:
            self.conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
            # Before anything that writes (the journal mode too): never touch a newer schema.
            check_version(self.conn, f"registry {path}")
            if self.path is not None:
                self.conn.execute("PRAGMA journal_mode = WAL")
            self.conn.execute("PRAGMA synchronous = NORMAL")
            self.conn.execute("PRAGMA foreign_keys = ON")
            if migrate_schema:
                migrate(self.conn)
        except BaseException as exc:
            self.conn.close()
            _reraise_naming_the_file(exc, path)

    @property
    def round_trips(self) -> int:
        """Statements sent to SQLite so far (what the query-count tests measure)."""
        return self.conn.round_trips

    @property
    def schema_version(self) -> int:
        """The highest migration applied to the database."""
        return current_version(self.conn)

    @property
    def is_current(self) -> bool:
        """Whether the database is at this code's latest schema version."""
        return self.schema_version == LATEST_VERSION

    @property
    def is_immutable(self) -> bool:
        """Whether the file was opened ``immutable=1`` (read-only, in a read-only folder)."""
        return bool(getattr(self.conn, "immutable", False))

    def execute(self, sql: str, parameters: Sequence[Any] | dict = ()) -> sqlite3.Cursor:
        """Execute one statement on the connection."""
        return self.conn.execute(sql, parameters)

    def query(self, sql: str, parameters: Sequence[Any] | dict = ()) -> list[sqlite3.Row]:
        """Execute a query and return all its rows."""
        return self.conn.execute(sql, parameters).fetchall()

    @contextmanager
    def transaction(self, *, write: bool = True) -> Iterator[sqlite3.Connection]:
        """Run the block in a transaction: ``BEGIN IMMEDIATE`` for writers, else deferred.

        Writers take the lock up front, so two writers never deadlock upgrading a read lock.

        Commits on success, rolls back on any exception.
        """
        self.conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    def close(self) -> None:
        """Close the connection."""
        self.conn.close()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
