"""Record input and output over one backend: JSON reads, create-if-absent, upsert.

The small vocabulary every room of :mod:`swarm.namespace` speaks to the store with.
Each function takes the backend at call time (a test may swap ``SwarmMemory.backend``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from swarm._logging import get_logger
from swarm.errors import KeyNotFoundError, ProtocolError, ToolError
from swarm.memory import ItemResult, MemoryBackend, NewMemory
from swarm.records import decode_record

__all__ = ["create_one", "created", "get_json", "upsert"]

log = get_logger(__name__)


async def get_json(backend: MemoryBackend, key_list: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Batch get; values decoded as JSON objects. Unusable records are logged and skipped."""
    if not key_list:
        return {}
    found = await backend.get(list(dict.fromkeys(key_list)))
    out: dict[str, dict[str, Any]] = {}
    for key, mem in found.items():
        try:
            out[key] = decode_record(key, mem.value)
        except ProtocolError as exc:
            log.warning("record_unreadable", key=key, error=str(exc))
    return out


def created(key: str, res: ItemResult) -> bool:
    """True when a create of ``key`` succeeded, False when the key already existed."""
    if res.ok:
        return True
    if res.exists:
        return False
    raise ToolError(f"create of {key!r} failed: {res.error or 'unknown error'}", key=key)


async def create_one(
    backend: MemoryBackend, key: str, value: str, description: str, *, embed: bool
) -> bool:
    """Create-if-absent of one key; True when created, False when it already existed."""
    (res,) = await backend.create(
        [NewMemory(key=key, value=value, description=description, embed=embed)]
    )
    return created(key, res)


async def upsert(
    backend: MemoryBackend,
    key: str,
    value: str,
    description: str,
    *,
    embed: bool = False,
    create_first: bool = False,
) -> None:
    """Update ``key``, creating it when absent (and updating again if a racer created it).
    ``create_first``: the key is most likely new (one call instead of two)."""
    if create_first and await create_one(backend, key, value, description, embed=embed):
        return
    for _ in range(3):
        try:
            await backend.update(key, value, description=description)
            return
        except KeyNotFoundError:
            pass
        if await create_one(backend, key, value, description, embed=embed):
            return
    raise ToolError(f"could not write {key!r}: it kept appearing and disappearing", key=key)
