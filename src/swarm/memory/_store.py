"""What the hub needs of a store: the interface that the SQLite store (``LocalStore``)
and the PostgreSQL store (``PgStore``) both implement, so that the hub's tools, auth
and limits are written once."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from swarm.memory._keys import KeyPattern
from swarm.memory._records import KeyRow, Outcome, StoredItem
from swarm.memory._types import EmbedSource, ItemResult, KeyInfo, Memory, NewMemory, SearchHit

__all__ = ["HubStore"]


@runtime_checkable
class HubStore(Protocol):
    """A memory backend with the hub's extras: creators, owners, pages, raw vectors."""

    name: str
    org: str
    max_value_bytes: int

    async def __aenter__(self) -> HubStore: ...

    async def __aexit__(self, *exc_info: object) -> None: ...

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Raise MemoryStoreError when the storage cannot be read."""

    async def count(self) -> int: ...

    async def get(self, keys: Sequence[str]) -> dict[str, Memory]: ...

    async def get_items(self, keys: Sequence[str]) -> dict[str, StoredItem]: ...

    async def list_keys(self, prefix: str, *, limit: int | None = None) -> list[KeyInfo]: ...

    async def list_page(
        self, pattern: KeyPattern, *, limit: int | None = None, offset: int = 0
    ) -> list[KeyRow]: ...

    async def search(
        self, query: str, *, limit: int = 10, prefix: str | None = None
    ) -> list[SearchHit]: ...

    async def search_vector(
        self,
        vector: np.ndarray | Sequence[float],
        *,
        limit: int = 10,
        prefix: KeyPattern | str | None = None,
    ) -> list[tuple[StoredItem, float]]: ...

    async def create(
        self,
        items: Sequence[NewMemory],
        *,
        creator: str | None = None,
        vectors: np.ndarray | Sequence[np.ndarray | None] | None = None,
    ) -> list[ItemResult]: ...

    async def create_checked(
        self,
        items: Sequence[NewMemory],
        *,
        creator: str | None = None,
        vectors: np.ndarray | Sequence[np.ndarray | None] | None = None,
    ) -> list[Outcome]: ...

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
    ) -> StoredItem: ...

    async def delete(self, keys: Sequence[str]) -> list[ItemResult]: ...

    async def delete_checked(
        self, keys: Sequence[str], *, owners: Sequence[str | None] | None = None
    ) -> list[Outcome]: ...
