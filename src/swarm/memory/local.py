"""Embedded SQLite memory store: the default ``local`` backend and the hub's storage.

One SQLite file in WAL mode holds every item (key, value text, description, epoch
timestamps, the creator, and a float32 embedding for items written with ``embed``).

Concurrency
    * All SQLite work runs off the event loop: one writer thread owning the only
      write connection of the process, and a small pool of reader threads, each with
      its own connection. WAL lets readers run while a write commits.
    * Every write is one ``BEGIN IMMEDIATE`` transaction, so a write never has to
      upgrade a read lock (the source of ``SQLITE_BUSY`` that no timeout can fix);
      ``busy_timeout`` makes other processes wait for the lock, and a bounded, jittered
      retry covers the rare ``database is locked`` that slips through. Several
      processes (two supervisors on one machine) can therefore share one file.
    * ``create`` is ``INSERT ... ON CONFLICT DO NOTHING`` per key: exactly one of any
      number of concurrent creates of a key succeeds, across threads and processes.

Semantic search
    Vectors live in an in-memory float32 matrix per process, ordered by key so that a
    prefix is a contiguous slice (new keys go to a small unsorted tail, merged now and
    then). Triggers append the row id of every embedding change to a ``changes`` log;
    before each search the index applies the log entries it has not seen, so writes of
    this process and of other processes on the same file are both picked up. A search
    over 100k records is one matrix-vector product (a few milliseconds).

Keys
    ``key`` and ``@org/key`` address the store's default org; ``@other/key`` addresses
    another org. Keys come back without the prefix for the default org and with it for
    any other org. Keys may not be empty or contain control characters.

Wire-level helpers (LIKE prefixes, org splitting, validation) live here too: the hub
uses them so that both entry points give the same answers and the same messages.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import functools
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_random_exponential,
)

from swarm._logging import get_logger
from swarm.embedding import Embedder, get_embedder
from swarm.errors import (
    AuthError,
    InvalidRequestError,
    KeyNotFoundError,
    MemoryStoreError,
)
from swarm.memory._like import LikeMatcher
from swarm.memory._types import (
    EmbedSource,
    ItemResult,
    KeyInfo,
    Memory,
    NewMemory,
    SearchHit,
)

__all__ = [
    "DEFAULT_ORG",
    "MAX_DESCRIPTION_BYTES",
    "MAX_KEY_CHARS",
    "KeyPattern",
    "KeyRow",
    "LocalStore",
    "Outcome",
    "StoredItem",
    "check_text",
    "parse_like",
    "parse_prefix",
    "split_key",
]

log = get_logger(__name__)

DEFAULT_ORG = "autoresearch-at-home"
MAX_KEY_CHARS = 1024
MAX_DESCRIPTION_BYTES = 64 * 1024
MAX_PREFIX_CHARS = 2 * MAX_KEY_CHARS + 130  # every key char escaped, plus "@org/"
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_ORG = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")
_SQL_CHUNK = 500  # variables per IN (...) query
_TAIL_MAX = 2048  # unsorted index slots before a merge
_CHANGES_KEEP = 200_000  # embedding-change log entries kept for other processes

T = TypeVar("T")
OutcomeCode = Literal["ok", "not_found", "exists", "forbidden"]


# --------------------------------------------------------------------------- keys


def check_text(text: object, what: str, *, max_bytes: int | None = None) -> str:
    """``text`` as a str that is valid UTF-8 and within ``max_bytes``; else InvalidRequestError."""
    if not isinstance(text, str):
        raise InvalidRequestError(f"{what} must be a string, got {type(text).__name__}")
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise InvalidRequestError(
            f"{what} is not valid UTF-8 (lone surrogate at position {exc.start})"
        ) from exc
    if max_bytes is not None and size > max_bytes:
        raise InvalidRequestError(
            f"{what} is {size} bytes, over the {max_bytes}-byte limit; store less or split it"
        )
    return text


def _check_org(org: str, whole: str) -> None:
    if not _ORG.match(org):
        raise InvalidRequestError(
            f"key {whole!r}: org {org!r} must be letters, digits, '.', '_' or '-'"
        )


def split_key(key: object, default_org: str) -> tuple[str, str]:
    """``(org, key)`` of a key given as ``key`` or ``@org/key``; validates it."""
    if not isinstance(key, str):
        raise InvalidRequestError(f"key must be a string, got {type(key).__name__}")
    if not key:
        raise InvalidRequestError("key is empty; give a key such as 'results/my-run'")
    check_text(key, f"key {key!r}")
    if len(key) > MAX_KEY_CHARS:
        raise InvalidRequestError(
            f"key {key[:40]!r}... is {len(key)} characters, over the {MAX_KEY_CHARS} limit"
        )
    bad = _CONTROL.search(key)
    if bad:
        raise InvalidRequestError(
            f"key {key!r} contains the control character {bad.group()!r} "
            f"at position {bad.start()}; keys must be printable"
        )
    if key.startswith("@"):
        org, sep, rest = key[1:].partition("/")
        if not sep:
            raise InvalidRequestError(f"key {key!r} starts with '@' but has no '/': use '@org/key'")
        _check_org(org, key)
        if not rest:
            raise InvalidRequestError(f"key {key!r} names an org but no key after '@{org}/'")
        if rest.startswith("@"):
            raise InvalidRequestError(f"key {key!r}: a key may not start with '@' after the org")
        return org, rest
    return default_org, key


def public_key(org: str, key: str, default_org: str) -> str:
    """The one form a key is returned in: bare for the default org, ``@org/key`` otherwise."""
    return key if org == default_org else f"@{org}/{key}"


@dataclass(frozen=True, slots=True)
class KeyPattern:
    """A parsed key prefix: org, the literal part, and a regex when wildcards follow it."""

    org: str
    literal: str
    regex: LikeMatcher | None = None  # linear, never backtracks (see swarm.memory._like)

    def matches(self, key: str) -> bool:
        """Whether a key of ``org`` (without the ``@org/`` part) matches."""
        if not key.startswith(self.literal):
            return False
        return self.regex is None or self.regex.match(key) is not None


def _prefix_org(text: str, default_org: str, whole: str) -> tuple[str, str]:
    if not text.startswith("@"):
        return default_org, text
    org, sep, rest = text[1:].partition("/")
    if not sep:
        raise InvalidRequestError(f"prefix {whole!r} starts with '@' but has no '/': use '@org/...'")
    _check_org(org, whole)
    return org, rest


def parse_prefix(prefix: object, default_org: str) -> KeyPattern:
    """A literal prefix (no wildcards), optionally starting with ``@org/``."""
    if prefix is None:
        prefix = ""
    text = check_text(prefix, "prefix")
    bad = _CONTROL.search(text)
    if bad:
        raise InvalidRequestError(f"prefix {text!r} contains the control character {bad.group()!r}")
    org, rest = _prefix_org(text, default_org, text)
    return KeyPattern(org, rest)


def parse_like(pattern: object, default_org: str) -> KeyPattern:
    """A prefix in the wire protocol's SQL LIKE form: ``%`` and ``_`` are wildcards and
    ``\\`` escapes the next character; ``%`` is implied at the end. Matching is
    case-sensitive. The ``@org/`` part, if any, must be free of wildcards."""
    if pattern is None:
        pattern = ""
    text = check_text(pattern, "prefix")
    if len(text) > MAX_PREFIX_CHARS:
        raise InvalidRequestError(
            f"prefix {text[:40]!r}... is {len(text)} characters, over the {MAX_PREFIX_CHARS} limit"
        )
    bad = _CONTROL.search(text)
    if bad:
        raise InvalidRequestError(f"prefix {text!r} contains the control character {bad.group()!r}")
    tokens: list[str | None] = []  # a literal character, or None / "" for % / _
    wild: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            tokens.append(text[i + 1])
            wild.append("")
            i += 2
            continue
        if ch in "%_":
            tokens.append(None)
            wild.append(ch)
        else:
            tokens.append(ch)
            wild.append("")
        i += 1
    # split off "@org/" (literal characters only)
    org = default_org
    if tokens and tokens[0] == "@" and not wild[0]:
        try:
            slash = next(j for j, t in enumerate(tokens) if t == "/" and not wild[j])
        except StopIteration:
            raise InvalidRequestError(
                f"prefix {text!r} starts with '@' but has no '/': use '@org/...'"
            ) from None
        if any(wild[1:slash]):
            raise InvalidRequestError(f"prefix {text!r}: wildcards are not allowed in the org name")
        org = "".join(t for t in tokens[1:slash] if t is not None)
        _check_org(org, text)
        tokens, wild = tokens[slash + 1 :], wild[slash + 1 :]
    literal: list[str] = []
    j = 0
    while j < len(tokens) and not wild[j]:
        literal.append(tokens[j] or "")
        j += 1
    if all(w == "%" for w in wild[j:]):
        return KeyPattern(org, "".join(literal))
    return KeyPattern(org, "".join(literal), LikeMatcher.build(tokens, wild))


def _upper_bound(prefix: str) -> str | None:
    """Smallest string greater than every string starting with ``prefix`` (None: no bound)."""
    p = prefix
    while p:
        last = ord(p[-1])
        if last < 0x10FFFF:
            nxt = last + 1
            if 0xD800 <= nxt <= 0xDFFF:
                nxt = 0xE000
            return p[:-1] + chr(nxt)
        p = p[:-1]
    return None


# --------------------------------------------------------------------------- values


@dataclass(frozen=True, slots=True)
class StoredItem:
    """Everything stored for one item (the hub's view of a record)."""

    key: str
    value: str
    description: str
    created_at: float
    updated_at: float
    embedded: bool
    embed_source: EmbedSource | None
    creator: str | None
    size: int

    def to_memory(self) -> Memory:
        return Memory(
            key=self.key,
            value=self.value,
            description=self.description,
            created_at=self.created_at,
            updated_at=self.updated_at,
            embedded=self.embedded,
        )


@dataclass(frozen=True, slots=True)
class KeyRow:
    """One row of a key listing, with the value's size in bytes and its creator."""

    key: str
    description: str
    size: int
    created_at: float
    updated_at: float
    creator: str | None


@dataclass(frozen=True, slots=True)
class Outcome:
    """Result of one item of a write, with a machine-readable ``code``."""

    key: str
    code: OutcomeCode
    error: str | None = None
    at: float | None = None  # when it was written (successful creates)

    @property
    def ok(self) -> bool:
        return self.code == "ok"

    def to_item_result(self) -> ItemResult:
        return ItemResult(key=self.key, ok=self.ok, error=self.error, exists=self.code == "exists")


# --------------------------------------------------------------------------- schema

_SCHEMA = """
CREATE TABLE IF NOT EXISTS memories (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    org          TEXT NOT NULL,
    key          TEXT NOT NULL,
    value        TEXT NOT NULL,
    description  TEXT NOT NULL DEFAULT '',
    size         INTEGER NOT NULL,
    created_at   REAL NOT NULL,
    updated_at   REAL NOT NULL,
    embed_source TEXT,
    embedding    BLOB,
    creator      TEXT,
    UNIQUE (org, key)
);
CREATE TABLE IF NOT EXISTS changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    rid INTEGER NOT NULL
);
CREATE TRIGGER IF NOT EXISTS memories_ins AFTER INSERT ON memories
    WHEN NEW.embedding IS NOT NULL
    BEGIN INSERT INTO changes (rid) VALUES (NEW.id); END;
CREATE TRIGGER IF NOT EXISTS memories_upd AFTER UPDATE OF embedding ON memories
    WHEN OLD.embedding IS NOT NULL OR NEW.embedding IS NOT NULL
    BEGIN INSERT INTO changes (rid) VALUES (NEW.id); END;
CREATE TRIGGER IF NOT EXISTS memories_del AFTER DELETE ON memories
    WHEN OLD.embedding IS NOT NULL
    BEGIN INSERT INTO changes (rid) VALUES (OLD.id); END;
"""

_ITEM_COLS = "org, key, value, description, created_at, updated_at, embed_source, creator, size"


def _is_busy(exc: BaseException) -> bool:
    if not isinstance(exc, sqlite3.OperationalError):
        return False
    msg = str(exc).lower()
    return "locked" in msg or "busy" in msg


def _log_retry(state: RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome else None
    log.warning(
        "sqlite.busy_retry",
        attempt=state.attempt_number,
        sleep_s=round(state.next_action.sleep if state.next_action else 0.0, 3),
        error=str(exc),
    )


_blas_controller: Any = None
_blas_lock = threading.Lock()


def _single_threaded_blas() -> contextlib.AbstractContextManager[Any]:
    """Limit BLAS to one thread for a matrix product.

    A multi-threaded matrix-vector product on a busy machine (training jobs, other
    requests) waits for a second core and runs several times slower than on one; a
    search is memory-bound anyway. Without threadpoolctl this is a no-op.
    """
    global _blas_controller
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return contextlib.nullcontext()
    with _blas_lock:
        if _blas_controller is None:
            _blas_controller = ThreadpoolController()
    return _blas_controller.limit(limits=1, user_api="blas")


def _connect(path: Path, busy_timeout_ms: int) -> sqlite3.Connection:
    conn = sqlite3.connect(
        str(path), timeout=busy_timeout_ms / 1000, isolation_level=None, check_same_thread=False
    )
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA temp_store = MEMORY")
    conn.execute("PRAGMA cache_size = -32000")
    return conn


# --------------------------------------------------------------------------- vector index


class _VectorIndex:
    """Embeddings of one process: a key-sorted float32 matrix plus an unsorted tail.

    Slots ``[0, sorted_n)`` are sorted by ``org\\0key`` (dead slots keep their name so
    that bisection stays valid); slots ``[sorted_n, n)`` are new since the last merge.
    Not thread-safe on its own: the store holds ``lock`` around every use.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.dim = 0
        self.mat = np.zeros((0, 0), dtype=np.float32)
        self.names: list[str] = []
        self.rids: list[int] = []
        self.alive = np.zeros(0, dtype=bool)
        self.slot_of: dict[int, int] = {}
        self.n = 0
        self.sorted_n = 0
        self.dead = 0
        self.last_seq = -1  # -1: never loaded

    @property
    def size(self) -> int:
        return self.n - self.dead

    def _vec(self, blob: bytes) -> np.ndarray | None:
        vec = np.frombuffer(blob, dtype=np.float32)
        if self.dim == 0:
            self.dim = int(vec.shape[0])
            self.mat = np.zeros((0, self.dim), dtype=np.float32)
        if vec.shape[0] != self.dim:
            log.warning("index.dim_mismatch", expected=self.dim, got=int(vec.shape[0]))
            return None
        return vec

    def reset(self, rows: Sequence[tuple[int, str, bytes]], last_seq: int) -> None:
        """Load every embedded row; ``rows`` are (rid, name, blob) sorted by name."""
        self.dim = 0
        vecs: list[np.ndarray] = []
        names: list[str] = []
        rids: list[int] = []
        for rid, name, blob in rows:
            vec = self._vec(blob)
            if vec is None:
                continue
            vecs.append(vec)
            names.append(name)
            rids.append(rid)
        n = len(vecs)
        cap = max(1024, n + n // 4)
        self.mat = np.zeros((cap, self.dim or 1), dtype=np.float32)
        if n:
            self.mat[:n] = np.stack(vecs)
        self.names = names
        self.rids = rids
        self.alive = np.zeros(cap, dtype=bool)
        self.alive[:n] = True
        self.slot_of = {rid: i for i, rid in enumerate(rids)}
        self.n = self.sorted_n = n
        self.dead = 0
        self.last_seq = last_seq

    def _grow(self) -> None:
        cap = max(1024, self.mat.shape[0] * 2)
        mat = np.zeros((cap, self.dim), dtype=np.float32)
        mat[: self.n] = self.mat[: self.n]
        alive = np.zeros(cap, dtype=bool)
        alive[: self.n] = self.alive[: self.n]
        self.mat, self.alive = mat, alive

    def upsert(self, rid: int, name: str, blob: bytes) -> None:
        vec = self._vec(blob)
        if vec is None:
            return
        slot = self.slot_of.get(rid)
        if slot is not None and self.names[slot] == name:
            self.mat[slot] = vec
            return
        if slot is not None:
            self.remove(rid)
        if self.mat.shape[1] != self.dim:
            self.mat = np.zeros((0, self.dim), dtype=np.float32)
        if self.n >= self.mat.shape[0]:
            self._grow()
        slot = self.n
        self.mat[slot] = vec
        self.alive[slot] = True
        self.names.append(name)
        self.rids.append(rid)
        self.slot_of[rid] = slot
        self.n += 1

    def remove(self, rid: int) -> None:
        slot = self.slot_of.pop(rid, None)
        if slot is None:
            return
        self.alive[slot] = False
        self.dead += 1

    def maybe_compact(self) -> None:
        if self.n - self.sorted_n <= _TAIL_MAX and self.dead <= max(1024, self.n // 4):
            return
        live = [s for s in range(self.n) if self.alive[s]]
        live.sort(key=self.names.__getitem__)
        n = len(live)
        cap = max(1024, n + n // 4)
        mat = np.zeros((cap, max(self.dim, 1)), dtype=np.float32)
        if n:
            mat[:n] = self.mat[np.asarray(live, dtype=np.int64)]
        self.mat = mat
        self.names = [self.names[s] for s in live]
        self.rids = [self.rids[s] for s in live]
        self.alive = np.zeros(cap, dtype=bool)
        self.alive[:n] = True
        self.slot_of = {rid: i for i, rid in enumerate(self.rids)}
        self.n = self.sorted_n = n
        self.dead = 0

    def top(
        self, queries: np.ndarray, ks: Sequence[int], pattern: KeyPattern
    ) -> list[list[tuple[int, float]]]:
        """For each row of ``queries`` (m, dim), its ``ks[j]`` best (rid, score) under
        ``pattern``, best first. One pass over the matrix serves all m queries."""
        m = queries.shape[0]
        if self.n == 0:
            return [[] for _ in range(m)]
        if queries.shape[1] != self.dim:
            raise InvalidRequestError(
                f"query vector has {queries.shape[1]} dimensions; "
                f"the stored vectors have {self.dim}"
            )
        org = pattern.org
        start = f"{org}\x00{pattern.literal}"
        stop = _upper_bound(start)
        lo = bisect.bisect_left(self.names, start, 0, self.sorted_n)
        hi = (
            bisect.bisect_left(self.names, stop, lo, self.sorted_n)
            if stop is not None
            else self.sorted_n
        )
        qt = np.ascontiguousarray(queries.T)
        slots_parts: list[np.ndarray] = []
        score_parts: list[np.ndarray] = []
        cut = len(org) + 1
        rx = pattern.regex
        if hi > lo:
            scores = self.mat[lo:hi] @ qt  # (hi - lo, m)
            mask = self.alive[lo:hi]
            if rx is not None:
                names = self.names
                mask = mask & np.fromiter(
                    (rx.match(names[s][cut:]) is not None for s in range(lo, hi)),
                    dtype=bool,
                    count=hi - lo,
                )
            if mask.all():
                slots_parts.append(np.arange(lo, hi))
                score_parts.append(scores)
            else:
                idx = np.flatnonzero(mask)
                slots_parts.append(idx + lo)
                score_parts.append(scores[idx])
        tail = [
            s
            for s in range(self.sorted_n, self.n)
            if self.alive[s]
            and self.names[s].startswith(start)
            and (rx is None or rx.match(self.names[s][cut:]) is not None)
        ]
        if tail:
            t = np.asarray(tail, dtype=np.int64)
            slots_parts.append(t)
            score_parts.append(self.mat[t] @ qt)
        if not slots_parts:
            return [[] for _ in range(m)]
        slots = np.concatenate(slots_parts) if len(slots_parts) > 1 else slots_parts[0]
        all_scores = np.concatenate(score_parts) if len(score_parts) > 1 else score_parts[0]
        out: list[list[tuple[int, float]]] = []
        for j, k in enumerate(ks):
            col = all_scores[:, j]
            if slots.size == 0 or k <= 0:
                out.append([])
                continue
            part = np.argpartition(-col, k - 1)[:k] if slots.size > k else np.arange(slots.size)
            best = part[np.argsort(-col[part], kind="stable")]
            out.append([(self.rids[int(slots[i])], float(col[i])) for i in best])
        return out


# --------------------------------------------------------------------------- store


class LocalStore:
    """MemoryBackend over one SQLite file in WAL mode (see the module docstring).

    Use as ``async with LocalStore(path) as store: ...``. Besides the protocol methods
    it offers what the hub needs: ``get_items``, ``create(..., creator=, vectors=)``,
    ``update(..., owner=)``, ``delete_checked``, ``list_page`` and ``search_vector``.
    """

    name = "local"

    def __init__(
        self,
        path: str | Path,
        *,
        org: str = DEFAULT_ORG,
        embedder: Embedder | None = None,
        max_value_bytes: int = 1 << 20,
        readers: int = 2,
        busy_timeout_s: float = 30.0,
        clock: Callable[[], float] = time.time,
        retry_sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not _ORG.match(org):
            raise InvalidRequestError(f"org {org!r} must be letters, digits, '.', '_' or '-'")
        if max_value_bytes <= 0:
            raise InvalidRequestError(f"max_value_bytes must be positive, got {max_value_bytes}")
        self.path = Path(path)
        self.org = org
        self.max_value_bytes = int(max_value_bytes)
        self._embedder = embedder
        self._readers_n = max(1, readers)
        self._busy_ms = int(busy_timeout_s * 1000)
        self._clock = clock
        self._retry_sleep = retry_sleep
        self._writer: ThreadPoolExecutor | None = None
        self._readers: ThreadPoolExecutor | None = None
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._conns_lock = threading.Lock()
        self._write_conn: sqlite3.Connection | None = None
        self._index = _VectorIndex()
        self._writes = 0
        self._pending_searches: list[
            tuple[np.ndarray, int, KeyPattern, asyncio.Future[list[tuple[StoredItem, float]]]]
        ] = []
        self._pending_gets: list[
            tuple[list[tuple[str, str]], asyncio.Future[dict[tuple[str, str], tuple[Any, ...]]]]
        ] = []

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> LocalStore:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def open(self) -> None:
        """Create the file and schema if needed and start the worker threads."""
        if self._writer is not None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise MemoryStoreError(f"cannot create the directory of {self.path}: {exc}") from exc
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="swarm-sqlite-w")
        self._readers = ThreadPoolExecutor(self._readers_n, thread_name_prefix="swarm-sqlite-r")
        try:
            await asyncio.get_running_loop().run_in_executor(self._writer, self._init_schema)
        except BaseException:
            await self.close()
            raise
        log.debug("local_store.opened", path=str(self.path), org=self.org)

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
                log.warning("local_store.close_failed", path=str(self.path), error=str(exc))
        self._write_conn = None
        self._local = threading.local()

    # ------------------------------------------------------------------ plumbing

    def _new_conn(self) -> sqlite3.Connection:
        try:
            conn = _connect(self.path, self._busy_ms)
        except sqlite3.Error as exc:
            raise MemoryStoreError(f"cannot open SQLite file {self.path}: {exc}") from exc
        with self._conns_lock:
            self._conns.append(conn)
        return conn

    def _reader_conn(self) -> sqlite3.Connection:
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

    def _retry(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)``; when SQLite reports busy/locked, retried with jittered backoff."""
        try:
            return fn(*args)
        except sqlite3.OperationalError as exc:
            if not _is_busy(exc):
                raise
            log.warning("sqlite.busy_retry", attempt=1, path=str(self.path), error=str(exc))
        return self._retrying()(fn, *args)

    def _run_write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` in one BEGIN IMMEDIATE transaction on the writer connection."""
        if self._write_conn is None:
            self._write_conn = self._new_conn()
        conn = self._write_conn

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
            out = self._retry(attempt)
        except sqlite3.Error as exc:
            raise MemoryStoreError(f"SQLite write to {self.path} failed: {exc}") from exc
        self._writes += 1
        if self._writes % 2000 == 0:
            self._trim_changes(conn)
        return out

    def _run_read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._reader_conn()
        try:
            return self._retry(fn, conn)
        except sqlite3.Error as exc:
            raise MemoryStoreError(f"SQLite read of {self.path} failed: {exc}") from exc

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._writer is None:
            raise MemoryStoreError(f"LocalStore({self.path}) is not open; use 'async with'")
        return await asyncio.get_running_loop().run_in_executor(self._writer, self._run_write, fn)

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._readers is None:
            raise MemoryStoreError(f"LocalStore({self.path}) is not open; use 'async with'")
        return await asyncio.get_running_loop().run_in_executor(self._readers, self._run_read, fn)

    def _init_schema(self) -> None:
        """Switch the file to WAL and create the schema (idempotent; runs in the writer)."""
        if self._write_conn is None:
            self._write_conn = self._new_conn()
        conn = self._write_conn

        def attempt() -> None:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                log.warning("local_store.no_wal", path=str(self.path), mode=mode)
            conn.execute("BEGIN IMMEDIATE")
            try:
                for stmt in _SCHEMA.split(";\n"):
                    if stmt.strip():
                        conn.execute(stmt)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

        try:
            self._retry(attempt)
        except sqlite3.Error as exc:
            raise MemoryStoreError(f"cannot initialise SQLite file {self.path}: {exc}") from exc

    def _trim_changes(self, conn: sqlite3.Connection) -> None:
        try:
            conn.execute(
                "DELETE FROM changes WHERE seq < (SELECT max(seq) FROM changes) - ?",
                (_CHANGES_KEEP,),
            )
        except sqlite3.Error as exc:
            log.warning("local_store.trim_failed", error=str(exc))

    def _embedder_or_default(self) -> Embedder:
        if self._embedder is None:
            self._embedder = get_embedder()
        return self._embedder

    def _split(self, key: object) -> tuple[str, str]:
        return split_key(key, self.org)

    def _public(self, org: str, key: str) -> str:
        return public_key(org, key, self.org)

    def _item(self, row: Sequence[Any]) -> StoredItem:
        org, key, value, desc, created, updated, source, creator, size = row
        return StoredItem(
            key=self._public(org, key),
            value=value,
            description=desc,
            created_at=created,
            updated_at=updated,
            embedded=source is not None,
            embed_source=source,
            creator=creator,
            size=size,
        )

    # ------------------------------------------------------------------ reads

    async def ping(self) -> None:
        """Raise MemoryStoreError when the file cannot be read."""
        await self._read(lambda conn: conn.execute("SELECT count(*) FROM changes").fetchone())

    async def get_items(self, keys: Sequence[str]) -> dict[str, StoredItem]:
        """Stored items by the key as given (``@org/`` accepted); missing keys are absent.

        Reads issued in the same event-loop tick share one trip to a reader thread.
        """
        wanted: dict[tuple[str, str], list[str]] = {}
        for k in keys:
            wanted.setdefault(self._split(k), []).append(k)
        if not wanted:
            return {}
        if self._readers is None:
            raise MemoryStoreError(f"LocalStore({self.path}) is not open; use 'async with'")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[dict[tuple[str, str], tuple[Any, ...]]] = loop.create_future()
        self._pending_gets.append((list(wanted), fut))
        if len(self._pending_gets) == 1:
            loop.call_soon(self._flush_gets)
        rows = await fut
        out: dict[str, StoredItem] = {}
        for pair, asked_as in wanted.items():
            row = rows.get(pair)
            if row is not None:
                item = self._item(row)
                for asked in asked_as:
                    out[asked] = item
        return out

    def _flush_gets(self) -> None:
        batch, self._pending_gets = self._pending_gets, []
        if not batch:
            return
        by_org: dict[str, set[str]] = {}
        for pairs, _ in batch:
            for org, key in pairs:
                by_org.setdefault(org, set()).add(key)

        def fn(conn: sqlite3.Connection) -> dict[tuple[str, str], tuple[Any, ...]]:
            found: dict[tuple[str, str], tuple[Any, ...]] = {}
            for org, key_set in by_org.items():
                ks = list(key_set)
                for i in range(0, len(ks), _SQL_CHUNK):
                    chunk = ks[i : i + _SQL_CHUNK]
                    marks = ",".join("?" * len(chunk))
                    for row in conn.execute(
                        f"SELECT {_ITEM_COLS} FROM memories WHERE org = ? AND key IN ({marks})",
                        (org, *chunk),
                    ):
                        found[(row[0], row[1])] = row
            return found

        def deliver(done: asyncio.Future[dict[tuple[str, str], tuple[Any, ...]]]) -> None:
            exc = None if done.cancelled() else done.exception()
            for _, fut in batch:
                if fut.done():
                    continue
                if done.cancelled():
                    fut.cancel()
                elif exc is not None:
                    fut.set_exception(exc)
                else:
                    fut.set_result(done.result())

        if self._readers is None:
            err = MemoryStoreError(f"LocalStore({self.path}) was closed")
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(err)
            return
        cf = self._readers.submit(self._run_read, fn)
        asyncio.wrap_future(cf).add_done_callback(deliver)

    async def get(self, keys: Sequence[str]) -> dict[str, Memory]:
        """Items by key (canonical form); missing keys are absent from the mapping."""
        items = await self.get_items(keys)
        return {item.key: item.to_memory() for item in items.values()}

    async def list_page(
        self, pattern: KeyPattern, *, limit: int | None = None, offset: int = 0
    ) -> list[KeyRow]:
        """Keys matching ``pattern`` sorted by key, ``offset`` rows skipped, at most ``limit``."""
        lo = pattern.literal
        hi = _upper_bound(lo)
        org = pattern.org
        rx = pattern.regex
        sql = (
            "SELECT key, description, size, created_at, updated_at, creator FROM memories "
            "WHERE org = ? AND key >= ?" + (" AND key < ?" if hi is not None else "") + " ORDER BY key"
        )
        args: tuple[Any, ...] = (org, lo, hi) if hi is not None else (org, lo)
        if rx is None and limit is not None:
            sql += " LIMIT ? OFFSET ?"
            args = (*args, int(limit), int(offset))
        elif rx is None and offset:
            sql += " LIMIT -1 OFFSET ?"
            args = (*args, int(offset))

        def fn(conn: sqlite3.Connection) -> list[KeyRow]:
            cur = conn.execute(sql, args)
            rows: list[KeyRow] = []
            skipped = 0
            for key, desc, size, created, updated, creator in cur:
                if rx is not None:
                    if rx.match(key) is None:
                        continue
                    if skipped < offset:
                        skipped += 1
                        continue
                rows.append(KeyRow(self._public(org, key), desc, size, created, updated, creator))
                if limit is not None and len(rows) >= limit:
                    break
            return rows

        return await self._read(fn)

    async def list_keys(self, prefix: str, *, limit: int | None = None) -> list[KeyInfo]:
        """Every key starting with ``prefix`` (literally), sorted by key."""
        pattern = parse_prefix(prefix, self.org)
        rows = await self.list_page(pattern, limit=limit)
        return [KeyInfo(r.key, r.description, r.created_at, r.updated_at) for r in rows]

    # ------------------------------------------------------------------ search

    def _sync_index(self, conn: sqlite3.Connection) -> None:
        """Bring the vector index up to date with the file (caller holds the index lock)."""
        idx = self._index
        conn.execute("BEGIN")
        try:
            row = conn.execute(
                "SELECT (SELECT min(seq) FROM changes), (SELECT max(seq) FROM changes)"
            ).fetchone()
            lo_seq, hi_seq = row[0], row[1] if row[1] is not None else 0
            if idx.last_seq == hi_seq:
                return
            stale = (
                idx.last_seq < 0
                or hi_seq < idx.last_seq  # the file was replaced
                or (lo_seq is not None and lo_seq > idx.last_seq + 1)  # log trimmed past us
                or hi_seq - idx.last_seq > max(10_000, idx.size)
            )
            if stale:
                rows = conn.execute(
                    "SELECT id, org || char(0) || key, embedding FROM memories "
                    "WHERE embedding IS NOT NULL ORDER BY org, key"
                ).fetchall()
                idx.reset(rows, hi_seq)
                log.debug("index.reloaded", path=str(self.path), vectors=idx.size, seq=hi_seq)
                return
            changed = conn.execute(
                "SELECT c.rid, max(c.seq), m.org || char(0) || m.key, m.embedding "
                "FROM changes c LEFT JOIN memories m ON m.id = c.rid "
                "WHERE c.seq > ? AND c.seq <= ? GROUP BY c.rid",
                (idx.last_seq, hi_seq),
            ).fetchall()
            for rid, _seq, name, blob in changed:
                if blob is None:
                    idx.remove(rid)
                else:
                    idx.upsert(rid, name, blob)
            idx.last_seq = hi_seq
            idx.maybe_compact()
        finally:
            if conn.in_transaction:
                conn.execute("COMMIT")

    def _search_batch(
        self, reqs: Sequence[tuple[np.ndarray, int, KeyPattern]]
    ) -> list[list[tuple[StoredItem, float]]]:
        """Run several searches in one go (in a reader thread): one index sync, one
        matrix pass per distinct prefix, one SQL fetch for all the hits."""
        conn = self._reader_conn()

        def ranked() -> list[list[tuple[int, float]]]:
            with self._index.lock:
                self._sync_index(conn)
                groups: dict[KeyPattern, list[int]] = {}
                for i, (_, _, pattern) in enumerate(reqs):
                    groups.setdefault(pattern, []).append(i)
                out: list[list[tuple[int, float]]] = [[] for _ in reqs]
                with _single_threaded_blas():
                    for pattern, idxs in groups.items():
                        qs = np.stack([reqs[i][0] for i in idxs])
                        tops = self._index.top(qs, [reqs[i][1] for i in idxs], pattern)
                        for i, hits in zip(idxs, tops, strict=True):
                            out[i] = hits
                return out

        try:
            ranked_lists = self._retry(ranked)
            ids = sorted({rid for hits in ranked_lists for rid, _ in hits})
            by_id: dict[int, StoredItem] = {}
            for i in range(0, len(ids), _SQL_CHUNK):
                chunk = ids[i : i + _SQL_CHUNK]
                marks = ",".join("?" * len(chunk))
                for row in conn.execute(
                    f"SELECT id, {_ITEM_COLS} FROM memories WHERE id IN ({marks})", chunk
                ):
                    by_id[row[0]] = self._item(row[1:])
        except sqlite3.Error as exc:
            raise MemoryStoreError(f"SQLite search of {self.path} failed: {exc}") from exc
        return [[(by_id[rid], score) for rid, score in hits if rid in by_id] for hits in ranked_lists]

    def _flush_searches(self) -> None:
        batch, self._pending_searches = self._pending_searches, []
        if not batch:
            return
        if self._readers is None:
            err = MemoryStoreError(f"LocalStore({self.path}) was closed")
            for *_, fut in batch:
                if not fut.done():
                    fut.set_exception(err)
            return
        cf = self._readers.submit(self._search_batch, [(v, k, p) for v, k, p, _ in batch])

        def deliver(done: asyncio.Future[list[list[tuple[StoredItem, float]]]]) -> None:
            exc = None if done.cancelled() else done.exception()
            for i, (*_, fut) in enumerate(batch):
                if fut.done():
                    continue
                if done.cancelled():
                    fut.cancel()
                elif exc is not None:
                    fut.set_exception(exc)
                else:
                    fut.set_result(done.result()[i])

        asyncio.wrap_future(cf).add_done_callback(deliver)

    async def search_vector(
        self,
        vector: np.ndarray | Sequence[float],
        *,
        limit: int = 10,
        prefix: KeyPattern | str | None = None,
    ) -> list[tuple[StoredItem, float]]:
        """Embedded items closest to ``vector`` (cosine), best first, as (item, score).

        Searches issued in the same event-loop tick share one pass over the vectors.
        """
        pattern = (
            prefix if isinstance(prefix, KeyPattern) else parse_prefix(prefix or "", self.org)
        )
        vec = np.asarray(vector, dtype=np.float32).reshape(-1)
        norm = float(np.linalg.norm(vec))
        if norm > 0:
            vec = vec / norm
        if limit <= 0:
            return []
        if self._readers is None:
            raise MemoryStoreError(f"LocalStore({self.path}) is not open; use 'async with'")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[list[tuple[StoredItem, float]]] = loop.create_future()
        self._pending_searches.append((vec, int(limit), pattern, fut))
        if len(self._pending_searches) == 1:
            loop.call_soon(self._flush_searches)
        return await fut

    async def search(
        self, query: str, *, limit: int = 10, prefix: str | None = None
    ) -> list[SearchHit]:
        """Embedded items closest to ``query``, best first, optionally under ``prefix``."""
        check_text(query, "query")
        pattern = parse_prefix(prefix or "", self.org)
        vec = (await self._embedder_or_default().aembed([query]))[0]
        hits = await self.search_vector(vec, limit=limit, prefix=pattern)
        return [SearchHit(item.key, score, item.value, item.description) for item, score in hits]

    # ------------------------------------------------------------------ writes

    def _check_item(self, item: NewMemory) -> tuple[str, str]:
        org, key = self._split(item.key)
        check_text(item.value, f"value of {item.key!r}", max_bytes=self.max_value_bytes)
        check_text(item.description, f"description of {item.key!r}", max_bytes=MAX_DESCRIPTION_BYTES)
        if item.embed_source not in ("description", "value"):
            raise InvalidRequestError(
                f"embed_source of {item.key!r} is {item.embed_source!r}; use 'description' or 'value'"
            )
        return org, key

    async def _vectors_for(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        return await self._embedder_or_default().aembed(list(texts))

    async def create(
        self,
        items: Sequence[NewMemory],
        *,
        creator: str | None = None,
        vectors: np.ndarray | Sequence[np.ndarray | None] | None = None,
    ) -> list[ItemResult]:
        """Create-if-absent per item, atomically per key; results in order.

        Every item is validated before anything is written (InvalidRequestError names
        the first bad one). ``vectors`` (one per item, or None) bypass the embedder:
        an item with a vector is stored as embedded whatever its ``embed`` flag says.
        """
        outcomes = await self.create_checked(items, creator=creator, vectors=vectors)
        return [o.to_item_result() for o in outcomes]

    async def create_checked(
        self,
        items: Sequence[NewMemory],
        *,
        creator: str | None = None,
        vectors: np.ndarray | Sequence[np.ndarray | None] | None = None,
    ) -> list[Outcome]:
        """``create`` with machine-readable outcomes."""
        if vectors is not None and len(vectors) != len(items):
            raise InvalidRequestError(f"{len(vectors)} vectors given for {len(items)} items")
        split = [self._check_item(it) for it in items]
        blobs: list[bytes | None] = [None] * len(items)
        sources: list[str | None] = [None] * len(items)
        to_embed: list[int] = []
        for i, it in enumerate(items):
            given = vectors[i] if vectors is not None else None
            if given is not None:
                v = np.asarray(given, dtype=np.float32).reshape(-1)
                n = float(np.linalg.norm(v))
                blobs[i] = (v / n if n > 0 else v).astype(np.float32).tobytes()
                sources[i] = it.embed_source
            elif it.embed:
                to_embed.append(i)
                sources[i] = it.embed_source
        if to_embed:
            texts = [
                items[i].description if items[i].embed_source == "description" else items[i].value
                for i in to_embed
            ]
            vecs = await self._vectors_for(texts)
            for i, v in zip(to_embed, vecs, strict=True):
                blobs[i] = np.asarray(v, dtype=np.float32).tobytes()
        now = self._clock()
        rows = [
            (
                org,
                key,
                it.value,
                it.description,
                len(it.value.encode("utf-8")),
                now,
                now,
                sources[i],
                blobs[i],
                creator,
            )
            for i, ((org, key), it) in enumerate(zip(split, items, strict=True))
        ]

        created: list[bool] = []
        for i in range(0, len(rows), _SQL_CHUNK):
            chunk = rows[i : i + _SQL_CHUNK]
            created.extend(await self._write(functools.partial(_insert, rows=chunk)))
        return [
            Outcome(self._public(org, key), "ok", at=now)
            if ok
            else Outcome(
                self._public(org, key),
                "exists",
                f"key {self._public(org, key)!r} already exists; use update_memory to change it",
            )
            for (org, key), ok in zip(split, created, strict=True)
        ]

    async def update(
        self,
        key: str,
        value: str,
        *,
        description: str | None = None,
        embed: bool | None = None,
        embed_source: EmbedSource | None = None,
        owner: str | None = None,
        vector: np.ndarray | None = None,
    ) -> StoredItem:
        """Replace the value (and description) of an existing key.

        Raises KeyNotFoundError when absent, and AuthError when ``owner`` is given and
        the item was created by someone else. ``embed=None`` keeps an embedded item
        embedded (re-embedding it when its source text changed); ``embed=False`` drops
        the vector.
        """
        org, k = self._split(key)
        check_text(value, f"value of {key!r}", max_bytes=self.max_value_bytes)
        if description is not None:
            check_text(description, f"description of {key!r}", max_bytes=MAX_DESCRIPTION_BYTES)
        if embed_source is not None and embed_source not in ("description", "value"):
            raise InvalidRequestError(
                f"embed_source of {key!r} is {embed_source!r}; use 'description' or 'value'"
            )
        # the embedding change: None = decide in the transaction, (None, None) = drop it
        decided: tuple[str | None, bytes | None] | None = None
        if vector is not None:
            v = np.asarray(vector, dtype=np.float32).reshape(-1)
            n = float(np.linalg.norm(v))
            decided = (embed_source or "description", (v / n if n > 0 else v).tobytes())
        elif embed is False:
            decided = (None, None)
        size = len(value.encode("utf-8"))

        def fn(
            conn: sqlite3.Connection, new_vec: tuple[str | None, bytes | None] | None
        ) -> tuple[str, Any]:
            row = conn.execute(
                "SELECT creator, embed_source, description, value FROM memories "
                "WHERE org = ? AND key = ?",
                (org, k),
            ).fetchone()
            if row is None:
                return "not_found", None
            creator, cur_source, cur_desc, cur_value = row
            if owner is not None and creator != owner:
                return "forbidden", creator
            if new_vec is None and (embed or cur_source is not None):
                source = embed_source or cur_source or "description"
                new_text = value if source == "value" else (
                    description if description is not None else cur_desc
                )
                old_text = cur_value if cur_source == "value" else cur_desc
                if cur_source is None or source != cur_source or new_text != old_text:
                    return "embed", (source, new_text)  # nothing written yet
            sets = (
                "value = ?, size = ?, updated_at = max(created_at, ?), "
                "description = coalesce(?, description)"
            )
            args: list[Any] = [value, size, self._clock(), description]
            if new_vec is not None:
                sets += ", embed_source = ?, embedding = ?"
                args.extend(new_vec)
            conn.execute(f"UPDATE memories SET {sets} WHERE org = ? AND key = ?", (*args, org, k))
            out = conn.execute(
                f"SELECT {_ITEM_COLS} FROM memories WHERE org = ? AND key = ?", (org, k)
            ).fetchone()
            return "ok", out

        code, info = await self._write(functools.partial(fn, new_vec=decided))
        if code == "embed":
            source, text = info
            vec = (await self._vectors_for([text]))[0]
            blob = np.asarray(vec, dtype=np.float32).tobytes()
            code, info = await self._write(functools.partial(fn, new_vec=(source, blob)))
        if code == "not_found":
            raise KeyNotFoundError(f"key {key!r} not found; create it first", key=key)
        if code == "forbidden":
            raise AuthError(
                f"key {key!r} was created by {info!r}; {owner!r} may update only its own "
                "records here"
            )
        return self._item(info)

    async def delete(self, keys: Sequence[str]) -> list[ItemResult]:
        """Delete keys; a missing key gives a failed item, never an exception."""
        return [o.to_item_result() for o in await self.delete_checked(keys)]

    async def delete_checked(
        self, keys: Sequence[str], *, owners: Sequence[str | None] | None = None
    ) -> list[Outcome]:
        """Delete keys; ``owners[i]`` (when not None) must be the creator of ``keys[i]``."""
        if owners is not None and len(owners) != len(keys):
            raise InvalidRequestError(f"{len(owners)} owners given for {len(keys)} keys")
        split = [self._split(k) for k in keys]
        owner_list: list[str | None] = list(owners) if owners is not None else [None] * len(keys)

        results: list[tuple[OutcomeCode, str | None]] = []
        for i in range(0, len(split), _SQL_CHUNK):
            part = split[i : i + _SQL_CHUNK]
            owners_part = owner_list[i : i + _SQL_CHUNK]

            results.extend(
                await self._write(functools.partial(_delete_rows, split=part, owners=owners_part))
            )
        out: list[Outcome] = []
        for (org, key), owner, (code, creator) in zip(split, owner_list, results, strict=True):
            pk = self._public(org, key)
            if code == "not_found":
                out.append(Outcome(pk, code, f"key {pk!r} not found"))
            elif code == "forbidden":
                out.append(
                    Outcome(
                        pk,
                        code,
                        f"key {pk!r} was created by {creator!r}; {owner!r} may delete only "
                        "its own records here",
                    )
                )
            else:
                out.append(Outcome(pk, "ok"))
        return out

    # ------------------------------------------------------------------ misc

    async def count(self) -> int:
        """Number of stored items (all orgs)."""
        row = await self._read(lambda conn: conn.execute("SELECT count(*) FROM memories").fetchone())
        return int(row[0])



def _insert(conn: sqlite3.Connection, rows: Sequence[tuple[Any, ...]]) -> list[bool]:
    out: list[bool] = []
    for row in rows:
        cur = conn.execute(
            "INSERT INTO memories (org, key, value, description, size, created_at, "
            "updated_at, embed_source, embedding, creator) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (org, key) DO NOTHING",
            row,
        )
        out.append(cur.rowcount == 1)
    return out


def _delete_rows(
    conn: sqlite3.Connection,
    split: Sequence[tuple[str, str]],
    owners: Sequence[str | None],
) -> list[tuple[OutcomeCode, str | None]]:
    out: list[tuple[OutcomeCode, str | None]] = []
    for (org, key), owner in zip(split, owners, strict=True):
        row = conn.execute(
            "SELECT id, creator FROM memories WHERE org = ? AND key = ?", (org, key)
        ).fetchone()
        if row is None:
            out.append(("not_found", None))
        elif owner is not None and row[1] != owner:
            out.append(("forbidden", row[1]))
        else:
            conn.execute("DELETE FROM memories WHERE id = ?", (row[0],))
            out.append(("ok", None))
    return out
