"""Bests: each tier's, each track's (over all tiers) and each agent's.

The shared bests of a track are guarded by one mutex (:func:`swarm.keys.best_mutex_name`):
a keep that moves the tier's and the track's best takes it once, reads both again while
holding it and writes only those it still beats (compare-and-set). An agent's personal
best has a mutex of its own (:func:`swarm.keys.agent_best_mutex_name`): personal bests move
often early in a swarm, and hundreds of agents must not queue behind one mutex for them.
A result that beats none of the bests as read without a mutex takes no mutex at all.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from swarm import keys
from swarm._logging import get_logger
from swarm.errors import InvalidRequestError, ProtocolError
from swarm.memory import Memory
from swarm.namespace._store import upsert
from swarm.records import (
    BEST_WITHDRAWN,
    Best,
    BestDecision,
    BestKind,
    Result,
    decode_record,
    encode_record,
    read_best,
    to_iso,
)

if TYPE_CHECKING:
    from swarm.namespace._facade import SwarmMemory

__all__ = [
    "BEST_MAX_STEP",
    "BEST_MAX_STEP_BY_TRACK",
    "BEST_MIN_VAL_BPB",
    "Bests",
    "Scope",
    "best_max_step",
]

log = get_logger(__name__)

BEST_MIN_VAL_BPB = 0.5
"""A val_bpb at or below this is a bug, never a best."""

BEST_MAX_STEP = 0.1
"""No single result may improve a standard-track best by more than this."""

BEST_MAX_STEP_BY_TRACK: dict[str, float] = {"standard": BEST_MAX_STEP, "smoke": 1.0}
"""Per-track step bound: a smoke run's val_bpb starts near 3 and early keeps gain tenths."""


def best_max_step(track: str) -> float:
    """The largest believable single-step improvement of a best on ``track``."""
    return BEST_MAX_STEP_BY_TRACK.get(track, BEST_MAX_STEP)


@dataclass(frozen=True, slots=True)
class Scope:
    """One best: of a tier (``tier``), of a track over all tiers (``global``), of an agent."""

    kind: BestKind
    track: str
    tier: str | None
    agent_id: str | None = None

    @property
    def meta_key(self) -> str:
        if self.kind == "agent":
            return keys.agent_best_key(self.agent_id or "unknown", self.track)
        return keys.best_metadata_key(self.track, self.tier)

    @property
    def code_key(self) -> str | None:
        if self.kind == "agent":
            return None
        return keys.best_train_py_key(self.track, self.tier)

    @property
    def mutex(self) -> str:
        """The mutex that guards this best: the agent's own for a personal best, else the
        one shared by the track's tier and track bests."""
        if self.kind == "agent":
            return keys.agent_best_mutex_name(self.track, self.agent_id or "unknown")
        return keys.best_mutex_name(self.track)

    def label(self) -> str:
        if self.kind == "tier":
            return f"{self.track}/{self.tier}"
        if self.kind == "agent":
            return f"{self.track}/agent {self.agent_id}"
        return f"{self.track} (all tiers)"


def judge(
    current: Best | None, result: Result, *, noise_margin: float, must_beat: float | None = None
) -> str:
    """``moved``, ``worse``, ``too_big``, ``needs_confirmation`` or ``not_confirmed``:
    what ``result`` does to the best ``current`` (read under the scope's mutex)."""
    assert result.val_bpb is not None
    if current is None or current.val_bpb is None:
        return "moved"
    improvement = current.val_bpb - result.val_bpb
    if improvement <= 0:
        return "worse"
    if must_beat is not None and not must_beat < current.val_bpb:
        return "not_confirmed"
    if improvement > best_max_step(result.track):
        return "too_big"
    if improvement < noise_margin:
        return "needs_confirmation"
    return "moved"


def _beats(seen: Best | None, result: Result) -> bool:
    """Could ``result`` move a best last seen as ``seen`` (read without the mutex)?"""
    return (
        seen is None
        or seen.val_bpb is None
        or (result.val_bpb is not None and result.val_bpb < seen.val_bpb)
    )


def _reason(
    scope: Scope, outcome: str, now_best: Best | None, result: Result, noise_margin: float
) -> str:
    if outcome == "moved":
        return f"new best of {scope.label()}"
    if outcome == "needs_confirmation":
        return f"improvement over {scope.label()} is below the noise margin {noise_margin}"
    if outcome == "too_big":
        return (
            f"sanity: improvement over {scope.label()} is more than "
            f"{best_max_step(result.track)} in one step"
        )
    cur = now_best.val_bpb if now_best else None
    return f"not better than the best of {scope.label()} ({cur})"


class Bests:
    """Best operations of one :class:`~swarm.namespace.SwarmMemory`."""

    def __init__(self, memory: SwarmMemory) -> None:
        self.memory = memory

    # -------------------------------------------------------------- reading

    async def read(self, scope: Scope) -> Best | None:
        """The best of ``scope`` now (one read)."""
        return (await self.read_many([scope]))[0][scope.meta_key]

    async def read_many(
        self, scopes: Sequence[Scope], more: Sequence[str] = ()
    ) -> tuple[dict[str, Best | None], dict[str, Memory]]:
        """The bests of ``scopes`` by metadata key and the items ``more``, in one read."""
        wanted = [k for s in scopes for k in (s.meta_key, s.code_key) if k] + list(more)
        found = await self.memory.backend.get(list(dict.fromkeys(wanted)))
        return {s.meta_key: self._parse(s, found) for s in scopes}, found

    @staticmethod
    def _parse(scope: Scope, found: Mapping[str, Memory]) -> Best | None:
        meta = found.get(scope.meta_key)
        if meta is None:
            return None
        try:
            best = read_best(scope.meta_key, decode_record(scope.meta_key, meta.value))
        except ProtocolError as exc:
            log.warning("best_unreadable", key=scope.meta_key, error=str(exc))
            return None
        if best is None:
            return None
        code = found.get(scope.code_key) if scope.code_key else None
        if not best.train_py and code is not None:
            best = replace(best, result=replace(best.result, train_py=code.value))
        return replace(best, kind=scope.kind, track=scope.track, tier=scope.tier)

    # -------------------------------------------------------------- helpers

    def with_key(self, result: Result) -> Result:
        """Fill in the agent and the key ``publish_result`` will give the result (a best is
        usually proposed before its result is published, so the best can name it)."""
        agent = result.agent_id or self.memory.agent_id
        if result.key and result.agent_id:
            return result
        key = result.key or keys.result_key(
            agent, result.description, result.parent_hash, result.code_hash, result.seed
        )
        return replace(result, agent_id=agent, key=key)

    @staticmethod
    def scopes(result: Result) -> list[Scope]:
        """The tier's (when the result has one) and the track's best."""
        out = []
        if result.vram_tier:
            out.append(Scope("tier", result.track, result.vram_tier))
        out.append(Scope("global", result.track, None))
        return out

    @staticmethod
    def agent_scope(result: Result) -> Scope | None:
        """The personal best of the result's agent; None for an agent name no key can hold."""
        try:
            keys.agent_best_key(result.agent_id, result.track)
        except InvalidRequestError:
            return None
        return Scope("agent", result.track, None, result.agent_id)

    @staticmethod
    def sanity(result: Result) -> str | None:
        """Why ``result`` can never be a best, or None."""
        if result.status not in ("keep", "discard") or result.val_bpb is None:
            return f"result has no metric (status {result.status})"
        if not result.val_bpb > BEST_MIN_VAL_BPB:
            return (
                f"sanity: val_bpb {result.val_bpb} is not above {BEST_MIN_VAL_BPB} (likely a bug)"
            )
        return None

    # -------------------------------------------------------------- writing

    async def cas(
        self,
        scope: Scope,
        result: Result,
        *,
        noise_margin: float,
        confirmations: tuple[Mapping[str, Any], ...] = (),
        must_beat: float | None = None,
    ) -> tuple[str, Best | None, Best | None]:
        """Compare-and-set one best under its mutex: (outcome, best now, previous)."""
        async with self.memory.locks.mutex(scope.mutex):
            current = await self.read(scope)
            outcome = judge(current, result, noise_margin=noise_margin, must_beat=must_beat)
            if outcome != "moved":
                return outcome, current, current
            new = await self.write(scope, result, current, confirmations=confirmations)
            return "moved", new, current

    async def write(
        self,
        scope: Scope,
        result: Result,
        current: Best | None,
        *,
        confirmations: tuple[Mapping[str, Any], ...] = (),
        previous: Best | None = None,
    ) -> Best:
        """Write ``result`` as the best of ``scope`` after ``current`` (hold the scope's mutex).
        ``previous`` (default: ``current``) is what the record names as the best before it."""
        assert result.val_bpb is not None
        mem = self.memory
        before = current if previous is None else previous
        new = Best(
            key=scope.meta_key,
            kind=scope.kind,
            track=scope.track,
            tier=scope.tier,
            result=result,
            achieved_by=result.agent_id,
            achieved_at=mem.now(),
            previous=replace(before, previous=None) if before is not None else None,
            improvement_over_previous=(
                before.val_bpb - result.val_bpb
                if before is not None and before.val_bpb is not None
                else None
            ),
            version=(current.version + 1) if current is not None else 1,
            confirmations=confirmations,
        )
        bpb = f"{result.val_bpb:.6f}"
        if scope.code_key:
            await upsert(
                mem.backend,
                scope.code_key,
                result.train_py,
                f"[autoresearch] Best train.py for {scope.label()} (val_bpb={bpb})",
            )
        await upsert(
            mem.backend,
            scope.meta_key,
            encode_record(new.to_json()),
            f"[autoresearch] Best of {scope.label()}: val_bpb={bpb} by {result.agent_id}",
        )
        log.info(
            "best_moved",
            scope=scope.label(),
            val_bpb=result.val_bpb,
            previous=current.val_bpb if current else None,
        )
        return new

    async def withdraw(self, scope: Scope, current: Best, refuted: str) -> None:
        """Leave ``scope`` without a best (hold the scope's mutex): ``current`` showed the
        refuted candidate ``refuted`` and had nothing before it. The record stays (another
        agent's key may not be deletable) as a tombstone every reader takes for no best;
        clients of the original layout read ``val_bpb: null``."""
        tombstone = {
            "status": BEST_WITHDRAWN,
            "val_bpb": None,
            "best_val_bpb": None,
            "description": f"withdrawn: {current.result.description}",
            "agent_id": current.agent_id,
            "withdrawn": refuted,
            "best_kind": scope.kind,
            "best_track": scope.track,
            "best_tier": scope.tier,
            "best_version": current.version + 1,
            "achieved_at": to_iso(self.memory.now()),
        }
        await upsert(
            self.memory.backend,
            scope.meta_key,
            encode_record(tombstone),
            f"[autoresearch] Best of {scope.label()}: withdrawn, none confirmed before it",
        )
        log.info("best_removed", scope=scope.label(), refuted=refuted)

    async def _move(
        self, scopes: Sequence[Scope], result: Result, noise_margin: float
    ) -> dict[str, tuple[str, Best | None, Best | None]]:
        """Under the track's one mutex: re-read the shared ``scopes`` (one read), write those
        still beaten; then the agent's best under its own mutex. Returns (outcome, best now,
        previous) by metadata key."""
        out: dict[str, tuple[str, Best | None, Best | None]] = {}
        shared = [s for s in scopes if s.kind != "agent"]
        if shared:
            async with self.memory.locks.mutex(keys.best_mutex_name(result.track)):
                current, _ = await self.read_many(shared)
                for scope in shared:
                    cur = current[scope.meta_key]
                    outcome = judge(cur, result, noise_margin=noise_margin)
                    new = await self.write(scope, result, cur) if outcome == "moved" else cur
                    out[scope.meta_key] = (outcome, new, cur)
        for scope in scopes:
            if scope.kind == "agent":
                out[scope.meta_key] = await self.cas(scope, result, noise_margin=0.0)
        return out

    async def propose(self, result: Result, noise_margin: float = 0.0) -> BestDecision:
        """See :meth:`SwarmMemory.propose_best`."""
        bad = self.sanity(result)
        if bad:
            return BestDecision(False, bad)
        result = self.with_key(result)
        shared = self.scopes(result)
        agent = self.agent_scope(result)
        every = [*shared, *([agent] if agent else [])]
        pkey = (
            keys.pending_key(result.track, result.vram_tier, result.parent_hash, result.code_hash)
            if result.vram_tier
            else None
        )
        # one read: every best this result could move, and a pending improvement it confirms
        seen, found = await self.read_many(every, [pkey] if pkey else [])
        pending = self.memory.pending.parse_found(pkey, found) if pkey else None
        if pending is not None and pending[0].seed != result.seed:
            return await self.memory.pending.confirm(pending, result)
        moves = await self._move(
            [s for s in every if _beats(seen[s.meta_key], result)], result, noise_margin
        )
        outcomes = {
            s.meta_key: moves.get(s.meta_key, ("worse", seen[s.meta_key], seen[s.meta_key]))
            for s in every
        }
        return await self._decide(result, shared, agent, outcomes, noise_margin)

    async def _decide(
        self,
        result: Result,
        shared: Sequence[Scope],
        agent: Scope | None,
        outcomes: Mapping[str, tuple[str, Best | None, Best | None]],
        noise_margin: float,
    ) -> BestDecision:
        tier_moved = global_moved = False
        tier_best: Best | None = None
        previous: Best | None = None
        parked: list[str] = []
        reasons: list[str] = []
        for scope in shared:
            outcome, now_best, prev = outcomes[scope.meta_key]
            if scope.kind == "tier" or (tier_best is None and not result.vram_tier):
                tier_best, previous = now_best, prev
            tier_moved |= outcome == "moved" and scope.kind == "tier"
            global_moved |= outcome == "moved" and scope.kind == "global"
            if outcome == "needs_confirmation":
                parked.append(scope.kind)
            reasons.append(_reason(scope, outcome, now_best, result, noise_margin))
        if parked and result.vram_tier:
            await self.memory.pending.write(result, parked, noise_margin)
        return BestDecision(
            moved=tier_moved or global_moved,
            reason="; ".join(reasons),
            needs_confirmation=bool(parked),
            best=tier_best,
            tier_moved=tier_moved,
            global_moved=global_moved,
            agent_moved=agent is not None and outcomes[agent.meta_key][0] == "moved",
            previous=previous,
        )

    async def propose_agent_best(self, result: Result, seen: Best | None = None) -> bool:
        """Offer ``result`` as its agent's personal best alone; True when it moved.
        ``seen``: that best as just read; a result not better takes no mutex."""
        scope = self.agent_scope(result)
        if scope is None or (seen is not None and not _beats(seen, result)):
            return False
        outcome, _, _ = await self.cas(scope, result, noise_margin=0.0)
        return outcome == "moved"
