"""Value types and the protocol every memory backend implements.

Three backends (``local`` SQLite, ``ensue`` hosted, ``hub`` self-hosted over the same
wire protocol as ``ensue``) give one behaviour; the contract tests in ``tests/memory``
run the same assertions against all of them.

Keys are plain strings such as ``results/ada--matrix-lr--a1b2c3``. A key of the
backend's own org is always returned without its ``@org/`` prefix; a key of another
org keeps it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

EmbedSource = Literal["description", "value"]

MAX_BATCH = 100
"""Most items one create/get/delete call may carry (the wire protocol's limit)."""


@dataclass(frozen=True, slots=True)
class NewMemory:
    """An item to create."""

    key: str
    value: str
    description: str = ""
    embed: bool = False
    embed_source: EmbedSource = "description"


@dataclass(frozen=True, slots=True)
class Memory:
    """A stored item, value decoded to text."""

    key: str
    value: str
    description: str
    created_at: float  # epoch seconds
    updated_at: float  # epoch seconds
    embedded: bool = False


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """One row of a key listing."""

    key: str
    description: str
    created_at: float
    updated_at: float


@dataclass(frozen=True, slots=True)
class ItemResult:
    """Outcome of one item of a batch call. ``error`` says why when ``ok`` is false.

    ``exists`` is true when a create failed because the key was already there.
    """

    key: str
    ok: bool
    error: str | None = None
    exists: bool = False


@dataclass(frozen=True, slots=True)
class SearchHit:
    """One semantic-search match; higher ``score`` (cosine) is closer."""

    key: str
    score: float
    value: str
    description: str


@runtime_checkable
class MemoryBackend(Protocol):
    """What the namespace layer needs from a store. All methods are coroutines.

    Implementations are async context managers owning their resources (a SQLite
    connection pool, an aiohttp session) and raise only ``swarm.errors`` types.
    """

    name: str

    async def __aenter__(self) -> MemoryBackend: ...

    async def __aexit__(self, *exc_info: object) -> None: ...

    async def get(self, keys: Sequence[str]) -> dict[str, Memory]:
        """Items by key; missing keys are absent from the mapping. Any number of keys."""
        ...

    async def create(self, items: Sequence[NewMemory]) -> list[ItemResult]:
        """Create-if-absent per item, atomically per key. Any number of items, results in order."""
        ...

    async def update(
        self,
        key: str,
        value: str,
        *,
        description: str | None = None,
        embed: bool | None = None,
        embed_source: EmbedSource | None = None,
    ) -> object:
        """Replace the value of an existing key; raises ``KeyNotFoundError`` when absent.
        What it returns is not part of the contract (a hub's store returns the stored item)."""
        ...

    async def delete(self, keys: Sequence[str]) -> list[ItemResult]:
        """Delete keys; a missing key gives a failed item, never an exception."""
        ...

    async def list_keys(self, prefix: str, *, limit: int | None = None) -> list[KeyInfo]:
        """Every key starting with ``prefix`` (literally: no wildcards), all pages, sorted by key."""
        ...

    async def search(
        self, query: str, *, limit: int = 10, prefix: str | None = None
    ) -> list[SearchHit]:
        """Embedded items closest to ``query``, best first, optionally under ``prefix``."""
        ...

    async def ping(self) -> None:
        """Raise a ``MemoryStoreError`` when the store cannot be used."""
        ...
