"""Published results: create with their feed entry, read back newest first, search."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from dataclasses import replace
from typing import TYPE_CHECKING

from swarm import keys
from swarm._logging import get_logger
from swarm.errors import InvalidRequestError, KeyExistsError, MemoryStoreError, ToolError
from swarm.memory import NewMemory, SearchHit
from swarm.namespace._store import created, get_json
from swarm.records import STATUSES, Result, encode_record
from swarm.sync import feed_entry, feed_prefixes

if TYPE_CHECKING:
    from swarm.namespace._facade import SwarmMemory

__all__ = ["PUBLISH_ATTEMPTS", "Results"]

log = get_logger(__name__)

_RESULT_CACHE = 4096
PUBLISH_ATTEMPTS = 8
"""Keys tried (``...--<n>`` suffixes) before a publication gives up."""


def _same_run(a: Result, b: Result) -> bool:
    return (
        a.agent_id == b.agent_id
        and a.code_hash == b.code_hash
        and a.parent_hash == b.parent_hash
        and a.seed == b.seed
        and a.completed_at is not None
        and b.completed_at is not None
        and abs(a.completed_at - b.completed_at) < 1e-3
    )


def _description(r: Result) -> str:
    bpb = f"{r.val_bpb:.6f}" if r.val_bpb is not None else "n/a"
    head = f"[{r.agent_id} {r.status.upper()}] val_bpb={bpb}"
    if r.delta is not None:
        head += f" (delta={r.delta:+.4f})"
    return f"[autoresearch] Result: {head} | {r.description}"


class Results:
    """Result operations of one :class:`~swarm.namespace.SwarmMemory` (with a read cache)."""

    def __init__(self, memory: SwarmMemory) -> None:
        self.memory = memory
        self._cache: OrderedDict[str, Result] = OrderedDict()

    def remember(self, result: Result) -> None:
        """Keep ``result`` in the read cache (bounded, least recently used out)."""
        self._cache[result.key] = result
        self._cache.move_to_end(result.key)
        while len(self._cache) > _RESULT_CACHE:
            self._cache.popitem(last=False)

    async def _create(self, key: str, value: str, description: str) -> bool:
        """Create-if-absent of a result together with its feed entry (swarm.sync), one call."""
        mem = self.memory
        items = [NewMemory(key=key, value=value, description=description, embed=mem.embed_records)]
        if key.startswith(keys.RESULTS):
            items.append(feed_entry(key, mem.now()))
        res = await mem.backend.create(items)
        if len(res) > 1 and not res[1].ok and not res[1].exists:
            log.warning("feed_entry_failed", key=key, error=res[1].error)
        return created(key, res[0])

    def _filled(self, result: Result) -> Result:
        if result.status not in STATUSES:
            raise InvalidRequestError(
                f"result status {result.status!r} is not one of {', '.join(STATUSES)}"
            )
        if result.status in ("keep", "discard") and result.val_bpb is None:
            raise InvalidRequestError(f"a {result.status} result needs val_bpb")
        mem = self.memory
        return replace(
            result,
            agent_id=result.agent_id or mem.agent_id,
            host=result.host or mem.host,
            completed_at=result.completed_at if result.completed_at is not None else mem.now(),
        )

    async def publish(self, result: Result) -> str:
        """See :meth:`SwarmMemory.publish_result`."""
        filled = self._filled(result)
        desc = _description(filled)
        explicit = bool(result.key)
        for attempt in range(PUBLISH_ATTEMPTS):
            key = (
                result.key
                if explicit
                else keys.result_key(
                    filled.agent_id,
                    filled.description,
                    filled.parent_hash,
                    filled.code_hash,
                    filled.seed,
                    attempt,
                )
            )
            rec = replace(filled, key=key)
            if await self._create(key, encode_record(rec.to_json()), desc):
                break
            existing = await get_json(self.memory.backend, [key])
            if key in existing and _same_run(Result.from_json(key, existing[key]), rec):
                log.info("result_already_published", key=key)
                return key
            if explicit:
                raise KeyExistsError(f"result key {key!r} already holds another result", key=key)
        else:
            raise ToolError(
                f"could not find a free result key for {filled.description!r} after "
                f"{PUBLISH_ATTEMPTS} attempts",
                key=key,
            )
        self.remember(rec)
        log.info("result_published", key=key, status=rec.status, val_bpb=rec.val_bpb)
        # a candidate (or a run confirming one) reaches the leaderboard only once verified
        if rec.status == "keep" and rec.val_bpb is not None and not rec.extra.get("candidate"):
            try:
                await self.memory.board.update(rec)
            except MemoryStoreError as exc:
                log.warning("leaderboard_update_failed", key=key, error=str(exc))
        return key

    async def results(
        self, track: str | None = None, tier: str | None = None, limit: int | None = None
    ) -> list[Result]:
        """See :meth:`SwarmMemory.results`."""
        infos = await self.memory.backend.list_keys(keys.RESULTS)
        infos.sort(key=lambda i: (i.created_at, i.key), reverse=True)
        out: list[Result] = []
        chunk = 100
        for start in range(0, len(infos), chunk):
            page = [i.key for i in infos[start : start + chunk]]
            missing = [k for k in page if k not in self._cache]
            fetched = await get_json(self.memory.backend, missing)
            for k, rec in fetched.items():
                self.remember(Result.from_json(k, rec))
            for k in page:
                r = self._cache.get(k)
                if r is None:
                    continue
                if track is not None and r.track != track:
                    continue
                if tier is not None and r.vram_tier != tier:
                    continue
                out.append(r)
                if limit is not None and len(out) >= limit:
                    return out
        return out

    async def recent(
        self, since: float, *, track: str | None = None, tier: str | None = None
    ) -> list[Result]:
        """Results published since ``since``, newest first, found through their feed
        entries (:mod:`swarm.sync`): a listing of the hour buckets since then, whatever the
        size of the history. A result without a feed entry (an old client on a store that
        does not index it) is not seen here."""
        backend = self.memory.backend
        prefixes = feed_prefixes(since, self.memory.now(), max_minutes=1)
        listings = await asyncio.gather(*(backend.list_keys(p) for p in prefixes))
        targets = [t for infos in listings for i in infos if (t := keys.feed_target(i.key))]
        targets = list(dict.fromkeys(targets))
        fetched = await get_json(backend, [k for k in targets if k not in self._cache])
        for k, rec in fetched.items():
            self.remember(Result.from_json(k, rec))
        out = [
            r
            for k in targets
            if (r := self._cache.get(k)) is not None
            and (track is None or r.track == track)
            and (tier is None or r.vram_tier == tier)
        ]
        out.sort(key=lambda r: r.completed_at or 0.0, reverse=True)
        return out

    async def search(
        self, query: str, *, namespace: str = "results", limit: int = 10
    ) -> list[SearchHit]:
        """See :meth:`SwarmMemory.search`."""
        return await self.memory.backend.search(
            query, limit=limit, prefix=f"{namespace.strip('/')}/"
        )
