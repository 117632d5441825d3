"""Where the hub's auth tables live: the SQLite file of the hub (``SqliteAuthDb``) or its
PostgreSQL database (``swarm.hub.authdb_pg.PgAuthDb``).

``TokenStore`` writes its SQL once, in the dialect both understand (``?`` placeholders,
``INSERT ... ON CONFLICT``); an AuthDb runs it: ``tx()`` one write transaction, ``read()``
one consistent read, each yielding a connection whose ``execute`` returns a cursor with
``fetchone``, ``fetchall`` and ``rowcount``.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

from swarm.errors import MemoryStoreError

__all__ = ["AUTH_TABLES", "AuthConn", "AuthCursor", "AuthDb", "SqliteAuthDb"]

AUTH_TABLES = ("hub_tokens", "hub_grants", "hub_public", "hub_invites", "hub_settings")


class AuthCursor(Protocol):
    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


class AuthConn(Protocol):
    def execute(self, sql: str, args: Sequence[Any] = ..., /) -> AuthCursor: ...


class AuthDb(Protocol):
    """One database holding the auth tables."""

    where: str  # for messages: a file path, or a URL without its password

    def tx(self) -> contextlib.AbstractContextManager[AuthConn]: ...

    def read(self) -> contextlib.AbstractContextManager[AuthConn]: ...

    def generation(self) -> int:
        """The change counter of the auth tables (``hub_gen``), read now."""

    def generation_nowait(self) -> int | None: ...

    def close(self) -> None: ...


_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS hub_tokens (
        name TEXT PRIMARY KEY,
        role TEXT NOT NULL,
        token_hash TEXT NOT NULL UNIQUE,
        created_at REAL NOT NULL,
        revoked_at REAL
    )""",
    """CREATE TABLE IF NOT EXISTS hub_grants (
        role TEXT NOT NULL, action TEXT NOT NULL, pattern TEXT NOT NULL,
        PRIMARY KEY (role, action, pattern)
    )""",
    "CREATE TABLE IF NOT EXISTS hub_public (pattern TEXT PRIMARY KEY)",
    """CREATE TABLE IF NOT EXISTS hub_invites (
        token_hash TEXT PRIMARY KEY, role TEXT NOT NULL, created_at REAL NOT NULL,
        created_by TEXT, uses INTEGER NOT NULL DEFAULT 0
    )""",
    "CREATE TABLE IF NOT EXISTS hub_settings (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS hub_gen (
        id INTEGER PRIMARY KEY CHECK (id = 1), gen INTEGER NOT NULL
    )""",
    "INSERT OR IGNORE INTO hub_gen (id, gen) VALUES (1, 0)",
)
# columns added after the first release (older files are migrated on open)
_COLUMNS = {
    "hub_tokens": {"ident": "TEXT"},
    "hub_invites": {
        "id": "TEXT",
        "max_uses": "INTEGER",
        "expires_at": "REAL",
        "revoked_at": "REAL",
        "creator_ident": "TEXT",
    },
}


def _migrate(conn: sqlite3.Connection) -> None:
    for table, cols in _COLUMNS.items():
        have = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        for col, decl in cols.items():
            if col not in have:
                conn.execute(f"ALTER TABLE {table} ADD COLUMN {col} {decl}")
    for table in AUTH_TABLES:
        for op in ("INSERT", "UPDATE", "DELETE"):
            conn.execute(
                f"CREATE TRIGGER IF NOT EXISTS {table}_gen_{op.lower()} AFTER {op} ON {table} "
                "BEGIN UPDATE hub_gen SET gen = gen + 1 WHERE id = 1; END"
            )


class SqliteAuthDb:
    """The auth tables in a SQLite file: one connection guarded by a lock, plus a second
    one for ``generation_nowait`` (the event loop's own)."""

    def __init__(self, path: str | Path, *, busy_timeout_s: float = 30.0) -> None:
        self.path = Path(path)
        self.where = str(self.path)
        self._lock = threading.Lock()
        self._peek: sqlite3.Connection | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(
                str(self.path),
                timeout=busy_timeout_s,
                isolation_level=None,
                check_same_thread=False,
            )
            self._conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
            self._conn.execute("PRAGMA journal_mode = WAL")
            with self.tx() as conn:
                for stmt in _SCHEMA:
                    conn.execute(stmt)
                _migrate(conn)
        except (sqlite3.Error, OSError) as exc:
            raise MemoryStoreError(
                f"cannot open the hub's auth tables in {self.path}: {exc}"
            ) from exc

    @contextlib.contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """The connection inside one BEGIN IMMEDIATE transaction, under the lock."""
        with self._lock:
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    @contextlib.contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """The connection inside one read transaction (a consistent snapshot)."""
        with self._lock:
            conn = self._conn
            conn.execute("BEGIN")
            try:
                yield conn
            finally:
                conn.execute("COMMIT")

    def generation(self) -> int:
        with self._lock:
            row = self._conn.execute("SELECT gen FROM hub_gen WHERE id = 1").fetchone()
        return int(row[0]) if row else 0

    def generation_nowait(self) -> int | None:
        """The change counter read at once on the caller's thread, or None when the file is
        busy (then read it in a worker thread). A WAL reader takes no lock a writer
        holds, so this is one indexed row read (microseconds); its busy wait is capped
        at 20 ms. For one thread only (the hub's event loop)."""
        try:
            if self._peek is None:
                self._peek = sqlite3.connect(
                    str(self.path), timeout=0.02, isolation_level=None, check_same_thread=False
                )
                self._peek.execute("PRAGMA busy_timeout = 20")
            row = self._peek.execute("SELECT gen FROM hub_gen WHERE id = 1").fetchone()
        except sqlite3.Error:
            return None
        return int(row[0]) if row else 0

    def close(self) -> None:
        with self._lock:
            self._conn.close()
            if self._peek is not None:
                self._peek.close()
