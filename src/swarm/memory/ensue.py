"""MemoryBackend over the Ensue wire protocol: the hosted service (``ensue``) or our hub (``hub``).

Records are JSON text; values travel base64-encoded (``base64: true``) like the original
clients send them. A create of an existing key comes back as
``ItemResult(ok=False, exists=True)``.

Create atomicity is checked once per backend session, before the first create: a scratch
key is created twice; the second create must fail. A server that accepts both is logged
as a warning and ``create_is_atomic`` turns false, so the namespace layer falls back to
claim-then-verify.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING

import aiohttp
import orjson

from swarm._logging import get_logger
from swarm.ensue_async import DEFAULT_URL, EnsueClient, RetryPolicy, Sleep, like_escape
from swarm.errors import ConfigError, InvalidRequestError, MemoryStoreError
from swarm.memory._types import (
    EmbedSource,
    ItemResult,
    KeyInfo,
    Memory,
    MemoryBackend,
    NewMemory,
    SearchHit,
)

__all__ = ["PROBE_PREFIX", "EnsueBackend"]

log = get_logger(__name__)

PROBE_PREFIX = "claims/_probe--"
"""Where the once-per-session atomicity probe writes (a place participants may create)."""


class EnsueBackend:
    """A ``MemoryBackend`` speaking Ensue's JSON-RPC protocol through ``EnsueClient``."""

    def __init__(
        self,
        url: str = DEFAULT_URL,
        api_key: str | None = None,
        *,
        org: str | None = None,
        session: aiohttp.ClientSession | None = None,
        name: str = "ensue",
        timeout_s: float = 30.0,
        retry: RetryPolicy = RetryPolicy(),
        sleep: Sleep = asyncio.sleep,
        check_atomic_create: bool = True,
        probe_prefix: str = PROBE_PREFIX,
    ) -> None:
        if name not in ("ensue", "hub"):
            raise ConfigError(
                f"backend name must be 'ensue' or 'hub', got {name!r}", key="name", value=name
            )
        self.name = name
        self.url = url
        self.org = org
        self.client = EnsueClient(
            url, api_key, org=org, session=session, timeout_s=timeout_s, retry=retry, sleep=sleep
        )
        self._check_atomic = check_atomic_create
        self._probe_prefix = probe_prefix
        self._probe_lock = asyncio.Lock()
        self._probed = False
        self.create_is_atomic = True
        """False once this session saw a server accept two creates of one key."""

    async def __aenter__(self) -> EnsueBackend:
        await self.client.__aenter__()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.client.__aexit__(*exc_info)

    # ---- the protocol

    async def get(self, keys: Sequence[str]) -> dict[str, Memory]:
        return await self.client.get_memory(keys)

    async def create(self, items: Sequence[NewMemory]) -> list[ItemResult]:
        if not items:
            return []
        await self.check_create_atomic()
        return await self.client.create_memory(items)

    async def update(
        self,
        key: str,
        value: str,
        *,
        description: str | None = None,
        embed: bool | None = None,
        embed_source: EmbedSource | None = None,
    ) -> None:
        await self.client.update_memory(
            key, value, description=description, embed=embed, embed_source=embed_source
        )

    async def delete(self, keys: Sequence[str]) -> list[ItemResult]:
        return await self.client.delete_memory(keys)

    async def list_keys(self, prefix: str, *, limit: int | None = None) -> list[KeyInfo]:
        return await self.client.list_keys(prefix, limit=limit)

    async def search(
        self, query: str, *, limit: int = 10, prefix: str | None = None
    ) -> list[SearchHit]:
        return await self.client.search_memories(query, limit=limit, prefix=prefix)

    async def ping(self) -> None:
        """One cheap authenticated read; raises the client's ``MemoryStoreError`` on failure."""
        await self.client.call_tool(
            "list_keys",
            {"prefix": like_escape(self.client.wire_key("best/")), "limit": 1, "offset": 0},
        )

    # ---- create atomicity

    async def check_create_atomic(self) -> bool:
        """Probe once per session whether a second create of one key fails; returns the verdict."""
        if not self._check_atomic or self._probed:
            return self.create_is_atomic
        async with self._probe_lock:
            if self._probed:
                return self.create_is_atomic
            try:
                self.create_is_atomic = await self._probe()
            except (MemoryStoreError, InvalidRequestError) as exc:
                # Cannot tell (no write permission there, server trouble): trust the
                # documented behaviour and say so.
                log.warning(
                    "ensue.atomic_probe_failed",
                    url=self.url,
                    error_type=type(exc).__name__,
                    error=str(exc),
                    assumed_atomic=True,
                )
            self._probed = True
        return self.create_is_atomic

    async def _probe(self) -> bool:
        key = (
            f"{self._probe_prefix}{socket.gethostname()[:24]}-{os.getpid()}-{uuid.uuid4().hex[:10]}"
        )
        value = orjson.dumps(
            {
                "probe": True,
                "purpose": "create-atomicity check; safe to delete",
                "created_at": time.time(),
            }
        ).decode()
        item = NewMemory(key=key, value=value, description="[swarm] create-atomicity probe")
        first = await self.client.create_memory([item])
        if not first[0].ok:
            raise MemoryStoreError(f"probe create of {key} failed: {first[0].error}")
        try:
            second = await self.client.create_memory([item])
        finally:
            try:
                await self.client.delete_memory([key])
            except MemoryStoreError as exc:
                log.warning("ensue_atomic_probe_cleanup_failed", key=key, error=str(exc))
        atomic = not second[0].ok
        if atomic:
            log.debug("ensue_atomic_probe_ok", url=self.url)
        else:
            log.warning(
                "ensue.create_not_atomic",
                url=self.url,
                key=key,
                detail="server accepted two creates of one key; claims fall back to "
                "claim-then-verify",
            )
        return atomic


if TYPE_CHECKING:  # EnsueBackend satisfies the protocol (checked by mypy)
    _protocol_check: MemoryBackend = EnsueBackend("http://127.0.0.1:1/")
