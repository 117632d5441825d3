"""Threads and connections of one SQLite file in WAL mode.

All SQLite work runs off the event loop: one writer thread owning the only write
connection of the process, and a small pool of reader threads, each with its own
connection. Every write is one ``BEGIN IMMEDIATE`` transaction, so a write never has to
upgrade a read lock (the source of ``SQLITE_BUSY`` that no timeout can fix);
``busy_timeout`` makes other processes wait for the lock, and a bounded, jittered retry
covers the rare ``database is locked`` that slips through.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_random_exponential,
)

from swarm._logging import get_logger
from swarm.errors import MemoryStoreError

__all__ = ["SqliteFile"]

log = get_logger(__name__)

T = TypeVar("T")


def _is_busy(exc: BaseException) -> bool:
    if not isinstance(exc, sqlite3.OperationalError):
        return False
    msg = str(exc).lower()
    return "locked" in msg or "busy" in msg


def _log_retry(state: RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome else None
    log.warning(
        "sqlite_busy_retry",
        attempt=state.attempt_number,
        sleep_s=round(state.next_action.sleep if state.next_action else 0.0, 3),
        error=str(exc),
    )


def _connect(path: Path, busy_timeout_ms: int) -> sqlite3.Connection:
    conn = sqlite3.connect(
        str(path), timeout=busy_timeout_ms / 1000, isolation_level=None, check_same_thread=False
    )
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA temp_store = MEMORY")
    conn.execute("PRAGMA cache_size = -32000")
    return conn


class SqliteFile:
    """The writer thread, the reader threads and their connections for ``path``."""

    def __init__(
        self,
        path: Path,
        *,
        readers: int,
        busy_timeout_ms: int,
        retry_sleep: Callable[[float], None],
        maintain: Callable[[sqlite3.Connection, int], None] | None = None,
    ) -> None:
        self.path = path
        self._readers_n = max(1, readers)
        self._busy_ms = busy_timeout_ms
        self._retry_sleep = retry_sleep
        self._writer: ThreadPoolExecutor | None = None
        self._readers: ThreadPoolExecutor | None = None
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._conns_lock = threading.Lock()
        self._write_conn: sqlite3.Connection | None = None
        self.writes = 0  # committed write transactions of this process
        self._maintain = maintain  # called in the writer after each commit, with ``writes``

    @property
    def is_open(self) -> bool:
        return self._writer is not None

    async def open(self, schema: str) -> None:
        """Create the file and ``schema`` if needed and start the threads."""
        if self._writer is not None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise MemoryStoreError(f"cannot create the directory of {self.path}: {exc}") from exc
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="swarm-sqlite-w")
        self._readers = ThreadPoolExecutor(self._readers_n, thread_name_prefix="swarm-sqlite-r")
        try:
            await asyncio.get_running_loop().run_in_executor(
                self._writer, self._init_schema, schema
            )
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """Stop the threads and close every connection."""
        writer, readers = self._writer, self._readers
        self._writer = self._readers = None
        for pool in (writer, readers):
            if pool is not None:
                await asyncio.to_thread(pool.shutdown, True)
        with self._conns_lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            try:
                conn.close()
            except sqlite3.Error as exc:
                log.warning("local_store_close_failed", path=str(self.path), error=str(exc))
        self._write_conn = None
        self._local = threading.local()

    def _new_conn(self) -> sqlite3.Connection:
        try:
            conn = _connect(self.path, self._busy_ms)
        except sqlite3.Error as exc:
            raise MemoryStoreError(f"cannot open SQLite file {self.path}: {exc}") from exc
        with self._conns_lock:
            self._conns.append(conn)
        return conn

    def reader_conn(self) -> sqlite3.Connection:
        """This reader thread's own connection."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._new_conn()
            self._local.conn = conn
        return conn

    def _retrying(self) -> Retrying:
        return Retrying(
            retry=retry_if_exception(_is_busy),
            wait=wait_random_exponential(multiplier=0.01, max=1.0),
            stop=stop_after_attempt(12) | stop_after_delay(self._busy_ms / 1000 * 2),
            before_sleep=_log_retry,
            sleep=self._retry_sleep,
            reraise=True,
        )

    def retry(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)``; when SQLite reports busy/locked, retried with jittered backoff."""
        try:
            return fn(*args)
        except sqlite3.OperationalError as exc:
            if not _is_busy(exc):
                raise
            log.warning("sqlite_busy_retry", attempt=1, path=str(self.path), error=str(exc))
        return self._retrying()(fn, *args)

    def _writer_conn(self) -> sqlite3.Connection:
        if self._write_conn is None:
            self._write_conn = self._new_conn()
        return self._write_conn

    def run_write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` in one BEGIN IMMEDIATE transaction on the writer connection."""
        conn = self._writer_conn()

        def attempt() -> T:
            conn.execute("BEGIN IMMEDIATE")
            try:
                out = fn(conn)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            return out

        try:
            out = self.retry(attempt)
        except sqlite3.Error as exc:
            raise MemoryStoreError(f"SQLite write to {self.path} failed: {exc}") from exc
        self.writes += 1
        if self._maintain is not None:
            self._maintain(conn, self.writes)
        return out

    def run_read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn = self.reader_conn()
        try:
            return self.retry(fn, conn)
        except sqlite3.Error as exc:
            raise MemoryStoreError(f"SQLite read of {self.path} failed: {exc}") from exc

    def _not_open(self) -> MemoryStoreError:
        return MemoryStoreError(f"LocalStore({self.path}) is not open; use 'async with'")

    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._writer is None:
            raise self._not_open()
        return await asyncio.get_running_loop().run_in_executor(self._writer, self.run_write, fn)

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._readers is None:
            raise self._not_open()
        return await asyncio.get_running_loop().run_in_executor(self._readers, self.run_read, fn)

    def submit_read(self, fn: Callable[..., T], *args: Any) -> concurrent.futures.Future[T]:
        """``fn(*args)`` in a reader thread, as a concurrent future."""
        if self._readers is None:
            raise MemoryStoreError(f"LocalStore({self.path}) was closed")
        return self._readers.submit(fn, *args)

    def _init_schema(self, schema: str) -> None:
        """Switch the file to WAL and create the schema (idempotent; runs in the writer)."""
        conn = self._writer_conn()

        def attempt() -> None:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                log.warning("local_store_no_wal", path=str(self.path), mode=mode)
            conn.execute("BEGIN IMMEDIATE")
            try:
                for stmt in schema.split(";\n"):
                    if stmt.strip():
                        conn.execute(stmt)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

        try:
            self.retry(attempt)
        except sqlite3.Error as exc:
            raise MemoryStoreError(f"cannot initialise SQLite file {self.path}: {exc}") from exc
