"""The built-in search proposer: single-constant mutations that learn from the swarm.

No LLM. From the current best train.py of a track and tier it proposes one change of
the constants block at a time, chosen by what the swarm's results (same track and tier)
say:

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
import heapq
import itertools
import math
import random
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from swarm._logging import get_logger
from swarm.errors import ProposerError, TrainPyError
from swarm.proposers.base import Proposal, ProposalContext, TrackShape
from swarm.proposers.space import (
    Dim,
    build_space,
    describe_changes,
    repair_batch,
)
from swarm.trainpy import Value, apply_changes, code_hash, constants, constants_block

if TYPE_CHECKING:
    from swarm.proposers.base import ProposerSpec

__all__ = ["Observation", "SearchProposer", "observations_from"]

log = get_logger(__name__)

_G0 = 0.01  # prior size of a level-0 effect on val_bpb, times a dim's weight
_RECENCY = 0.8  # weight factor per newer observation of the same coordinate
_FAILED_SAME_PARENT = 0.6  # score factor per failed try in that direction from this parent
_FINE_LEVELS = 6  # widening: step levels beyond max_level
_MAX_STRIDE = 64  # widening: at most this many level-0 steps in one direction
_CRASH_COST = 4.0  # widening: extra distance for a move at or beyond a crash


@dataclass(frozen=True, slots=True)
class Observation:
    """One finished experiment as the search sees it."""

    parent_hash: str
    code_hash: str
    status: str
    val_bpb: float | None
    changes: Mapping[str, tuple[Value, Value]]
    delta: float | None = None  # val_bpb - parent's val_bpb (negative is better)
    completed_at: float = 0.0
    key: str = ""

    @property
    def failed_run(self) -> bool:
        return self.status in ("crash", "timeout") or self.val_bpb is None


def _changes_of(raw: Any) -> dict[str, tuple[Value, Value]]:
    out: dict[str, tuple[Value, Value]] = {}
    if isinstance(raw, Mapping):
        for name, pair in raw.items():
            if isinstance(pair, list | tuple) and len(pair) == 2:
                old, new = pair
                out[str(name)] = (_tuplify(old), _tuplify(new))
    return out


def _tuplify(v: Any) -> Value:
    if isinstance(v, list):
        return tuple(_tuplify(x) for x in v)
    return v


def observations_from(results: Iterable[Any], *, track: str | None = None,
                      tier: str | None = None) -> list[Observation]:
    """Observations of ``swarm.records.Result``-like objects (same track and tier only)."""
    out: list[Observation] = []
    for r in results:
        r_track = getattr(r, "track", None)
        r_tier = getattr(r, "vram_tier", None)
        if track and r_track and r_track != track:
            continue
        if tier and r_tier and r_tier != tier:
            continue
        ch = getattr(r, "code_hash", "") or ""
        if not ch:
            continue
        val = getattr(r, "val_bpb", None)
        status = str(getattr(r, "status", "") or "")
        delta = getattr(r, "delta", None)
        out.append(Observation(
            parent_hash=str(getattr(r, "parent_hash", "") or ""),
            code_hash=ch,
            status=status,
            val_bpb=float(val) if isinstance(val, int | float) and val > 0 else None,
            changes=_changes_of(getattr(r, "changes", None)),
            delta=float(delta) if isinstance(delta, int | float) else None,
            completed_at=float(getattr(r, "completed_at", 0.0) or 0.0),
            key=str(getattr(r, "key", "") or ""),
        ))
    return out


@dataclass(slots=True)
class _DimEvidence:
    """Signed improvements per direction, newest first, and crash coordinates."""

    moves: list[tuple[int, float, float]] = field(default_factory=list)  # (dir, -delta, w)
    abs_effects: list[tuple[float, float]] = field(default_factory=list)  # (|delta|, w)
    crashes: list[tuple[int, float]] = field(default_factory=list)  # (dir, coord of new)
    keep_dirs: list[int] = field(default_factory=list)  # directions of improvements, oldest first

    def mean_gain(self, direction: int) -> tuple[float, int]:
        """Recency-weighted mean improvement of moves in ``direction`` (shrunk to 0)."""
        num, den, n, w = 0.0, 1.0, 0, 1.0
        for d, gain, credit in self.moves:  # newest first
            if d == direction:
                num += w * credit * gain
                den += w * credit
                n += 1
                w *= _RECENCY
        return num / den, n

    def sensitivity(self, prior: float) -> float:
        num, den, w = prior, 1.0, 1.0
        for eff, credit in self.abs_effects:
            num += w * credit * eff
            den += w * credit
            w *= _RECENCY
        return num / den

    def reversals(self) -> int:
        return sum(1 for a, b in zip(self.keep_dirs, self.keep_dirs[1:], strict=False) if a != b)


@dataclass(slots=True)
class _Candidate:
    changes: dict[str, Value]
    score: float
    origin: str
    dim_key: str = ""
    direction: int = 0
    level: int = 0
    why: str = ""


class SearchProposer:
    """Learns from the swarm's results of one track and tier; see the module docstring."""

    name = "search"
    #: in-process CPU work: proposes in a moment, one at a time per machine
    slow: bool = False

    def __init__(self, *, seed: int = 0, explore: float = 0.1, max_level: int = 3,
                 max_pending: int = 64) -> None:
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
                o = Observation(o.parent_hash or proposal.parent_hash, o.code_hash, o.status,
                                o.val_bpb, dict(proposal.changes), o.delta, o.completed_at, o.key)
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
        parent_val = ctx.best_val_bpb if ctx.best_val_bpb is not None else known_val.get(
            ctx.parent_hash)
        evidence = self._evidence(obs, dims, known_val)
        ran = {o.code_hash for o in obs} | {o.parent_hash for o in obs if o.parent_hash}
        from_parent = [o for o in obs if o.parent_hash == ctx.parent_hash]
        tried = ran | {c for p, c in self._pending if p == ctx.parent_hash} | {ctx.parent_hash}

        tried_sigs = {_sig({n: new for n, (_old, new) in o.changes.items()})
                      for o in from_parent if o.changes}
        tried_sigs |= {sig for (p, _c), sig in self._pending.items() if p == ctx.parent_hash}

        rng = random.Random(
            f"{self.seed}:{ctx.seed}:{ctx.worker_index}:{ctx.parent_hash}:{len(from_parent)}:"
            f"{len(self._pending)}:{len(obs)}")
        cands = self._combine_candidates(obs, values, known_val, ctx.parent_hash, seq_len)
        cands += self._mutation_candidates(dims, values, evidence, from_parent, seq_len)
        for c in cands:
            c.score *= 1.0 + 0.05 * rng.random()  # seeded tie-break
        cands.sort(key=lambda c: -c.score)
        if cands and rng.random() < self.explore:
            pick = cands[rng.randrange(len(cands))]
            pick.origin = "explore"
            cands.remove(pick)
            cands.insert(0, pick)

        counter = [0]
        stages: list[Iterable[_Candidate]] = [
            cands, self._wider_candidates(dims, values, evidence, from_parent, cands, seq_len,
                                          rng)]
        for stage in stages:
            proposal = self._first_new(ctx, stage, values, sources, tried, tried_sigs,
                                       parent_val, counter)
            if proposal is not None:
                return proposal
        if not counter[0]:
            raise ProposerError(
                f"search has no valid move left around parent {ctx.parent_hash[:8]}")
        raise ProposerError(
            f"search: every candidate around parent {ctx.parent_hash[:8]} was already tried "
            f"({counter[0]} candidates, single and paired moves at every step size)")

    def _first_new(self, ctx: ProposalContext, cands: Iterable[_Candidate],
                   values: Mapping[str, Value], sources: Mapping[str, str], tried: set[str],
                   tried_sigs: set[str], parent_val: float | None, counter: list[int]
                   ) -> Proposal | None:
        """The proposal of the first candidate not yet run, in flight or a duplicate."""
        for cand in cands:
            counter[0] += 1
            vsig = _sig(cand.changes)
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
            log.info("search_proposal", description=desc, origin=cand.origin,
                     score=round(cand.score, 6), parent=ctx.parent_hash[:8])
            return Proposal(train_py=src, description=desc, parent_hash=ctx.parent_hash,
                            proposer=self.name, rationale=rationale, changes=changes)
        return None

    # ------------------------------------------------------------------ evidence
    def _merged(self, ctx: ProposalContext) -> list[Observation]:
        obs = observations_from(ctx.history, track=ctx.track, tier=ctx.tier)
        seen = {(o.parent_hash, o.code_hash, o.key) for o in obs}
        seen_pc = {(o.parent_hash, o.code_hash) for o in obs}
        for o in self._observed:
            if (o.parent_hash, o.code_hash, o.key) in seen or (
                    not o.key and (o.parent_hash, o.code_hash) in seen_pc):
                continue
            obs.append(o)
        obs.sort(key=lambda o: o.completed_at)  # oldest first
        return obs

    @staticmethod
    def _known_values(obs: Sequence[Observation]) -> dict[str, float]:
        """Best measured val_bpb per code hash."""
        known: dict[str, float] = {}
        for o in obs:
            if o.val_bpb is not None:
                prev = known.get(o.code_hash)
                known[o.code_hash] = o.val_bpb if prev is None else min(prev, o.val_bpb)
        return known

    def _evidence(self, obs: Sequence[Observation], dims: Sequence[Dim],
                  known_val: Mapping[str, float]) -> dict[str, _DimEvidence]:
        by_name: dict[str, list[Dim]] = defaultdict(list)
        for d in dims:
            by_name[d.name].append(d)
        ev: dict[str, _DimEvidence] = defaultdict(_DimEvidence)
        for o in reversed(obs):  # newest first
            moved: list[tuple[Dim, int, float]] = []
            for name, (old, new) in o.changes.items():
                for d in by_name.get(name, ()):
                    a, b = d.coord(old), d.coord(new)
                    if a is None or b is None or a == b:
                        continue
                    moved.append((d, 1 if b > a else -1, b))
            if not moved:
                continue
            credit = 1.0 / len(moved)
            delta = _delta(o, known_val)
            for d, direction, new_coord in moved:
                e = ev[d.key]
                if o.failed_run:
                    e.crashes.append((direction, new_coord))
                    continue
                if delta is None:
                    continue
                e.moves.append((direction, -delta, credit))
                e.abs_effects.append((abs(delta), credit))
        # directions of improvements, oldest first (for step shrinking)
        for o in obs:
            if o.status != "keep":
                continue
            for name, (old, new) in o.changes.items():
                for d in by_name.get(name, ()):
                    a, b = d.coord(old), d.coord(new)
                    if a is not None and b is not None and a != b:
                        ev[d.key].keep_dirs.append(1 if b > a else -1)
        return ev

    # ------------------------------------------------------------------ candidates
    def _mutation_candidates(self, dims: Sequence[Dim], values: Mapping[str, Value],
                             evidence: Mapping[str, _DimEvidence],
                             from_parent: Sequence[Observation], seq_len: TrackShape
                             ) -> list[_Candidate]:
        # what was tried from this parent, per (dim, direction): [(level-ish coord, -delta)]
        tried_here: dict[tuple[str, int], list[float]] = defaultdict(list)
        tried_values: set[tuple[str, Any]] = set()
        for o in from_parent:
            for name, (old, new) in o.changes.items():
                for d in dims:
                    if d.name != name:
                        continue
                    a, b = d.coord(old), d.coord(new)
                    if a is None or b is None or a == b:
                        continue
                    gain = -o.delta if o.delta is not None else (-1.0 if o.failed_run else 0.0)
                    tried_here[(d.key, 1 if b > a else -1)].append(gain)
                    tried_values.add((d.key, repr(d.get(new))))
        out: list[_Candidate] = []
        for d in dims:
            e = evidence.get(d.key) or _DimEvidence()
            value = values[d.name]
            here_coord = d.coord(value)
            sens = e.sensitivity(d.weight * _G0)
            start = min(self.max_level, e.reversals())
            for direction in (1, -1):
                fails = [g for g in tried_here.get((d.key, direction), []) if g <= 0]
                for level in range(start, self.max_level + 1):
                    new = d.move(value, direction, level)
                    if new is None:
                        continue
                    if (d.key, repr(d.get(new))) in tried_values:
                        continue
                    changes = repair_batch(values, {d.name: new}, seq_len)
                    if changes is None:
                        continue
                    mean, n = e.mean_gain(direction)
                    score = mean + sens / math.sqrt(1.0 + n)
                    score *= 0.5 ** (level - start)
                    if fails:
                        score *= _FAILED_SAME_PARENT ** len(fails)
                        other = [g for g in tried_here.get((d.key, -direction), []) if g <= 0]
                        if other and max(fails) > max(other):
                            score *= 1.5  # the bracket's better side
                    new_coord = d.coord(new)
                    if here_coord is not None and new_coord is not None:
                        for cd, cc in e.crashes:
                            if cd != direction:
                                continue
                            if (new_coord - cc) * direction >= 0:
                                score *= 0.02  # at or beyond a value that crashed
                            elif (new_coord - here_coord) * direction > 0:
                                score *= 0.3  # on the way to it
                    score = max(score, 1e-9)
                    why = (f"{d.key} {'up' if direction > 0 else 'down'}: mean gain "
                           f"{mean:+.4f} over {n} result(s), sensitivity {sens:.4f}, "
                           f"step level {level}")
                    out.append(_Candidate(changes, score, "mutation", d.key, direction, level,
                                          why))
        return out

    def _wider_candidates(self, dims: Sequence[Dim], values: Mapping[str, Value],
                          evidence: Mapping[str, _DimEvidence],
                          from_parent: Sequence[Observation], primary: Sequence[_Candidate],
                          seq_len: TrackShape, rng: random.Random) -> Iterator[_Candidate]:
        """The widened neighbourhood of the parent, lazily, nearest first (seeded order).

        Distance 1, 2, ... holds the single moves one level finer than ``max_level`` (half
        steps towards the parent), and ``k + 1`` repeated level-0 steps (larger moves, out
        to the range bounds); pairs of two single moves on different constants come at
        distance ``1.5 + (i + j) / 6`` for their ranks ``i < j`` in the promise order (moves
        tried from this parent, least bad first, then untried moves, nearest first).
        """
        singles: list[tuple[float, float, int, _Candidate]] = []
        seq = itertools.count()
        for d in dims:
            e = evidence.get(d.key) or _DimEvidence()
            value = values[d.name]
            here = d.coord(value)
            sens = e.sensitivity(d.weight * _G0)
            seen: set[str] = {repr(_norm(d.get(value)))}
            for direction in (1, -1):
                mean, n = e.mean_gain(direction)
                base = max(mean + sens / math.sqrt(1.0 + n), 1e-9)
                moves: list[tuple[float, Value, str]] = []
                for extra in range(1, _FINE_LEVELS + 1):
                    new = d.move(value, direction, self.max_level + extra)
                    if new is not None:
                        moves.append((float(extra), new, f"step level {self.max_level + extra}"))
                cur: Value = value
                for k in range(1, _MAX_STRIDE + 1):
                    nxt = d.move(cur, direction, 0)
                    if nxt is None or repr(_norm(d.get(nxt))) == repr(_norm(d.get(value))):
                        break
                    cur = nxt
                    if k >= 2:
                        moves.append((float(k - 1), cur, f"{k} level-0 steps"))
                for dist, new, how in moves:
                    key = repr(_norm(d.get(new)))
                    if key in seen:
                        continue
                    seen.add(key)
                    changes = repair_batch(values, {d.name: new}, seq_len)
                    if changes is None:
                        continue
                    coord = d.coord(new)
                    if here is not None and coord is not None and any(
                            cd == direction and (coord - cc) * direction >= 0
                            for cd, cc in e.crashes):
                        dist += _CRASH_COST
                    why = (f"widened search: {d.key} {'up' if direction > 0 else 'down'} by "
                           f"{how} (the nearer moves around this parent were all tried)")
                    tie = base * (1.0 + 0.05 * rng.random())
                    singles.append((dist, -tie, next(seq), _Candidate(
                        changes, tie, "widen", d.key, direction, 0, why)))
        singles.sort(key=lambda t: t[:3])

        # the promise order of single moves for pairing
        crashed = {_sig({n: new for n, (_o, new) in o.changes.items()})
                   for o in from_parent if o.failed_run and o.changes}
        ranked: list[tuple[dict[str, Value], str]] = []
        seen_sigs: set[str] = set(crashed)
        tried_moves = sorted(
            (o for o in from_parent if not o.failed_run and o.delta is not None and o.changes
             and all(n in values for n in o.changes)),
            key=lambda o: (o.delta, o.completed_at, o.code_hash))
        for o in tried_moves:
            ch = {n: new for n, (_old, new) in o.changes.items()}
            ranked.append((ch, f"tried from this parent (delta {o.delta:+.4f})"))
        ranked += [(dict(c.changes), "untried") for c in primary if c.origin != "combine"]
        ranked += [(dict(c.changes), "untried") for *_k, c in singles]
        unique: list[tuple[dict[str, Value], str]] = []
        for ch, label in ranked:
            sg = _sig(ch)
            if sg not in seen_sigs:
                seen_sigs.add(sg)
                unique.append((ch, label))

        def pairs() -> Iterator[tuple[float, float, int, _Candidate]]:
            n = len(unique)
            for total in range(1, 2 * n - 2):
                for i in range(max(0, total - n + 1), (total + 1) // 2):
                    j = total - i
                    (a, la), (b, lb) = unique[i], unique[j]
                    if set(a) & set(b):
                        continue
                    merged = repair_batch(values, {**a, **b}, seq_len)
                    if merged is None:
                        continue
                    why = (f"widened search: pairs two single moves ({la}; {lb}) now that "
                           "every nearer move around this parent was tried")
                    yield (1.5 + total / 6.0, 0.0, i, _Candidate(
                        merged, 1e-9, "pair", why=why))

        for *_k, cand in heapq.merge(singles, pairs(), key=lambda t: t[:3]):
            yield cand

    def _combine_candidates(self, obs: Sequence[Observation], values: Mapping[str, Value],
                            known_val: Mapping[str, float], parent_hash: str, seq_len: TrackShape
                            ) -> list[_Candidate]:
        out: list[_Candidate] = []
        seen: set[str] = set()
        parent_of = {o.code_hash: o.parent_hash for o in obs if o.parent_hash}
        lineage: set[str] = set()
        h = parent_hash
        while h and h not in lineage:  # the current best and its ancestors
            lineage.add(h)
            h = parent_of.get(h, "")
        for o in reversed(obs):  # newest first
            if o.status != "keep" or not o.changes or o.parent_hash == parent_hash \
                    or o.code_hash in lineage:
                continue
            delta = _delta(o, known_val)
            if delta is not None and delta >= 0:
                continue
            changes: dict[str, Value] = {}
            applies = True
            for name, (old, new) in o.changes.items():
                if name not in values:
                    applies = False
                    break
                cur = values[name]
                if _same(cur, new):
                    continue  # already in the best
                if not _same(cur, old):
                    applies = False  # tuned since; not independent
                    break
                changes[name] = new
            if not applies or not changes:
                continue
            fixed = repair_batch(values, changes, seq_len)
            if fixed is None:
                continue
            sig = repr(sorted(fixed.items()))
            if sig in seen:
                continue
            seen.add(sig)
            gain = -delta if delta is not None else _G0
            shown = f"delta {delta:+.4f}" if delta is not None else "kept"
            out.append(_Candidate(fixed, 2.0 * gain + _G0, "combine", why=(
                f"carries over an improvement found on parent {o.parent_hash[:8]} "
                f"({shown}), independent of what changed since")))
        return out

    @staticmethod
    def _rationale(cand: _Candidate, parent_val: float | None) -> str:
        base = f"parent val_bpb {parent_val:.6f}; " if parent_val is not None else ""
        if cand.origin == "explore":
            return base + "exploration: a random untried valid move (" + cand.why + ")"
        return base + cand.why


def _delta(o: Observation, known_val: Mapping[str, float]) -> float | None:
    """val_bpb change against the parent (measured), else the published delta vs best."""
    if o.val_bpb is not None and o.parent_hash in known_val:
        return o.val_bpb - known_val[o.parent_hash]
    return o.delta


def _norm(v: Any) -> Any:
    """A value in a form where equal values compare equal (2 == 2.0, lists as tuples)."""
    if isinstance(v, bool) or v is None or isinstance(v, str):
        return v
    if isinstance(v, int | float):
        return float(v)
    if isinstance(v, list | tuple):
        return tuple(_norm(x) for x in v)
    return v


def _sig(changes: Mapping[str, Any]) -> str:
    """The value signature of a set of constant changes (order-free)."""
    return repr(sorted((str(n), repr(_norm(v))) for n, v in changes.items()))


def _same(a: object, b: object) -> bool:
    if isinstance(a, int | float) and isinstance(b, int | float) \
            and not isinstance(a, bool) and not isinstance(b, bool):
        return float(a) == float(b)
    if isinstance(a, list):
        a = tuple(a)
    if isinstance(b, list):
        b = tuple(b)
    return type(a) is type(b) and a == b


def default_values(train_py: str) -> dict[str, Value]:
    """The constants of ``train_py`` (convenience for callers and tests)."""
    return constants(train_py)
