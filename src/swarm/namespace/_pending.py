"""Pending improvements: a gain below the noise margin waits for a confirming run.

The pending record (``best/pending/...``) keeps the first run; a second run of the same
code with another seed confirms it at the mean of both, or not (see
:meth:`SwarmMemory.confirm_best`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from swarm import keys
from swarm._logging import get_logger
from swarm.errors import ProtocolError
from swarm.memory import Memory
from swarm.namespace._store import get_json, upsert
from swarm.records import Best, BestDecision, Result, decode_record, encode_record, to_iso

if TYPE_CHECKING:
    from swarm.namespace._facade import SwarmMemory

__all__ = ["Pending", "PendingRun"]

log = get_logger(__name__)

PendingRun = tuple[Result, list[str], str]
"""(the first run, the scopes it waits for, the pending record's key)."""


def _parse(key: str, rec: Mapping[str, Any] | None) -> PendingRun | None:
    if rec is None or rec.get("resolved_at"):
        return None
    scopes = [s for s in rec.get("pending_scopes", []) if s in ("tier", "global")]
    return (
        Result.from_json(str(rec.get("result_key", "")), dict(rec)),
        scopes or ["tier", "global"],
        key,
    )


class Pending:
    """Pending-improvement operations of one :class:`~swarm.namespace.SwarmMemory`."""

    def __init__(self, memory: SwarmMemory) -> None:
        self.memory = memory

    def parse_found(self, key: str, found: Mapping[str, Memory]) -> PendingRun | None:
        """The open pending record ``key`` among items read together with others."""
        if key not in found:
            return None
        try:
            return _parse(key, decode_record(key, found[key].value))
        except ProtocolError as exc:
            log.warning("record_unreadable", key=key, error=str(exc))
            return None

    async def _read(
        self, track: str, tier: str, parent_hash: str, code_hash: str
    ) -> PendingRun | None:
        key = keys.pending_key(track, tier, parent_hash, code_hash)
        return _parse(key, (await get_json(self.memory.backend, [key])).get(key))

    async def write(self, result: Result, scopes: list[str], margin: float) -> None:
        """Park ``result`` until a confirming run (its tier must be known)."""
        assert result.vram_tier
        mem = self.memory
        key = keys.pending_key(result.track, result.vram_tier, result.parent_hash, result.code_hash)
        data = result.to_json()
        data.update(
            {
                "result_key": result.key,
                "pending_scopes": scopes,
                "noise_margin": margin,
                "pending_since": to_iso(mem.now()),
            }
        )
        await upsert(
            mem.backend,
            key,
            encode_record(data),
            f"[autoresearch] Pending best (needs a confirming run): {result.description}",
        )
        log.info("best_pending", key=key, val_bpb=result.val_bpb, scopes=scopes)

    async def _resolve(self, key: str, outcome: str) -> None:
        """Close a pending record: marked resolved (anyone may update ``best/``), then deleted
        where this client may delete it (a hub lets participants delete only their own)."""
        mem = self.memory
        await upsert(
            mem.backend,
            key,
            encode_record(
                {"resolved_at": to_iso(mem.now()), "outcome": outcome, "resolved_by": mem.agent_id}
            ),
            f"[autoresearch] Pending best resolved: {outcome}",
        )
        (res,) = await mem.backend.delete([key])
        if not res.ok:
            log.debug("pending_delete_refused", key=key, error=res.error)

    async def confirmations(
        self, track: str | None = None, tier: str | None = None
    ) -> list[Result]:
        """See :meth:`SwarmMemory.pending_confirmations`."""
        mem = self.memory
        prefix = keys.pending_prefix(track, tier) if track else keys.PENDING
        infos = await mem.backend.list_keys(prefix)
        data = await get_json(mem.backend, [i.key for i in infos])
        out = [
            Result.from_json(str(r.get("result_key", "")), r)
            for r in data.values()
            if not r.get("resolved_at")
        ]
        if tier is not None:
            out = [r for r in out if r.vram_tier == tier]
        return out

    async def confirm_best(self, result: Result) -> BestDecision:
        """See :meth:`SwarmMemory.confirm_best`."""
        bests = self.memory.bests
        bad = bests.sanity(result)
        if bad:
            return BestDecision(False, bad)
        if not result.vram_tier:
            return BestDecision(False, "no pending improvement: the result has no vram_tier")
        pending = await self._read(
            result.track, result.vram_tier, result.parent_hash, result.code_hash
        )
        if pending is None:
            return BestDecision(False, "no pending improvement for this code")
        return await self.confirm(pending, bests.with_key(result))

    async def confirm(self, pending: PendingRun, run: Result) -> BestDecision:
        """Confirm (or not) the pending improvement with the run ``run``."""
        original, scopes, pkey = pending
        if original.seed is not None and run.seed is not None and original.seed == run.seed:
            return BestDecision(
                False, f"a confirming run needs another seed (both used {run.seed})"
            )
        assert original.val_bpb is not None and run.val_bpb is not None
        mean = (original.val_bpb + run.val_bpb) / 2.0
        combined = replace(original, val_bpb=mean, verified=True)
        confirmations = tuple(
            {"result_key": r.key, "agent_id": r.agent_id, "seed": r.seed, "val_bpb": r.val_bpb}
            for r in (original, run)
        )
        reasons: list[str] = []
        moved = {"tier": False, "global": False}
        tier_best: Best | None = None
        previous: Best | None = None
        bests = self.memory.bests
        for scope in bests.scopes(combined):
            if scope.kind not in scopes:
                continue
            outcome, now_best, prev = await bests.cas(
                scope,
                combined,
                noise_margin=0.0,
                confirmations=confirmations,
                must_beat=run.val_bpb,
            )
            if scope.kind == "tier":
                tier_best, previous = now_best, prev
            moved[scope.kind] = outcome == "moved"
            cur = now_best.val_bpb if now_best else None
            reasons.append(
                f"confirmed: new best of {scope.label()} (mean {mean:.6f} of 2 seeds)"
                if outcome == "moved"
                else f"not confirmed for {scope.label()} (best {cur}, runs "
                f"{original.val_bpb:.6f} and {run.val_bpb:.6f})"
            )
        if tier_best is None and combined.vram_tier:
            tier_best = await self.memory.get_best(combined.track, combined.vram_tier)
        any_moved = moved["tier"] or moved["global"]
        await self._resolve(pkey, "confirmed" if any_moved else "not confirmed")
        return BestDecision(
            moved=any_moved,
            reason="; ".join(reasons) or "nothing left to confirm",
            needs_confirmation=False,
            best=tier_best,
            tier_moved=moved["tier"],
            global_moved=moved["global"],
            previous=previous,
        )
