"""What the SQLite and the PostgreSQL store have in common: the protocol methods that
are written in terms of the hub's (``get`` over ``get_items``, ``create`` over
``create_checked``...), the embedder, and key formatting."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Self

import numpy as np

from swarm.embedding import Embedder, get_embedder
from swarm.memory._keys import KeyPattern, check_text, parse_prefix, public_key
from swarm.memory._store import HubStore
from swarm.memory._types import ItemResult, KeyInfo, Memory, NewMemory, SearchHit
from swarm.memory._writes import unit

__all__ = ["StoreBase"]


class StoreBase:
    """Mixin of LocalStore and PgStore (each provides the HubStore methods it uses)."""

    org: str
    _embedder: Embedder | None

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def open(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    def _embedder_or_default(self) -> Embedder:
        if self._embedder is None:
            self._embedder = get_embedder()
        return self._embedder

    async def _embed(self, texts: list[str]) -> np.ndarray:
        return await self._embedder_or_default().aembed(texts)

    def _query(
        self, vector: np.ndarray | Sequence[float], prefix: KeyPattern | str | None
    ) -> tuple[KeyPattern, np.ndarray]:
        """A search's pattern and unit query vector."""
        pattern = prefix if isinstance(prefix, KeyPattern) else parse_prefix(prefix or "", self.org)
        return pattern, unit(vector)

    def _public(self, org: str, key: str) -> str:
        return public_key(org, key, self.org)

    async def get(self: HubStore, keys: Sequence[str]) -> dict[str, Memory]:
        """Items by key (canonical form); missing keys are absent from the mapping."""
        items = await self.get_items(keys)
        return {item.key: item.to_memory() for item in items.values()}

    async def list_keys(self: HubStore, prefix: str, *, limit: int | None = None) -> list[KeyInfo]:
        """Every key starting with ``prefix`` (literally), sorted by key."""
        rows = await self.list_page(parse_prefix(prefix, self.org), limit=limit)
        return [KeyInfo(r.key, r.description, r.created_at, r.updated_at) for r in rows]

    async def search(
        self, query: str, *, limit: int = 10, prefix: str | None = None
    ) -> list[SearchHit]:
        """Embedded items closest to ``query``, best first, optionally under ``prefix``."""
        check_text(query, "query")
        pattern = parse_prefix(prefix or "", self.org)
        vec = (await self._embed([query]))[0]
        store: Any = self
        hits = await store.search_vector(vec, limit=limit, prefix=pattern)
        return [SearchHit(item.key, score, item.value, item.description) for item, score in hits]

    async def create(
        self: HubStore,
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

    async def delete(self: HubStore, keys: Sequence[str]) -> list[ItemResult]:
        """Delete keys; a missing key gives a failed item, never an exception."""
        return [o.to_item_result() for o in await self.delete_checked(keys)]
