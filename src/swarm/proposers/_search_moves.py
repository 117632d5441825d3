"""The moves of the built-in search (:mod:`swarm.proposers.search`): what the swarm's
results say per coordinate (evidence), and the candidate changes around a parent --
mutations, carried-over improvements (combination) and the widened neighbourhood
(finer and larger steps, then pairs of single moves). Pure functions of their inputs."""

from __future__ import annotations

import heapq
import itertools
import math
import random
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from swarm.proposers.base import TrackShape
from swarm.proposers.space import Dim, repair_batch
from swarm.trainpy import Value

__all__ = [
    "Candidate",
    "DimEvidence",
    "Observation",
    "combine_candidates",
    "delta_of",
    "evidence_of",
    "mutation_candidates",
    "observations_from",
    "signature",
    "wider_candidates",
]

G0 = 0.01  # prior size of a level-0 effect on val_bpb, times a dim's weight
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


def observations_from(
    results: Iterable[Any], *, track: str | None = None, tier: str | None = None
) -> list[Observation]:
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
        out.append(
            Observation(
                parent_hash=str(getattr(r, "parent_hash", "") or ""),
                code_hash=ch,
                status=status,
                val_bpb=float(val) if isinstance(val, int | float) and val > 0 else None,
                changes=_changes_of(getattr(r, "changes", None)),
                delta=float(delta) if isinstance(delta, int | float) else None,
                completed_at=float(getattr(r, "completed_at", 0.0) or 0.0),
                key=str(getattr(r, "key", "") or ""),
            )
        )
    return out


@dataclass(slots=True)
class DimEvidence:
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
class Candidate:
    changes: dict[str, Value]
    score: float
    origin: str
    dim_key: str = ""
    direction: int = 0
    level: int = 0
    why: str = ""


def evidence_of(
    obs: Sequence[Observation], dims: Sequence[Dim], known_val: Mapping[str, float]
) -> dict[str, DimEvidence]:
    """Per coordinate: signed improvements per direction, crashes, directions kept."""
    by_name: dict[str, list[Dim]] = defaultdict(list)
    for d in dims:
        by_name[d.name].append(d)
    ev: dict[str, DimEvidence] = defaultdict(DimEvidence)
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
        delta = delta_of(o, known_val)
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


def mutation_candidates(
    dims: Sequence[Dim],
    values: Mapping[str, Value],
    evidence: Mapping[str, DimEvidence],
    from_parent: Sequence[Observation],
    seq_len: TrackShape,
    *,
    max_level: int,
) -> list[Candidate]:
    """Single steps of each coordinate from the parent, scored by the evidence."""
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
    out: list[Candidate] = []
    for d in dims:
        e = evidence.get(d.key) or DimEvidence()
        value = values[d.name]
        here_coord = d.coord(value)
        sens = e.sensitivity(d.weight * G0)
        start = min(max_level, e.reversals())
        for direction in (1, -1):
            fails = [g for g in tried_here.get((d.key, direction), []) if g <= 0]
            for level in range(start, max_level + 1):
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
                why = (
                    f"{d.key} {'up' if direction > 0 else 'down'}: mean gain "
                    f"{mean:+.4f} over {n} result(s), sensitivity {sens:.4f}, "
                    f"step level {level}"
                )
                out.append(Candidate(changes, score, "mutation", d.key, direction, level, why))
    return out


def combine_candidates(
    obs: Sequence[Observation],
    values: Mapping[str, Value],
    known_val: Mapping[str, float],
    parent_hash: str,
    seq_len: TrackShape,
) -> list[Candidate]:
    """Improvements found on other parents whose changes still apply to the parent."""
    out: list[Candidate] = []
    seen: set[str] = set()
    parent_of = {o.code_hash: o.parent_hash for o in obs if o.parent_hash}
    lineage: set[str] = set()
    h = parent_hash
    while h and h not in lineage:  # the current best and its ancestors
        lineage.add(h)
        h = parent_of.get(h, "")
    for o in reversed(obs):  # newest first
        if (
            o.status != "keep"
            or not o.changes
            or o.parent_hash == parent_hash
            or o.code_hash in lineage
        ):
            continue
        delta = delta_of(o, known_val)
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
        gain = -delta if delta is not None else G0
        shown = f"delta {delta:+.4f}" if delta is not None else "kept"
        out.append(
            Candidate(
                fixed,
                2.0 * gain + G0,
                "combine",
                why=(
                    f"carries over an improvement found on parent {o.parent_hash[:8]} "
                    f"({shown}), independent of what changed since"
                ),
            )
        )
    return out


_Ranked = tuple[float, float, int, Candidate]  # (distance, tie-break, order, candidate)


def wider_candidates(
    dims: Sequence[Dim],
    values: Mapping[str, Value],
    evidence: Mapping[str, DimEvidence],
    from_parent: Sequence[Observation],
    primary: Sequence[Candidate],
    seq_len: TrackShape,
    rng: random.Random,
    *,
    max_level: int,
) -> Iterator[Candidate]:
    """The widened neighbourhood of the parent, lazily, nearest first (seeded order).

    Distance 1, 2, ... holds the single moves one level finer than ``max_level`` (half
    steps towards the parent), and ``k + 1`` repeated level-0 steps (larger moves, out
    to the range bounds); pairs of two single moves on different constants come at
    distance ``1.5 + (i + j) / 6`` for their ranks ``i < j`` in the promise order (moves
    tried from this parent, least bad first, then untried moves, nearest first).
    """
    singles: list[_Ranked] = []
    seq = itertools.count()
    for d in dims:
        singles += _widened_moves(
            d, values, evidence.get(d.key) or DimEvidence(), seq_len, rng, seq, max_level
        )
    singles.sort(key=lambda t: t[:3])
    order = _pairing_order(values, from_parent, primary, [c for *_k, c in singles])
    for *_k, cand in heapq.merge(singles, _pairs(order, values, seq_len), key=lambda t: t[:3]):
        yield cand


def _far_moves(
    d: Dim, value: Value, direction: int, max_level: int
) -> list[tuple[float, Value, str]]:
    """(distance, new value, how) of ``d``'s finer steps and repeated level-0 steps."""
    moves: list[tuple[float, Value, str]] = []
    for extra in range(1, _FINE_LEVELS + 1):
        new = d.move(value, direction, max_level + extra)
        if new is not None:
            moves.append((float(extra), new, f"step level {max_level + extra}"))
    cur: Value = value
    for k in range(1, _MAX_STRIDE + 1):
        nxt = d.move(cur, direction, 0)
        if nxt is None or repr(_norm(d.get(nxt))) == repr(_norm(d.get(value))):
            break
        cur = nxt
        if k >= 2:
            moves.append((float(k - 1), cur, f"{k} level-0 steps"))
    return moves


def _widened_moves(
    d: Dim,
    values: Mapping[str, Value],
    e: DimEvidence,
    seq_len: TrackShape,
    rng: random.Random,
    seq: Iterator[int],
    max_level: int,
) -> list[_Ranked]:
    """The widened single moves of one coordinate, ranked (a move at or beyond a crash
    is farther away)."""
    out: list[_Ranked] = []
    value = values[d.name]
    here = d.coord(value)
    sens = e.sensitivity(d.weight * G0)
    seen: set[str] = {repr(_norm(d.get(value)))}
    for direction in (1, -1):
        mean, n = e.mean_gain(direction)
        base = max(mean + sens / math.sqrt(1.0 + n), 1e-9)
        for dist, new, how in _far_moves(d, value, direction, max_level):
            key = repr(_norm(d.get(new)))
            if key in seen:
                continue
            seen.add(key)
            changes = repair_batch(values, {d.name: new}, seq_len)
            if changes is None:
                continue
            coord = d.coord(new)
            if (
                here is not None
                and coord is not None
                and any(cd == direction and (coord - cc) * direction >= 0 for cd, cc in e.crashes)
            ):
                dist += _CRASH_COST
            why = (
                f"widened search: {d.key} {'up' if direction > 0 else 'down'} by "
                f"{how} (the nearer moves around this parent were all tried)"
            )
            tie = base * (1.0 + 0.05 * rng.random())
            out.append(
                (dist, -tie, next(seq), Candidate(changes, tie, "widen", d.key, direction, 0, why))
            )
    return out


def _pairing_order(
    values: Mapping[str, Value],
    from_parent: Sequence[Observation],
    primary: Sequence[Candidate],
    singles: Sequence[Candidate],
) -> list[tuple[dict[str, Value], str]]:
    """The promise order of single moves for pairing: moves tried from this parent, least
    bad first, then untried ones (primary, then widened), each once, no crashed move."""
    seen_sigs = {
        signature({n: new for n, (_o, new) in o.changes.items()})
        for o in from_parent
        if o.failed_run and o.changes
    }
    tried_moves = sorted(
        (
            o
            for o in from_parent
            if not o.failed_run
            and o.delta is not None
            and o.changes
            and all(n in values for n in o.changes)
        ),
        key=lambda o: (o.delta, o.completed_at, o.code_hash),
    )
    ranked = [
        (
            {n: new for n, (_old, new) in o.changes.items()},
            f"tried from this parent (delta {o.delta:+.4f})",
        )
        for o in tried_moves
    ]
    ranked += [(dict(c.changes), "untried") for c in primary if c.origin != "combine"]
    ranked += [(dict(c.changes), "untried") for c in singles]
    unique: list[tuple[dict[str, Value], str]] = []
    for ch, label in ranked:
        sg = signature(ch)
        if sg not in seen_sigs:
            seen_sigs.add(sg)
            unique.append((ch, label))
    return unique


def _pairs(
    unique: Sequence[tuple[dict[str, Value], str]], values: Mapping[str, Value], seq_len: TrackShape
) -> Iterator[_Ranked]:
    """Pairs of single moves on different constants, lazily, by the sum of their ranks."""
    n = len(unique)
    for total in range(1, 2 * n - 2):
        for i in range(max(0, total - n + 1), (total + 1) // 2):
            (a, la), (b, lb) = unique[i], unique[total - i]
            if set(a) & set(b):
                continue
            merged = repair_batch(values, {**a, **b}, seq_len)
            if merged is None:
                continue
            why = (
                f"widened search: pairs two single moves ({la}; {lb}) now that "
                "every nearer move around this parent was tried"
            )
            yield (1.5 + total / 6.0, 0.0, i, Candidate(merged, 1e-9, "pair", why=why))


def delta_of(o: Observation, known_val: Mapping[str, float]) -> float | None:
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


def signature(changes: Mapping[str, Any]) -> str:
    """The value signature of a set of constant changes (order-free)."""
    return repr(sorted((str(n), repr(_norm(v))) for n, v in changes.items()))


def _same(a: object, b: object) -> bool:
    if (
        isinstance(a, int | float)
        and isinstance(b, int | float)
        and not isinstance(a, bool)
        and not isinstance(b, bool)
    ):
        return float(a) == float(b)
    if isinstance(a, list):
        a = tuple(a)
    if isinstance(b, list):
        b = tuple(b)
    return type(a) is type(b) and a == b
