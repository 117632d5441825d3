"""PostgreSQL memory store: the hub's storage when several hub processes share one
database (``swarm hub --db postgresql://...``).

The same behaviour as ``LocalStore`` (the contract and hub suites run on both):

* ``create`` is one ``INSERT ... SELECT FROM unnest(...) ON CONFLICT DO NOTHING
  RETURNING``: exactly one of any number of concurrent creates of a key wins, whichever
  hub process it reaches.
* ``update`` of a record without embedding is one conditional ``UPDATE ... WHERE
  creator = $owner RETURNING``; records whose embedding may change are read ``FOR
  UPDATE`` first, to decide whether new text must be embedded (as SQLite does).
* Listings are ``LIKE 'prefix%'`` on a ``text_pattern_ops`` index, ordered by key in
  the "C" collation (code-point order, as SQLite's), paged by LIMIT/OFFSET; wildcard
  patterns are matched in Python exactly as on SQLite.
* Search ranks by inner product (pgvector's ``<#>``) of unit vectors, that is by cosine,
  the score SQLite's search reports.

asyncpg is imported lazily: nothing in the default install needs it.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from swarm._logging import get_logger
from swarm.embedding import Embedder
from swarm.errors import InvalidRequestError, MemoryStoreError
from swarm.memory import _pg_sql as sql
from swarm.memory._base import StoreBase
from swarm.memory._keys import (
    DEFAULT_ORG,
    KeyPattern,
    check_org_name,
    split_key,
)
from swarm.memory._pg import MEMORY_SCHEMA, ensure_schema, import_asyncpg, parse_db_url, pg_errors
from swarm.memory._records import KeyRow, Outcome, OutcomeCode, StoredItem, collect_page
from swarm.memory._types import EmbedSource, NewMemory
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

__all__ = ["PgStore"]

log = get_logger(__name__)


class PgStore(StoreBase):
    """MemoryBackend (and HubStore) over a PostgreSQL database with pgvector.

    Use as ``async with PgStore("postgresql://...") as store: ...``.
    """

    name = "postgres"

    def __init__(
        self,
        url: str,
        *,
        org: str = DEFAULT_ORG,
        embedder: Embedder | None = None,
        max_value_bytes: int = 1 << 20,
        pool_size: int = 10,
        clock: Callable[[], float] = time.time,
    ) -> None:
        check_org_name(org)
        if max_value_bytes <= 0:
            raise InvalidRequestError(f"max_value_bytes must be positive, got {max_value_bytes}")
        self._url = parse_db_url(url)
        self.where = self._url.shown
        self.org = org
        self.max_value_bytes = int(max_value_bytes)
        self._embedder = embedder
        self._pool_size = max(2, pool_size)
        self._clock = clock
        self._pool: Any = None

    # ------------------------------------------------------------------ lifecycle

    async def open(self) -> None:
        """Connect, and create or migrate the schema (idempotent, under an advisory lock)."""
        if self._pool is not None:
            return
        asyncpg = import_asyncpg()
        with pg_errors("connection", self.where):
            pool = await asyncpg.create_pool(
                self._url.url, min_size=1, max_size=self._pool_size, command_timeout=60
            )
        try:
            with pg_errors("schema creation", self.where):
                async with pool.acquire() as conn:
                    await ensure_schema(conn, MEMORY_SCHEMA)
        except BaseException:
            await pool.close()
            raise
        self._pool = pool
        log.debug("pg_store_opened", db=self.where, org=self.org)

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    def _need_pool(self) -> Any:
        if self._pool is None:
            raise MemoryStoreError(f"PgStore({self.where}) is not open; use 'async with'")
        return self._pool

    async def _fetch(self, what: str, query: str, *args: Any) -> list[Any]:
        pool = self._need_pool()
        with pg_errors(what, self.where):
            return list(await pool.fetch(query, *args))

    def _item(self, row: Any) -> StoredItem:
        return sql.item(row, self.org)

    # ------------------------------------------------------------------ reads

    async def ping(self) -> None:
        """Raise MemoryStoreError when the database cannot be reached."""
        await self._fetch("ping", "SELECT 1")

    async def count(self) -> int:
        """Number of stored items (all orgs)."""
        rows = await self._fetch("count", "SELECT count(*) FROM memories")
        return int(rows[0][0])

    async def get_items(self, keys: Sequence[str]) -> dict[str, StoredItem]:
        """Stored items by the key as given (``@org/`` accepted); missing keys are absent."""
        wanted: dict[tuple[str, str], list[str]] = {}
        for k in keys:
            wanted.setdefault(split_key(k, self.org), []).append(k)
        if not wanted:
            return {}
        pairs = list(wanted)
        rows = await self._fetch("read", sql.GET, [o for o, _ in pairs], [k for _, k in pairs])
        out: dict[str, StoredItem] = {}
        for row in rows:
            item = self._item(row)
            for asked in wanted.get((row["org"], row["key"]), []):
                out[asked] = item
        return out

    async def list_page(
        self, pattern: KeyPattern, *, limit: int | None = None, offset: int = 0
    ) -> list[KeyRow]:
        """Keys matching ``pattern`` sorted by key, ``offset`` rows skipped, at most ``limit``."""
        query, args = sql.list_query(pattern, limit, offset)
        rows = await self._fetch("listing", query, *args)
        return collect_page(
            (sql.list_row(r) for r in rows),
            pattern,
            limit=limit,
            offset=offset,
            public=lambda key: self._public(pattern.org, key),
        )

    # ------------------------------------------------------------------ search

    async def search_vector(
        self,
        vector: np.ndarray | Sequence[float],
        *,
        limit: int = 10,
        prefix: KeyPattern | str | None = None,
    ) -> list[tuple[StoredItem, float]]:
        """Embedded items closest to ``vector`` (cosine), best first, as (item, score)."""
        pattern, vec = self._query(vector, prefix)
        if limit <= 0:
            return []
        self._need_pool()
        query, args = sql.search_query(pattern, sql.vector_text(vec), int(vec.shape[0]), limit)
        rows = await self._fetch("search", query, *args)
        if not rows:
            await self._check_dim(int(vec.shape[0]))
        hits: list[tuple[StoredItem, float]] = []
        for row in rows:
            if pattern.regex is not None and pattern.regex.match(row["key"]) is None:
                continue
            hits.append((self._item(row), float(row["score"])))
            if len(hits) >= limit:
                break
        return hits

    async def _check_dim(self, dim: int) -> None:
        """InvalidRequestError when the stored vectors have another dimension (as the
        SQLite store's index says)."""
        rows = await self._fetch(
            "search",
            "SELECT vector_dims(embedding) FROM memories WHERE embedding IS NOT NULL LIMIT 1",
        )
        if rows and int(rows[0][0]) != dim:
            raise InvalidRequestError(
                f"query vector has {dim} dimensions; the stored vectors have {rows[0][0]}"
            )

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
        if not items:
            return []
        cols = sql.create_columns(split, items, vecs, sources)
        rows = await self._fetch("create", sql.INSERT, *cols, now, creator)
        won = {(r["org"], r["key"]) for r in rows}
        created: list[bool] = []
        for pair in split:  # a key given twice in one call: the first one wins
            created.append(pair in won)
            won.discard(pair)
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
        """Replace the value (and description) of an existing key (see LocalStore.update)."""
        org, k = split_key(key, self.org)
        check_update(key, value, description, embed_source, self.max_value_bytes)
        sets = sql.UpdateSets(value, description, self._clock())
        change = vector_change(vector, embed, embed_source)
        if change is None and not embed:
            row = await self._fetch("update", sql.UPDATE_PLAIN, org, k, *sets.args(), owner)
            if row:
                return self._item(row[0])
        decide = functools.partial(
            embed_plan,
            embed=embed,
            embed_source=embed_source,
            value=value,
            description=description,
        )
        pool = self._need_pool()
        with pg_errors("update", self.where):
            async with pool.acquire() as conn:
                locked = functools.partial(sql.update_locked, conn, org, k, sets, owner)
                code, info = await locked(change, decide)
                if code == "embed":  # embedded outside the transaction, then written
                    source, text = info
                    vec = np.asarray((await self._embed([text]))[0], dtype=np.float32)
                    code, info = await locked((source, vec), decide)
        raise_update_error(code, key, owner, info)
        return self._item(info)

    async def delete_checked(
        self, keys: Sequence[str], *, owners: Sequence[str | None] | None = None
    ) -> list[Outcome]:
        """Delete keys; ``owners[i]`` (when not None) must be the creator of ``keys[i]``."""
        split, owner_list = prepare_delete(keys, owners, self.org)
        if not split:
            return []
        rows = await self._fetch(
            "delete", sql.DELETE, [o for o, _ in split], [k for _, k in split], owner_list
        )
        gone = {(r["org"], r["key"]) for r in rows if not r["found"]}
        kept = {(r["org"], r["key"]): r["creator"] for r in rows if r["found"]}
        results: list[tuple[OutcomeCode, str | None]] = []
        for pair in split:  # a key given twice in one call: the first one deletes it
            if pair in gone:
                gone.discard(pair)
                results.append(("ok", None))
            elif pair in kept:
                results.append(("forbidden", kept[pair]))
            else:
                results.append(("not_found", None))
        return delete_outcomes(split, owner_list, results, self._public)
