"""How a candidate best is resolved once a confirming run is in (see :mod:`swarm.verify.candidates`).

- :func:`accept`: the two runs agree. Under the track's best mutex (which also guards the
  noise and trust records) the pair joins the tier's seed noise, the author's trust rises,
  and every best the mean of the runs still beats moves -- but only if the confirming runs
  alone beat it too (the author's own value must not carry the best). ``verified`` when a
  run came from another agent on another host, else ``self-verified``; ``superseded`` when
  nothing moved (another best came first).
- :func:`refute`: the runs disagree. The candidate is kept with both values, a best that
  already showed it reverts to the previous one (a scope's first best, which replaced
  nothing, to the best candidate whose runs agreed, else it is removed), the author's
  trust is reset and their other open candidates are marked suspicious.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from swarm import keys
from swarm._logging import get_logger
from swarm.errors import MemoryStoreError
from swarm.records import Best, BestDecision, Result
from swarm.verify.trust_records import Candidate, Run

if TYPE_CHECKING:
    from swarm.namespace import SwarmMemory
    from swarm.verify.candidates import CandidateBook, TrustPolicy

__all__ = ["accept", "refute"]

log = get_logger(__name__)


@dataclass(slots=True)
class _Moves:
    """What a confirmation did to the bests of its scopes."""

    moved: dict[str, bool] = field(default_factory=lambda: {"tier": False, "global": False})
    reasons: list[str] = field(default_factory=list)
    tier_best: Best | None = None
    previous: Best | None = None

    @property
    def any(self) -> bool:
        return any(self.moved.values())


def _state(cand: Candidate, runs: tuple[Run, ...], independent: bool) -> str:
    if independent or cand.state == "self-verified":
        return "verified"
    if any(r.independent_of(cand.original) for r in runs[1:]):
        return "verified"
    return "self-verified"


async def accept(
    book: CandidateBook,
    cand: Candidate,
    this: Run,
    independent: bool,
    policy: TrustPolicy,
    pair: tuple[str, float, float],
) -> BestDecision:
    """The runs agree: move the bests the confirmed candidate still beats (module doc)."""
    mem = book.mem
    runs = (*cand.runs, this)
    state = _state(cand, runs, independent)
    mean = sum(r.val_bpb for r in runs) / len(runs)
    combined = replace(
        cand.result,
        val_bpb=mean,
        verified=state == "verified",
        extra={**cand.result.extra, "verification": state},
    )
    async with mem.locks.mutex(keys.best_mutex_name(combined.track)):  # every best of the track
        noise, trust = await book.noise_and_trust(
            combined.track, pair[0], cand.original.agent_id
        )  # one read under the mutex for both records it updates
        await book.add_noise(combined.track, *pair, current=noise)
        await book.bump_trust(
            cand.result.track, cand.original.agent_id, verified=True, current=trust
        )
        moves = await _move_bests(mem, cand, combined, runs, policy, state)
    final = state if moves.any else "superseded"
    if moves.any and state == "verified":
        try:  # the author's result at the mean of the runs; self-verified ones wait
            await mem.board.update(replace(combined, extra={}))
        except MemoryStoreError as exc:
            log.warning("leaderboard_update_failed", key=cand.key, error=str(exc))
    reason = "; ".join(moves.reasons)
    resolved = None if final == "self-verified" else mem.now()
    closed = replace(cand, state=final, runs=runs, resolved_at=resolved, reason=reason)  # type: ignore[arg-type]
    await book.write_record(closed, "confirmed")
    return BestDecision(
        moved=moves.any,
        reason=reason,
        best=moves.tier_best,
        tier_moved=moves.moved["tier"],
        global_moved=moves.moved["global"],
        previous=moves.previous,
        verification=state,
    )


async def _move_bests(
    mem: SwarmMemory,
    cand: Candidate,
    combined: Result,
    runs: tuple[Run, ...],
    policy: TrustPolicy,
    state: str,
) -> _Moves:
    """Write ``combined`` into every scope of the candidate whose best it beats (hold the
    track's best mutex)."""
    assert combined.val_bpb is not None
    mean = combined.val_bpb
    confirming = sum(r.val_bpb for r in runs[1:]) / (len(runs) - 1)
    margin = policy.noise_margin
    confirmations = tuple(r.to_json() for r in runs)
    wanted = [sc for sc in mem.bests.scopes(combined) if sc.kind in cand.scopes]
    now_bests, _ = await mem.bests.read_many(wanted)
    out = _Moves()
    for scope in wanted:
        current = now_bests[scope.meta_key]
        now, moved = current, True
        if current is not None and current.code_hash == cand.result.code_hash:
            # the candidate shows already (self-verified earlier): keep what it replaced
            now = await mem.bests.write(
                scope, combined, current, confirmations=confirmations, previous=current.previous
            )
        elif (
            current is None
            or current.val_bpb is None
            or (mean < current.val_bpb - margin and confirming < current.val_bpb - margin)
        ):
            now = await mem.bests.write(scope, combined, current, confirmations=confirmations)
        else:
            moved = False
        out.moved[scope.kind] = moved
        if scope.kind == "tier":
            out.tier_best, out.previous = now, current
        label = scope.label()
        out.reasons.append(
            f"{state}: new best of {label} (mean {mean:.6f} of {len(runs)} runs)"
            if out.moved[scope.kind]
            else f"confirmed but not better than the best of {label} "
            f"({now.val_bpb if now else None})"
        )
    return out


async def refute(
    book: CandidateBook, cand: Candidate, this: Run, tolerance: float, sigma: float
) -> BestDecision:
    """The runs disagree: record it, withdraw a best that shows the candidate (module doc)."""
    mem = book.mem
    a = cand.original.val_bpb
    reason = (
        f"refuted: {cand.original.agent_id} reported {a:.6f}, {this.agent_id} "
        f"measured {this.val_bpb:.6f} (apart {abs(a - this.val_bpb):.6f} > "
        f"{tolerance:.6f} = k x sigma {sigma:.4f} x sqrt 2)"
    )
    refuted = replace(
        cand, state="refuted", runs=(*cand.runs, this), resolved_at=mem.now(), reason=reason
    )
    await book.write_record(refuted, "refuted")
    listing = await book.listing(cand.result.track)  # one read for both uses below
    async with mem.locks.mutex(keys.best_mutex_name(cand.result.track)):
        await _withdraw(book, cand, listing)
        await book.bump_trust(cand.result.track, cand.original.agent_id, verified=False)
    for other in listing:
        if (
            other.open
            and other.key != cand.key
            and other.original.agent_id == cand.original.agent_id
        ):
            await book.write_record(replace(other, suspicious=True), "author refuted elsewhere")
    log.warning("candidate_refuted", key=cand.key, reason=reason)
    return BestDecision(False, reason, refuted=True)


async def _withdraw(book: CandidateBook, cand: Candidate, listing: list[Candidate]) -> None:
    """Every best that shows the refuted ``cand`` goes back to the one it replaced; a best
    that replaced nothing (the scope's first) goes back to the best confirmed candidate of
    the scope, or is removed when there is none (hold the track's best mutex)."""
    mem = book.mem
    scopes = mem.bests.scopes(cand.result)
    current, _ = await mem.bests.read_many(scopes)
    for scope in scopes:
        now = current[scope.meta_key]
        if now is None or now.code_hash != cand.result.code_hash:
            continue
        if now.previous is not None:
            back: Result | None = now.previous.result
            confirmations = now.previous.confirmations
        else:
            back, confirmations = _best_confirmed(listing, cand, scope.tier)
        if back is None:
            await mem.bests.withdraw(scope, now, cand.key)
            log.warning("best_withdrawn", scope=scope.label(), code=cand.key, to=None)
            continue
        back = replace(back, extra={**back.extra, "withdrawn": cand.key})
        await mem.bests.write(scope, back, now, confirmations=confirmations)
        log.warning("best_withdrawn", scope=scope.label(), code=cand.key, to=back.val_bpb)


def _best_confirmed(
    listing: list[Candidate], refuted: Candidate, tier: str | None
) -> tuple[Result | None, tuple[Mapping[str, Any], ...]]:
    """The lowest mean among the candidates of ``tier`` (None: any tier) whose runs agreed
    (verified, self-verified, or confirmed but superseded), as the result a best shows."""
    agreed = [
        c
        for c in listing
        if c.key != refuted.key
        and c.result.code_hash != refuted.result.code_hash
        and c.state in ("verified", "self-verified", "superseded")
        and len(c.runs) >= 2
        and not c.suspicious
        and (tier is None or c.result.vram_tier == tier)
    ]
    if not agreed:
        return None, ()
    top = min(agreed, key=_mean)
    mean = _mean(top)
    independent = any(r.independent_of(top.original) for r in top.runs[1:])
    state = "verified" if independent else "self-verified"
    result = replace(
        top.result,
        val_bpb=mean,
        verified=independent,
        extra={**top.result.extra, "verification": state},
    )
    return result, tuple(r.to_json() for r in top.runs)


def _mean(cand: Candidate) -> float:
    return sum(r.val_bpb for r in cand.runs) / len(cand.runs)
