"""The swarm's recent results per tier as the proposers see them (:class:`SwarmView`)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from swarm._logging import get_logger
from swarm.errors import MemoryStoreError
from swarm.records import Result

if TYPE_CHECKING:
    from swarm.namespace import SwarmMemory
    from swarm.sync import ResultFeed

__all__ = ["SwarmView"]

log = get_logger(__name__)


class SwarmView:
    """Cached view of the swarm's results per tier for proposers (refreshed at most every
    ``ttl_s``; this machine's own results are added at once)."""

    def __init__(
        self,
        memory: SwarmMemory,
        track: str,
        *,
        ttl_s: float = 10.0,
        limit: int = 300,
        clock: Callable[[], float] = time.monotonic,
        feed: ResultFeed | None = None,
    ) -> None:
        self.memory = memory
        self.feed = feed  # incremental (None: list every result)
        self.track = track
        self.ttl_s = ttl_s
        self.limit = limit
        self.clock = clock
        self._history: dict[str, list[Result]] = {}
        self._fetched_at: dict[str, float] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def history(self, tier: str) -> list[Result]:
        if self.feed is not None:
            try:
                await self.feed.refresh(self.ttl_s)
            except MemoryStoreError as exc:
                log.warning("swarm_history_unavailable", tier=tier, error=str(exc))
            return list(self.feed.recent(tier, self.limit))
        lock = self._locks.setdefault(tier, asyncio.Lock())
        async with lock:
            now = self.clock()
            if tier not in self._history or now - self._fetched_at.get(tier, 0.0) >= self.ttl_s:
                try:
                    self._history[tier] = await self.memory.results(
                        track=self.track, tier=tier, limit=self.limit
                    )
                    self._fetched_at[tier] = now
                except MemoryStoreError as exc:
                    log.warning("swarm_history_unavailable", tier=tier, error=str(exc))
                    self._history.setdefault(tier, [])
                    self._fetched_at[tier] = now
            return list(self._history[tier])

    def add(self, result: Result) -> None:
        if self.feed is not None:
            self.feed.remember(result)
            return
        tier = result.vram_tier or "cpu"
        known = self._history.setdefault(tier, [])
        known.insert(0, result)
        del known[self.limit :]
