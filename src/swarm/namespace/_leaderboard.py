"""The leaderboard of a track: each agent's best keep per tier, best first."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from swarm import keys
from swarm.namespace._store import get_json, upsert
from swarm.records import DEFAULT_TRACK, LeaderboardEntry, Result, encode_record, to_iso

if TYPE_CHECKING:
    from swarm.namespace._facade import SwarmMemory

__all__ = ["LEADERBOARD_SIZE", "Leaderboard"]

LEADERBOARD_SIZE = 100
"""Entries kept on a track's leaderboard."""


def _parse(key: str, data: Mapping[str, Any]) -> list[LeaderboardEntry]:
    raw = data.get("entries")
    out: list[LeaderboardEntry] = []
    if isinstance(raw, list):
        for item in raw:
            if isinstance(item, dict):
                e = LeaderboardEntry.from_json(key, item)
                if e is not None:
                    out.append(e)
    return out


def _improves(entries: list[LeaderboardEntry], result: Result) -> bool:
    """An agent's entry only improves: False when it already holds this or better."""
    return not any(
        e.agent_id == result.agent_id
        and e.vram_tier == result.vram_tier
        and e.val_bpb <= (result.val_bpb or 0.0)
        for e in entries
    )


class Leaderboard:
    """Leaderboard operations of one :class:`~swarm.namespace.SwarmMemory`."""

    def __init__(self, memory: SwarmMemory) -> None:
        self.memory = memory

    async def update(self, result: Result) -> None:
        """Enter a keep (read first without the mutex: most keeps change nothing)."""
        mem = self.memory
        key = keys.leaderboard_key(result.track)
        if not _improves(_parse(key, (await get_json(mem.backend, [key])).get(key, {})), result):
            return
        async with mem.locks.mutex(keys.leaderboard_mutex_name(result.track)):
            data = (await get_json(mem.backend, [key])).get(key, {})
            entries = _parse(key, data)
            if not _improves(entries, result):
                return
            new = LeaderboardEntry.from_result(result)
            entries = [
                e
                for e in entries
                if not (e.agent_id == new.agent_id and e.vram_tier == new.vram_tier)
            ]
            entries.append(new)
            entries.sort(key=lambda e: e.val_bpb)
            body = dict(data)
            body.update(
                {
                    "entries": [e.to_json() for e in entries[:LEADERBOARD_SIZE]],
                    "track": result.track,
                    "updated_at": to_iso(mem.now()),
                }
            )
            await upsert(
                mem.backend,
                key,
                encode_record(body),
                f"[autoresearch] Leaderboard ({result.track})",
            )

    async def entries(self, track: str = DEFAULT_TRACK) -> list[LeaderboardEntry]:
        """See :meth:`SwarmMemory.leaderboard`."""
        key = keys.leaderboard_key(track)
        data = (await get_json(self.memory.backend, [key])).get(key, {})
        return sorted(_parse(key, data), key=lambda e: e.val_bpb)
