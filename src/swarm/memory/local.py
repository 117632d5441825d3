"""Embedded SQLite memory store: the default ``local`` backend and the hub's storage.

One SQLite file in WAL mode holds every item (key, value text, description, epoch
timestamps, the creator, and a float32 embedding for items written with ``embed``).
The parts live in private modules:

``_sqlite_io``     threads and connections (one writer, a pool of readers; busy retries)
``_sqlite_ops``    the schema and the SQL run inside each transaction
``_vector_index``  the in-memory, key-ordered float32 matrix that search scans
``_batch``         reads and searches of one event-loop tick share one thread trip
``_writes``        validation, vectors and outcomes shared with the PostgreSQL store
``_keys``          key rules (org splitting, LIKE prefixes), shared with the hub

Concurrency
    ``create`` is ``INSERT ... ON CONFLICT DO NOTHING`` per key: exactly one of any
    number of concurrent creates of a key succeeds, across threads and processes.
    Several processes (two supervisors on one machine) can share one file.

Semantic search
    Triggers append the row id of every embedding change to a ``changes`` log; before
    each search the index applies the log entries it has not seen, so writes of this
    process and of other processes on the same file are both picked up.
"""

from __future__ import annotations

import functools
import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from swarm._logging import get_logger
from swarm.embedding import Embedder
from swarm.errors import InvalidRequestError, MemoryStoreError
from swarm.memory import _sqlite_ops as ops
from swarm.memory._base import StoreBase
from swarm.memory._batch import TickBatcher
from swarm.memory._keys import (
    DEFAULT_ORG,
    MAX_DESCRIPTION_BYTES,
    MAX_KEY_CHARS,
    KeyPattern,
    check_org_name,
    check_text,
    parse_like,
    parse_prefix,
    public_key,
    split_key,
)
from swarm.memory._records import KeyRow, Outcome, OutcomeCode, StoredItem, collect_page
from swarm.memory._sqlite_io import SqliteFile
from swarm.memory._types import EmbedSource, NewMemory
from swarm.memory._vector_index import VectorIndex, single_threaded_blas
from swarm.memory._writes import (
    check_update,
    create_outcomes,
    delete_outcomes,
    embed_plan,
    prepare_create,
    prepare_delete,
    raise_update_error,
    vector_change,
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
    "public_key",
    "split_key",
]

log = get_logger(__name__)

_Row = tuple[Any, ...]
_SearchReq = tuple[np.ndarray, int, KeyPattern]
_Hits = list[tuple[StoredItem, float]]


def item_from_row(row: Sequence[Any], default_org: str) -> StoredItem:
    """A StoredItem from ``(org, key, value, description, created_at, updated_at,
    embed_source, creator, size)``."""
    org, key, value, desc, created, updated, source, creator, size = row
    return StoredItem(
        key=public_key(org, key, default_org),
        value=value,
        description=desc,
        created_at=created,
        updated_at=updated,
        embedded=source is not None,
        embed_source=source,
        creator=creator,
        size=size,
    )


class LocalStore(StoreBase):
    """MemoryBackend over one SQLite file in WAL mode (see the module docstring).

    Use as ``async with LocalStore(path) as store: ...``. Besides the protocol methods
    it offers what the hub needs (``swarm.memory._store.HubStore``): ``get_items``,
    ``create_checked``, ``update(..., owner=)``, ``delete_checked``, ``list_page`` and
    ``search_vector``.
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
        check_org_name(org)
        if max_value_bytes <= 0:
            raise InvalidRequestError(f"max_value_bytes must be positive, got {max_value_bytes}")
        self.path = Path(path)
        self.org = org
        self.max_value_bytes = int(max_value_bytes)
        self._embedder = embedder
        self._clock = clock
        self._file = SqliteFile(
            self.path,
            readers=readers,
            busy_timeout_ms=int(busy_timeout_s * 1000),
            retry_sleep=retry_sleep,
            maintain=ops.trim_changes,
        )
        self._index = VectorIndex()
        self._gets: TickBatcher[list[tuple[str, str]], dict[tuple[str, str], _Row]] = TickBatcher(
            self._submit_gets
        )
        self._searches: TickBatcher[_SearchReq, _Hits] = TickBatcher(self._submit_searches)

    # ------------------------------------------------------------------ lifecycle

    async def open(self) -> None:
        """Create the file and schema if needed and start the worker threads."""
        if self._file.is_open:
            return
        await self._file.open(ops.SCHEMA)
        log.debug("local_store_opened", path=str(self.path), org=self.org)

    async def close(self) -> None:
        """Stop the threads and close every connection."""
        await self._file.close()

    def _item(self, row: Sequence[Any]) -> StoredItem:
        return item_from_row(row, self.org)

    # ------------------------------------------------------------------ reads

    async def ping(self) -> None:
        """Raise MemoryStoreError when the file cannot be read."""
        await self._file.read(lambda conn: conn.execute("SELECT count(*) FROM changes").fetchone())

    def _submit_gets(self, batch: Sequence[list[tuple[str, str]]]) -> Any:
        pairs = [pair for pairs in batch for pair in pairs]

        def fn(conn: sqlite3.Connection) -> list[dict[tuple[str, str], _Row]]:
            return [ops.fetch_items(conn, pairs)] * len(batch)

        return self._file.submit_read(self._file.run_read, fn)

    async def get_items(self, keys: Sequence[str]) -> dict[str, StoredItem]:
        """Stored items by the key as given (``@org/`` accepted); missing keys are absent.

        Reads issued in the same event-loop tick share one trip to a reader thread.
        """
        wanted: dict[tuple[str, str], list[str]] = {}
        for k in keys:
            wanted.setdefault(split_key(k, self.org), []).append(k)
        if not wanted:
            return {}
        if not self._file.is_open:
            raise MemoryStoreError(f"LocalStore({self.path}) is not open; use 'async with'")
        rows = await self._gets(list(wanted))
        out: dict[str, StoredItem] = {}
        for pair, asked_as in wanted.items():
            row = rows.get(pair)
            if row is not None:
                item = self._item(row)
                for asked in asked_as:
                    out[asked] = item
        return out

    async def list_page(
        self, pattern: KeyPattern, *, limit: int | None = None, offset: int = 0
    ) -> list[KeyRow]:
        """Keys matching ``pattern`` sorted by key, ``offset`` rows skipped, at most ``limit``."""
        sql, args = ops.list_query(pattern, limit, offset)
        org = pattern.org

        def fn(conn: sqlite3.Connection) -> list[KeyRow]:
            return collect_page(
                conn.execute(sql, args),
                pattern,
                limit=limit,
                offset=offset,
                public=lambda key: self._public(org, key),
            )

        return await self._file.read(fn)

    # ------------------------------------------------------------------ search

    def _ranked(
        self, conn: sqlite3.Connection, reqs: Sequence[_SearchReq]
    ) -> list[list[tuple[int, float]]]:
        with self._index.lock:
            ops.sync_index(conn, self._index, str(self.path))
            groups: dict[KeyPattern, list[int]] = {}
            for i, (_, _, pattern) in enumerate(reqs):
                groups.setdefault(pattern, []).append(i)
            out: list[list[tuple[int, float]]] = [[] for _ in reqs]
            with single_threaded_blas():
                for pattern, idxs in groups.items():
                    qs = np.stack([reqs[i][0] for i in idxs])
                    tops = self._index.top(qs, [reqs[i][1] for i in idxs], pattern)
                    for i, hits in zip(idxs, tops, strict=True):
                        out[i] = hits
            return out

    def _search_batch(self, reqs: Sequence[_SearchReq]) -> list[_Hits]:
        """Several searches in one go (in a reader thread): one index sync, one matrix
        pass per distinct prefix, one SQL fetch for all the hits."""
        conn = self._file.reader_conn()
        try:
            ranked_lists = self._file.retry(self._ranked, conn, reqs)
            ids = sorted({rid for hits in ranked_lists for rid, _ in hits})
            by_id = {rid: self._item(row) for rid, row in ops.fetch_by_ids(conn, ids).items()}
        except sqlite3.Error as exc:
            raise MemoryStoreError(f"SQLite search of {self.path} failed: {exc}") from exc
        return [
            [(by_id[rid], score) for rid, score in hits if rid in by_id] for hits in ranked_lists
        ]

    def _submit_searches(self, reqs: Sequence[_SearchReq]) -> Any:
        return self._file.submit_read(self._search_batch, list(reqs))

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
        pattern, vec = self._query(vector, prefix)
        if limit <= 0:
            return []
        if not self._file.is_open:
            raise MemoryStoreError(f"LocalStore({self.path}) is not open; use 'async with'")
        return await self._searches((vec, int(limit), pattern))

    # ------------------------------------------------------------------ writes

    async def create_checked(
        self,
        items: Sequence[NewMemory],
        *,
        creator: str | None = None,
        vectors: np.ndarray | Sequence[np.ndarray | None] | None = None,
    ) -> list[Outcome]:
        """``create`` with machine-readable outcomes."""
        split, vecs, sources = await prepare_create(
            items, vectors, self.org, self.max_value_bytes, self._embed
        )
        now = self._clock()
        blobs = [None if v is None else v.tobytes() for v in vecs]
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
        for i in range(0, len(rows), ops.CHUNK):
            chunk = rows[i : i + ops.CHUNK]
            created.extend(await self._file.write(functools.partial(ops.insert_rows, rows=chunk)))
        return create_outcomes(split, created, self._public, now)

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
        org, k = split_key(key, self.org)
        check_update(key, value, description, embed_source, self.max_value_bytes)
        decide = functools.partial(
            embed_plan,
            embed=embed,
            embed_source=embed_source,
            value=value,
            description=description,
        )
        sets = (value, len(value.encode("utf-8")), self._clock(), description)
        change = vector_change(vector, embed, embed_source)
        write = functools.partial(ops.update_row, org=org, key=k, owner=owner, decide=decide)
        code, info = await self._file.write(functools.partial(write, sets=sets, change=change))
        if code == "embed":
            source, text = info
            vec = np.asarray((await self._embed([text]))[0], dtype=np.float32)
            code, info = await self._file.write(
                functools.partial(write, sets=sets, change=(source, vec))
            )
        raise_update_error(code, key, owner, info)
        return self._item(info)

    async def delete_checked(
        self, keys: Sequence[str], *, owners: Sequence[str | None] | None = None
    ) -> list[Outcome]:
        """Delete keys; ``owners[i]`` (when not None) must be the creator of ``keys[i]``."""
        split, owner_list = prepare_delete(keys, owners, self.org)
        results: list[tuple[OutcomeCode, str | None]] = []
        for i in range(0, len(split), ops.CHUNK):
            fn = functools.partial(
                ops.delete_rows,
                split=split[i : i + ops.CHUNK],
                owners=owner_list[i : i + ops.CHUNK],
            )
            results.extend(await self._file.write(fn))
        return delete_outcomes(split, owner_list, results, self._public)

    # ------------------------------------------------------------------ misc

    async def count(self) -> int:
        """Number of stored items (all orgs)."""
        row = await self._file.read(
            lambda conn: conn.execute("SELECT count(*) FROM memories").fetchone()
        )
        return int(row[0])
