"""Shared-memory backends: ``local`` (SQLite), ``ensue`` (hosted) and ``hub`` (self-hosted)."""

from swarm.memory._types import (
    MAX_BATCH,
    EmbedSource,
    ItemResult,
    KeyInfo,
    Memory,
    MemoryBackend,
    NewMemory,
    SearchHit,
)

__all__ = [
    "MAX_BATCH",
    "EmbedSource",
    "ItemResult",
    "KeyInfo",
    "Memory",
    "MemoryBackend",
    "NewMemory",
    "SearchHit",
]
