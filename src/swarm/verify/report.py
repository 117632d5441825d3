"""How verification shows in ``swarm best`` and ``swarm status`` (plain rows, JSON-ready)."""

from __future__ import annotations

from typing import Any

from swarm import keys
from swarm.namespace import SwarmMemory
from swarm.records import Best
from swarm.verify.candidates import verification_of
from swarm.verify.trust_records import Candidate, NoiseStats

__all__ = ["SHOWN_STATES", "best_fields", "candidate_rows", "noise_rows"]

#: candidates a table shows (verified ones are in the bests; JSON carries them all)
SHOWN_STATES = frozenset({"pending", "self-verified", "refuted"})


def best_fields(best: Best) -> dict[str, Any]:
    """``verification`` and ``confirmed_by`` (agent@host of every run behind the best)."""
    by = [f"{c.get('agent_id', '?')}@{c.get('host', '?')}" for c in best.confirmations]
    return {"verification": verification_of(best), "confirmed_by": list(dict.fromkeys(by))}


async def candidate_rows(memory: SwarmMemory, track: str | None = None) -> list[dict[str, Any]]:
    """Every candidate (pending, self-verified, verified, refuted, superseded), newest first."""
    prefix = keys.pending_prefix(track) if track else keys.PENDING
    infos = await memory.backend.list_keys(prefix)
    data = await memory.get_json([i.key for i in infos])
    cands = [Candidate.from_json(k, v) for k, v in data.items()]
    cands = [c for c in cands if c.result.val_bpb is not None or c.runs]
    cands.sort(key=lambda c: c.since or 0.0, reverse=True)
    return [
        {
            "key": c.key,
            "state": c.state,
            "track": c.result.track,
            "tier": c.result.vram_tier,
            "val_bpb": c.original.val_bpb,
            "agent_id": c.original.agent_id,
            "description": c.result.description,
            "code_hash": c.result.code_hash,
            "runs": [r.to_json() for r in c.runs],
            "suspicious": c.suspicious,
            "since": c.since,
            "reason": c.reason,
        }
        for c in cands
    ]


async def noise_rows(memory: SwarmMemory) -> list[dict[str, Any]]:
    """Seed noise per track and tier: sigma, measured from how many pairs (or the default)."""
    infos = await memory.backend.list_keys(keys.NOISE)
    data = await memory.get_json([i.key for i in infos])
    out = []
    for key, rec in sorted(data.items()):
        track, _, tier = key.removeprefix(keys.NOISE).partition("/")
        stats = NoiseStats.from_json(track, rec)
        out.append(
            {
                "track": track,
                "tier": tier,
                "sigma": stats.sigma(),
                "pairs": len(stats.pairs),
                "measured": stats.measured(),
            }
        )
    return out
