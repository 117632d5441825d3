"""The built-in search proposer: changes of the constants block that learn from the swarm.

No LLM. From the current best train.py of a track and tier it proposes one change of
the constants block at a time (one constant, a carried-over improvement, or -- once the
single moves around a parent ran out -- a pair of constants), chosen by what the swarm's
results (same track and tier) say. The candidate moves are built in
:mod:`swarm.proposers._search_moves`:

* **evidence per coordinate** -- every result that changed a constant gives a signed
  improvement (``-delta``, the drop of val_bpb from its parent) in the direction it
  moved the constant, in the constant's natural space (log2 for rates, exponents for
  batch sizes, units for depth ...). Recent evidence weighs more; a result that changed
  several constants shares the credit. A crash in a direction (an OOM from a bigger
  batch, say) steers away from going further that way.
* **pattern search from the parent** -- a direction whose step already failed from this
  parent is retried with half the step; once both directions failed the smaller side of
  the bracket wins; the step of a constant shrinks for every reversal of direction among
  its improvements (the optimum lies in between).
* **combination** -- an improvement found on another parent whose changes still apply to
  the current best (the constants it changed still hold its old values) is carried over.
* **no repeats** -- a candidate whose code hash the swarm already ran (from any parent)
  or that this proposer has in flight, or that ``ctx.is_duplicate`` rejects, is skipped.
* **exploration** -- with probability ``explore`` a random untried valid move is taken.
* **spreading under contention** -- when the machine keeps losing claims to other agents
  (``ctx.contention``: claims lost since it last won one), the swarm is ranking the same
  moves first; the walk through the candidates then starts at a seeded place among the top
  ``1 + 2 * contention`` instead of at the top.
* **widening** -- once every move above was tried from the parent, the search does not
  run dry: it goes on (lazily, in a seeded order of increasing distance) with finer
  step levels (half steps between the parent and the nearest tried values), larger
  steps (repeated level-0 steps out to the sane range bounds) and two-constant
  combinations (pairs of the least bad individually tried moves first, then of any
  single moves). Only when all of these were tried is ``ProposerError`` raised.

Every candidate passes :func:`swarm.proposers.space.check_values` (batch divisibility
for the track's sequence length, model dims consistent with HEAD_DIM, sane ranges).
The choice is deterministic for a given seed, worker index, parent and history.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from swarm._logging import get_logger
from swarm.errors import ProposerError, TrainPyError
from swarm.proposers._search_moves import (
    Candidate,
    Observation,
    combine_candidates,
    evidence_of,
    mutation_candidates,
    observations_from,
    signature,
    wider_candidates,
)
from swarm.proposers.base import Proposal, ProposalContext
from swarm.proposers.space import build_space, describe_changes
from swarm.trainpy import Value, apply_changes, code_hash, constants, constants_block

if TYPE_CHECKING:
    from swarm.proposers.base import ProposerSpec

__all__ = ["Observation", "SearchProposer", "observations_from"]

log = get_logger(__name__)


class SearchProposer:
    """Learns from the swarm's results of one track and tier; see the module docstring."""

    name = "search"
    #: in-process CPU work: proposes in a moment, one at a time per machine
    slow: bool = False

    def __init__(
        self, *, seed: int = 0, explore: float = 0.1, max_level: int = 3, max_pending: int = 64
    ) -> None:
        self.seed = seed
        self.max_pending = max_pending
        self.explore = explore
        self.max_level = max_level
        self._observed: list[Observation] = []
        # (parent_hash, code_hash) proposed and not yet observed, oldest first (capped: a
        # proposal the worker dropped unrun must not block that change for ever)
        self._pending: dict[tuple[str, str], str] = {}  # -> value signature of the changes
        self._calls = 0
        self._hashes: dict[tuple[str, str], str] = {}  # (parent, changes) -> code hash
        self._by_key: dict[str, Observation] = {}  # published result key -> observation

    @classmethod
    def from_spec(cls, spec: ProposerSpec, **_options: Any) -> SearchProposer:
        """The search proposer of ``spec`` (its seed and exploration rate; takes no options)."""
        return cls(seed=spec.seed, explore=spec.explore)

    # ------------------------------------------------------------------ protocol
    async def propose(self, ctx: ProposalContext) -> Proposal:
        return await asyncio.to_thread(self.propose_sync, ctx)

    async def observe(self, proposal: Proposal, result: Any) -> None:
        obs = observations_from([result])
        ch = getattr(result, "code_hash", "") or ""
        self._pending.pop((proposal.parent_hash, ch), None)
        if obs:
            o = obs[0]
            if not o.changes and proposal.changes:
                o = Observation(
                    o.parent_hash or proposal.parent_hash,
                    o.code_hash,
                    o.status,
                    o.val_bpb,
                    dict(proposal.changes),
                    o.delta,
                    o.completed_at,
                    o.key,
                )
            self._observed.append(o)

    def forget_pending(self) -> None:
        """Drop the in-flight set (e.g. after proposals were discarded unrun)."""
        self._pending.clear()

    # ------------------------------------------------------------------ core
    def propose_sync(self, ctx: ProposalContext) -> Proposal:
        """The proposal for ``ctx`` (blocking; CPU only)."""
        self._calls += 1
        try:
            block = constants_block(ctx.best_train_py)
        except TrainPyError as exc:
            raise ProposerError(f"search cannot read the best train.py: {exc}") from exc
        values: dict[str, Value] = {c.name: c.value for c in block}
        sources = {c.name: c.source for c in block}
        seq_len = ctx.track_shape()
        dims = build_space(values)
        if not dims:
            raise ProposerError("search found no searchable constant in the constants block")

        obs = self._merged(ctx)
        known_val = self._known_values(obs)
        parent_val = (
            ctx.best_val_bpb if ctx.best_val_bpb is not None else known_val.get(ctx.parent_hash)
        )
        evidence = evidence_of(obs, dims, known_val)
        ran = {o.code_hash for o in obs} | {o.parent_hash for o in obs if o.parent_hash}
        from_parent = [o for o in obs if o.parent_hash == ctx.parent_hash]
        tried = ran | {c for p, c in self._pending if p == ctx.parent_hash} | {ctx.parent_hash}

        tried_sigs = {
            signature({n: new for n, (_old, new) in o.changes.items()})
            for o in from_parent
            if o.changes
        }
        tried_sigs |= {sig for (p, _c), sig in self._pending.items() if p == ctx.parent_hash}

        rng = random.Random(
            f"{self.seed}:{ctx.seed}:{ctx.worker_index}:{ctx.parent_hash}:{len(from_parent)}:"
            f"{len(self._pending)}:{len(obs)}"
        )
        cands = combine_candidates(obs, values, known_val, ctx.parent_hash, seq_len)
        cands += mutation_candidates(
            dims, values, evidence, from_parent, seq_len, max_level=self.max_level
        )
        for c in cands:
            c.score *= 1.0 + 0.05 * rng.random()  # seeded tie-break
        cands.sort(key=lambda c: -c.score)
        if cands and rng.random() < self.explore:
            pick = cands[rng.randrange(len(cands))]
            pick.origin = "explore"
            cands.remove(pick)
            cands.insert(0, pick)
        elif cands and ctx.contention > 0:
            # other agents claimed our first choices before us: the whole swarm ranks the
            # same moves first, so start at a seeded place among the top ones instead of
            # racing everyone for each in turn
            start = rng.randrange(min(len(cands), 1 + 2 * ctx.contention))
            cands = cands[start:] + cands[:start]

        counter = [0]
        stages: list[Iterable[Candidate]] = [
            cands,
            wider_candidates(
                dims, values, evidence, from_parent, cands, seq_len, rng, max_level=self.max_level
            ),
        ]
        for stage in stages:
            proposal = self._first_new(
                ctx, stage, values, sources, tried, tried_sigs, parent_val, counter
            )
            if proposal is not None:
                return proposal
        if not counter[0]:
            raise ProposerError(
                f"search has no valid move left around parent {ctx.parent_hash[:8]}"
            )
        raise ProposerError(
            f"search: every candidate around parent {ctx.parent_hash[:8]} was already tried "
            f"({counter[0]} candidates, single and paired moves at every step size)"
        )

    def _first_new(
        self,
        ctx: ProposalContext,
        cands: Iterable[Candidate],
        values: Mapping[str, Value],
        sources: Mapping[str, str],
        tried: set[str],
        tried_sigs: set[str],
        parent_val: float | None,
        counter: list[int],
    ) -> Proposal | None:
        """The proposal of the first candidate not yet run, in flight or a duplicate."""
        for cand in cands:
            counter[0] += 1
            vsig = signature(cand.changes)
            if vsig in tried_sigs:
                continue  # these values already ran (or are in flight) from this parent
            sig = (ctx.parent_hash, vsig)
            known_hash = self._hashes.get(sig)
            if known_hash is not None and known_hash in tried:
                continue  # skip without re-editing the source
            try:
                src = apply_changes(ctx.best_train_py, cand.changes)
                h = code_hash(src)
            except TrainPyError as exc:
                log.debug("search_candidate_unappliable", changes=cand.changes, error=str(exc))
                tried_sigs.add(vsig)
                continue
            self._hashes[sig] = h
            if len(self._hashes) > 4096:
                self._hashes.pop(next(iter(self._hashes)))
            tried_sigs.add(vsig)
            if h in tried:
                continue
            changes = {n: (values[n], v) for n, v in cand.changes.items()}
            desc = describe_changes(changes, sources)
            if ctx.duplicate(desc, src):
                tried.add(h)
                continue
            self._pending[(ctx.parent_hash, h)] = vsig
            while len(self._pending) > self.max_pending:
                self._pending.pop(next(iter(self._pending)))
            rationale = self._rationale(cand, parent_val)
            log.info(
                "search_proposal",
                description=desc,
                origin=cand.origin,
                score=round(cand.score, 6),
                parent=ctx.parent_hash[:8],
            )
            return Proposal(
                train_py=src,
                description=desc,
                parent_hash=ctx.parent_hash,
                proposer=self.name,
                rationale=rationale,
                changes=changes,
            )
        return None

    # ------------------------------------------------------------------ evidence
    def _merged(self, ctx: ProposalContext) -> list[Observation]:
        obs = self._history_observations(ctx)
        seen = {(o.parent_hash, o.code_hash, o.key) for o in obs}
        seen_pc = {(o.parent_hash, o.code_hash) for o in obs}
        for o in self._observed:
            if (o.parent_hash, o.code_hash, o.key) in seen or (
                not o.key and (o.parent_hash, o.code_hash) in seen_pc
            ):
                continue
            obs.append(o)
        obs.sort(key=lambda o: o.completed_at)  # oldest first
        return obs

    def _history_observations(self, ctx: ProposalContext) -> list[Observation]:
        """:func:`observations_from` of the history, each published result converted once."""
        out: list[Observation] = []
        for r in ctx.history:
            if ctx.track and r.track and r.track != ctx.track:
                continue
            if ctx.tier and r.vram_tier and r.vram_tier != ctx.tier:
                continue
            cached = self._by_key.get(r.key) if r.key else None
            if cached is None:
                found = observations_from([r])
                if not found:
                    continue
                cached = found[0]
                if r.key:
                    self._by_key[r.key] = cached
                    if len(self._by_key) > 4096:
                        self._by_key.pop(next(iter(self._by_key)))
            out.append(cached)
        return out

    @staticmethod
    def _known_values(obs: Sequence[Observation]) -> dict[str, float]:
        """Best measured val_bpb per code hash."""
        known: dict[str, float] = {}
        for o in obs:
            if o.val_bpb is not None:
                prev = known.get(o.code_hash)
                known[o.code_hash] = o.val_bpb if prev is None else min(prev, o.val_bpb)
        return known

    # ------------------------------------------------------------------ candidates
    @staticmethod
    def _rationale(cand: Candidate, parent_val: float | None) -> str:
        base = f"parent val_bpb {parent_val:.6f}; " if parent_val is not None else ""
        if cand.origin == "explore":
            return base + "exploration: a random untried valid move (" + cand.why + ")"
        return base + cand.why


def default_values(train_py: str) -> dict[str, Value]:
    """The constants of ``train_py`` (convenience for callers and tests)."""
    return constants(train_py)
