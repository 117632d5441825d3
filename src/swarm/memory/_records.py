"""What the stores return: a stored item, a listing row, the outcome of one write."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

from swarm.memory._keys import KeyPattern
from swarm.memory._types import EmbedSource, ItemResult, Memory

__all__ = ["KeyRow", "Outcome", "OutcomeCode", "StoredItem", "collect_page"]

OutcomeCode = Literal["ok", "not_found", "exists", "forbidden"]


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


def collect_page(
    rows: Iterable[tuple[str, str, int, float, float, str | None]],
    pattern: KeyPattern,
    *,
    limit: int | None,
    offset: int,
    public: Callable[[str], str],
) -> list[KeyRow]:
    """The page of ``rows`` (key-sorted, of ``pattern.org``, already under its literal
    prefix) that a listing returns. When the pattern has wildcards the database could
    not apply them, so ``offset`` and ``limit`` are applied here, after matching."""
    rx = pattern.regex
    out: list[KeyRow] = []
    skipped = 0
    for key, desc, size, created, updated, creator in rows:
        if rx is not None:
            if rx.match(key) is None:
                continue
            if skipped < offset:
                skipped += 1
                continue
        out.append(KeyRow(public(key), desc, size, created, updated, creator))
        if limit is not None and len(out) >= limit:
            break
    return out
