"""Hypotheses (ideas anyone may pick up) and insights (what was learned)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from swarm import keys
from swarm._logging import get_logger
from swarm.errors import InvalidRequestError, ToolError
from swarm.namespace._results import PUBLISH_ATTEMPTS
from swarm.namespace._store import create_one, get_json
from swarm.records import Hypothesis, Insight, encode_record, to_iso

if TYPE_CHECKING:
    from swarm.namespace._facade import SwarmMemory

__all__ = ["Ideas"]

log = get_logger(__name__)


class Ideas:
    """Hypothesis and insight operations of one :class:`~swarm.namespace.SwarmMemory`."""

    def __init__(self, memory: SwarmMemory) -> None:
        self.memory = memory
        #: the unclaimed hypotheses as last listed, and when (``mem.now()``): every worker
        #: of a machine proposes through the same listing for ``max_age_s``
        self._unclaimed: tuple[float, list[Hypothesis]] | None = None

    async def _publish_unique(
        self,
        make_key: Callable[[int], str],
        record: Callable[[str], dict[str, Any]],
        description: str,
        same: Callable[[dict[str, Any]], bool],
    ) -> str:
        mem = self.memory
        for attempt in range(PUBLISH_ATTEMPTS):
            key = make_key(attempt)
            if await create_one(
                mem.backend, key, encode_record(record(key)), description, embed=mem.embed_records
            ):
                return key
            existing = (await get_json(mem.backend, [key])).get(key)
            if existing is not None and same(existing):
                return key
        raise ToolError(f"no free key for {description!r} after {PUBLISH_ATTEMPTS} attempts")

    async def publish_hypothesis(self, hypothesis: Hypothesis) -> str:
        """See :meth:`SwarmMemory.publish_hypothesis`."""
        mem = self.memory
        h = replace(
            hypothesis,
            agent_id=hypothesis.agent_id or mem.agent_id,
            created_at=hypothesis.created_at if hypothesis.created_at is not None else mem.now(),
        )
        if not h.title.strip():
            raise InvalidRequestError("a hypothesis needs a title")
        return await self._publish_unique(
            lambda a: h.key if h.key and a == 0 else keys.hypothesis_key(h.agent_id, h.title, a),
            lambda k: replace(h, key=k).to_json(),
            f"[autoresearch] Hypothesis: {h.title}",
            lambda d: (
                d.get("title") == h.title
                and d.get("hypothesis") == h.hypothesis
                and d.get("agent_id") == h.agent_id
            ),
        )

    async def unclaimed_hypotheses(
        self, track: str | None = None, limit: int | None = None, max_age_s: float = 0.0
    ) -> list[Hypothesis]:
        """See :meth:`SwarmMemory.unclaimed_hypotheses`."""
        now = self.memory.now()
        if self._unclaimed is not None and now - self._unclaimed[0] < max_age_s:
            out = list(self._unclaimed[1])
        else:
            out = await self._list_unclaimed()
            self._unclaimed = (now, out)
        if track is not None:
            out = [h for h in out if h.track == track]
        out.sort(key=lambda h: (-h.priority, -(h.created_at or 0.0), h.key))
        return out[:limit] if limit is not None else out

    async def _list_unclaimed(self) -> list[Hypothesis]:
        backend = self.memory.backend
        hyp_infos, taken_infos = await asyncio.gather(
            backend.list_keys(keys.HYPOTHESES), backend.list_keys(keys.HYPOTHESIS_TAKES)
        )
        taken = {i.key for i in taken_infos}
        free = [i.key for i in hyp_infos if keys.hypothesis_take_key(i.key) not in taken]
        data = await get_json(backend, free)
        return [Hypothesis.from_json(k, v) for k, v in data.items()]

    async def take_hypothesis(self, hypothesis: Hypothesis | str) -> bool:
        """See :meth:`SwarmMemory.take_hypothesis`."""
        mem = self.memory
        hkey = hypothesis if isinstance(hypothesis, str) else hypothesis.key
        if not hkey:
            raise InvalidRequestError("take_hypothesis needs a published hypothesis (with its key)")
        take = keys.hypothesis_take_key(hkey)
        body = {
            "agent_id": mem.agent_id,
            "host": mem.host,
            "hypothesis_key": hkey,
            "taken_at": to_iso(mem.now()),
        }
        won = await create_one(
            mem.backend, take, encode_record(body), "[autoresearch] hypothesis taken", embed=False
        )
        log.info("hypothesis_take", key=hkey, won=won)
        if self._unclaimed is not None:  # taken now, by us or a racer: not offered again
            at, listed = self._unclaimed
            self._unclaimed = (at, [h for h in listed if h.key != hkey])
        return won

    async def publish_insight(self, insight: Insight) -> str:
        """See :meth:`SwarmMemory.publish_insight`."""
        mem = self.memory
        i = replace(
            insight,
            agent_id=insight.agent_id or mem.agent_id,
            posted_at=insight.posted_at if insight.posted_at is not None else mem.now(),
        )
        if not i.insight.strip():
            raise InvalidRequestError("an insight needs text")
        return await self._publish_unique(
            lambda a: i.key if i.key and a == 0 else keys.insight_key(i.agent_id, i.insight, a),
            lambda k: replace(i, key=k).to_json(),
            f"[autoresearch] Insight by {i.agent_id}: {i.insight}",
            lambda d: d.get("insight") == i.insight and d.get("agent_id") == i.agent_id,
        )

    async def insights(self, track: str | None = None, limit: int | None = None) -> list[Insight]:
        """See :meth:`SwarmMemory.insights`."""
        backend = self.memory.backend
        infos = await backend.list_keys(keys.INSIGHTS)
        data = await get_json(backend, [i.key for i in infos])
        out = [Insight.from_json(k, v) for k, v in data.items()]
        if track is not None:
            out = [i for i in out if i.track == track]
        out.sort(key=lambda i: (-(i.posted_at or 0.0), i.key))
        return out[:limit] if limit is not None else out
