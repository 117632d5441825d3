"""The hub's auth tables in PostgreSQL, so that every hub process on one database
accepts the same tokens (``swarm hub --db postgresql://...``).

``TokenStore`` is synchronous (the CLI calls it directly, the hub in a worker thread);
asyncpg is not. ``PgAuthDb`` therefore owns one connection on an event loop of its own,
in a thread it starts and stops, and runs each statement there. Every change to an auth
table bumps ``hub_gen`` (a statement trigger), which each hub reads per request.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
from collections.abc import Coroutine, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from swarm.errors import MemoryStoreError
from swarm.hub.authdb import AUTH_TABLES
from swarm.memory.store import ensure_schema, import_asyncpg, parse_db_url, pg_errors

__all__ = ["PgAuthDb"]

T = TypeVar("T")
_TIMEOUT_S = 60.0
_QMARK = re.compile(r"\?")
_WRITE_LOCK = 0x5357_4155  # advisory lock key of auth writes ("SWAU")

_SCHEMA: tuple[str, ...] = (
    """CREATE TABLE IF NOT EXISTS hub_tokens (
        name text PRIMARY KEY, role text NOT NULL, token_hash text NOT NULL UNIQUE,
        created_at double precision NOT NULL, revoked_at double precision, ident text
    )""",
    """CREATE TABLE IF NOT EXISTS hub_grants (
        role text NOT NULL, action text NOT NULL, pattern text NOT NULL,
        PRIMARY KEY (role, action, pattern)
    )""",
    "CREATE TABLE IF NOT EXISTS hub_public (pattern text PRIMARY KEY)",
    """CREATE TABLE IF NOT EXISTS hub_invites (
        token_hash text PRIMARY KEY, role text NOT NULL, created_at double precision NOT NULL,
        created_by text, uses integer NOT NULL DEFAULT 0, id text, max_uses integer,
        expires_at double precision, revoked_at double precision, creator_ident text
    )""",
    "CREATE TABLE IF NOT EXISTS hub_settings (name text PRIMARY KEY, value text NOT NULL)",
    """CREATE TABLE IF NOT EXISTS hub_gen (
        id integer PRIMARY KEY CHECK (id = 1), gen bigint NOT NULL
    )""",
    "INSERT INTO hub_gen (id, gen) VALUES (1, 0) ON CONFLICT DO NOTHING",
    """CREATE OR REPLACE FUNCTION hub_bump_gen() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN UPDATE hub_gen SET gen = gen + 1 WHERE id = 1; RETURN NULL; END $$""",
    *(
        f"CREATE OR REPLACE TRIGGER {t}_gen AFTER INSERT OR UPDATE OR DELETE ON {t} "
        "FOR EACH STATEMENT EXECUTE FUNCTION hub_bump_gen()"
        for t in AUTH_TABLES
    ),
)


def _dollars(sql: str) -> str:
    """``?`` placeholders as PostgreSQL's ``$1, $2, ...`` (the auth SQL has no ``?``
    inside string literals)."""
    counter = iter(range(1, 1000))
    return _QMARK.sub(lambda _m: f"${next(counter)}", sql)


@dataclass(frozen=True, slots=True)
class _Cursor:
    rows: list[Any]
    rowcount: int

    def fetchone(self) -> Any:
        return tuple(self.rows[0]) if self.rows else None

    def fetchall(self) -> list[Any]:
        return [tuple(r) for r in self.rows]


class _Conn:
    """What TokenStore's SQL runs on: statements sent to the loop thread one by one."""

    def __init__(self, db: PgAuthDb) -> None:
        self._db = db

    def execute(self, sql: str, args: Sequence[Any] = (), /) -> _Cursor:
        query = _dollars(sql)
        conn = self._db.conn
        if query.lstrip().upper().startswith("SELECT"):
            rows = self._db.call(conn.fetch(query, *args))
            return _Cursor(list(rows), len(rows))
        status: str = self._db.call(conn.execute(query, *args))
        tail = status.rsplit(" ", 1)[-1]
        return _Cursor([], int(tail) if tail.isdigit() else 0)


class PgAuthDb:
    """The auth tables in the PostgreSQL database at ``url``."""

    def __init__(self, url: str) -> None:
        parsed = parse_db_url(url)
        self.where = parsed.shown
        asyncpg = import_asyncpg()
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="swarm-pg-auth", daemon=True
        )
        self._thread.start()
        try:
            self.conn = self.call(asyncpg.connect(parsed.url, command_timeout=_TIMEOUT_S))
            self.call(ensure_schema(self.conn, _SCHEMA))
        except BaseException:
            self._stop_loop()
            raise

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the loop thread and wait for it; asyncpg errors translated."""
        with pg_errors("auth tables", self.where):
            fut = asyncio.run_coroutine_threadsafe(coro, self._loop)
            try:
                return fut.result(_TIMEOUT_S + 5)
            except TimeoutError as exc:
                fut.cancel()
                raise MemoryStoreError(
                    f"PostgreSQL auth tables at {self.where} did not answer in time"
                ) from exc

    @contextlib.contextmanager
    def tx(self) -> Iterator[_Conn]:
        """One write transaction. Writers of every hub process take one advisory lock
        first, so that a check-then-write (an invite's uses) is serialized as SQLite's
        BEGIN IMMEDIATE serializes it; auth writes are rare."""
        with self._lock:
            self.call(self.conn.execute("BEGIN"))
            try:
                self.call(self.conn.execute("SELECT pg_advisory_xact_lock($1)", _WRITE_LOCK))
                yield _Conn(self)
            except BaseException:
                self.call(self.conn.execute("ROLLBACK"))
                raise
            self.call(self.conn.execute("COMMIT"))

    @contextlib.contextmanager
    def read(self) -> Iterator[_Conn]:
        """One REPEATABLE READ transaction: a consistent snapshot of every table."""
        with self._lock:
            self.call(self.conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"))
            try:
                yield _Conn(self)
            finally:
                self.call(self.conn.execute("COMMIT"))

    def generation(self) -> int:
        """One statement, one round trip (every hub process runs it per request)."""
        with self._lock:
            gen = self.call(self.conn.fetchval("SELECT gen FROM hub_gen WHERE id = 1"))
        return int(gen) if gen is not None else 0

    def generation_nowait(self) -> int | None:
        """None: reading PostgreSQL means waiting, so the hub reads in a thread."""
        return None

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def close(self) -> None:
        with self._lock:
            try:
                self.call(self.conn.close())
            except MemoryStoreError:
                pass  # closing a broken connection: nothing left to release
            finally:
                self._stop_loop()
