"""``SwarmMemory.analyze``: the swarm at a glance, from a few reads."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import replace
from typing import TYPE_CHECKING

from swarm.namespace._bests import Scope
from swarm.namespace._store import get_json
from swarm.records import DEFAULT_TRACK, TIERS, Best, Result, SwarmSummary, read_best

if TYPE_CHECKING:
    from swarm.namespace._facade import SwarmMemory

__all__ = ["analyze", "trend"]


def trend(keeps_newest_first: Iterable[Result]) -> str:
    """``improving`` when the newer half of recent keeps reached a lower val_bpb than the older."""
    vals = [r.val_bpb for r in keeps_newest_first if r.val_bpb is not None]
    if len(vals) < 4:
        return "unknown"
    half = len(vals) // 2
    newer, older = min(vals[:half]), min(vals[half:])
    if newer < older - 1e-9:
        return "improving"
    if abs(newer - older) <= 1e-9:
        return "plateaued"
    return "regressing"


async def _bests(mem: SwarmMemory, tracks: list[str]) -> dict[tuple[str, str | None], Best]:
    scopes = [Scope("global", t, None) for t in tracks] + [
        Scope("tier", t, tier) for t in tracks for tier in TIERS
    ]
    found = await get_json(mem.backend, [s.meta_key for s in scopes])
    bests: dict[tuple[str, str | None], Best] = {}
    for s in scopes:
        b = read_best(s.meta_key, found[s.meta_key]) if s.meta_key in found else None
        if b is not None:
            bests[(s.track, s.tier)] = replace(b, kind=s.kind, track=s.track, tier=s.tier)
    return bests


async def analyze(
    mem: SwarmMemory,
    track: str | None = None,
    *,
    recent: int = 200,
    active_window_s: float = 3600.0,
) -> SwarmSummary:
    """See :meth:`SwarmMemory.analyze`."""
    recent_results, claims, hyps = await asyncio.gather(
        mem.results(track=track, limit=recent),
        mem.live_claims(track),
        mem.unclaimed_hypotheses(track, limit=20),
    )
    now = mem.now()
    tracks = [track] if track else sorted({DEFAULT_TRACK, *(r.track for r in recent_results)})
    active = {c.agent_id for c in claims}
    active.update(
        r.agent_id
        for r in recent_results
        if r.completed_at is not None and now - r.completed_at <= active_window_s
    )
    keeps = [r for r in recent_results if r.status == "keep" and r.val_bpb is not None]
    failures = [r for r in recent_results if r.status in ("crash", "timeout")]
    return SwarmSummary(
        track=track,
        generated_at=now,
        active_agents=tuple(sorted(active)),
        bests=await _bests(mem, tracks),
        live_claims=tuple(claims),
        recent_keeps=tuple(keeps[:10]),
        recent_failures=tuple(failures[:10]),
        recent_discards=sum(1 for r in recent_results if r.status == "discard"),
        total_results=len(recent_results),
        unclaimed_hypotheses=tuple(hyps),
        trend=trend(keeps[:20]),
    )
