"""The hypotheses proposer: run the swarm's open ideas, and leave new ones behind.

``propose`` takes the highest-priority unclaimed hypothesis of the track whose
``suggested_config`` applies to the current best's constants block (every UPPER_CASE
key is a constant of the block, the values fit their types, the result passes the
validity rules, and the change is new), marks it taken (``SwarmMemory.take_hypothesis``,
atomic: one agent wins), and returns it as a proposal with ``hypothesis_key`` set.
Hypotheses that cannot apply are logged once with the reason and listed in
``unappliable``; they stay open for clients whose train.py they fit.

``observe`` publishes what the run taught, in the records every client reads: an
:class:`~swarm.records.Insight` (the change, val_bpb, delta against the parent, tier,
track, verdict) and, from that evidence, a :class:`~swarm.records.Hypothesis` -- one
more step the same way after an improvement, the other way after a regression.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from swarm._logging import get_logger
from swarm.errors import MemoryStoreError, ProposerError, TrainPyError
from swarm.proposers.base import Proposal, ProposalContext, TrackShape
from swarm.proposers.space import build_space, check_values, describe_changes
from swarm.records import Hypothesis, Insight, Result
from swarm.trainpy import Value, apply_changes, code_hash, constants_block

if TYPE_CHECKING:
    from swarm.proposers.base import ProposerSpec

__all__ = ["HypothesesProposer", "coerce_value", "evidence_hypothesis", "evidence_insight"]

log = get_logger(__name__)

_POW = re.compile(r"^\s*(\d+)\s*\*\*\s*(\d+)\s*$")


def coerce_value(current: Value, raw: Any) -> Value:
    """``raw`` (from another client's JSON) as a value of the same type as ``current``.

    Raises ``ValueError`` naming what does not fit.
    """
    v = raw
    if isinstance(v, list):
        v = tuple(v)
    if isinstance(v, str) and not isinstance(current, str):
        m = _POW.match(v)
        if m:
            v = int(m.group(1)) ** int(m.group(2))
        else:
            try:
                v = int(v)
            except ValueError:
                try:
                    v = float(v)
                except ValueError:
                    raise ValueError(f"{raw!r} is not a number") from None
    if isinstance(current, bool):
        if not isinstance(v, bool):
            raise ValueError(f"{raw!r} is not a boolean")
        return v
    if isinstance(current, int):
        if isinstance(v, float) and v.is_integer():
            return int(v)
        if isinstance(v, int) and not isinstance(v, bool):
            return v
        raise ValueError(f"{raw!r} is not an integer")
    if isinstance(current, float):
        if isinstance(v, int | float) and not isinstance(v, bool):
            return float(v)
        raise ValueError(f"{raw!r} is not a number")
    if isinstance(current, str):
        if isinstance(v, str):
            return v
        raise ValueError(f"{raw!r} is not a string")
    if isinstance(current, tuple):
        if isinstance(v, tuple) and len(v) == len(current):
            return tuple(coerce_value(c, x) for c, x in zip(current, v, strict=True))
        raise ValueError(f"{raw!r} is not a {len(current)}-tuple")
    if current is None:
        return v
    raise ValueError(f"{raw!r} does not fit {current!r}")


def _verdict(result: Result) -> str:
    if result.status == "keep":
        return "improved"
    if result.status == "discard":
        return "no improvement"
    return f"{result.status}{'/' + result.failure if result.failure else ''}"


def evidence_insight(
    result: Result, proposal: Proposal, *, agent_id: str, parent_val: float | None, now: float
) -> Insight:
    """The insight of one finished run: change, val_bpb, delta vs parent, tier, verdict."""
    desc = proposal.description or result.description
    if result.val_bpb is not None:
        delta = result.val_bpb - parent_val if parent_val is not None else result.delta
        shown = f"{delta:+.4f}" if delta is not None else "n/a"
        what = f"val_bpb {result.val_bpb:.6f} ({shown} vs parent {result.parent_hash[:8]})"
    else:
        what = f"no val_bpb from parent {result.parent_hash[:8]}"
    text = (
        f"{desc}: {what} on tier {result.vram_tier or '?'}, track {result.track}: "
        f"{_verdict(result)}"
    )
    if proposal.hypothesis_key:
        text += f" (tested hypothesis {proposal.hypothesis_key})"
    keys = tuple(k for k in (result.key, proposal.hypothesis_key) if k)
    return Insight(
        agent_id=agent_id, insight=text, evidence_keys=keys, posted_at=now, track=result.track
    )


def evidence_hypothesis(
    result: Result,
    proposal: Proposal,
    *,
    agent_id: str,
    shape: TrackShape,
    parent_val: float | None,
    now: float,
) -> Hypothesis | None:
    """A follow-up idea from one run, or None when the evidence suggests nothing.

    After an improvement: the same constants one more step the same way, on the new code.
    After a regression: the other way with half the step, on the parent. Crashes suggest
    nothing.
    """
    if result.val_bpb is None or not proposal.changes or not result.train_py:
        return None
    delta = result.val_bpb - parent_val if parent_val is not None else result.delta
    improved = result.status == "keep" or (delta is not None and delta < 0)
    try:
        block = constants_block(result.train_py)
    except TrainPyError:
        return None
    values = {c.name: c.value for c in block}
    sources = {c.name: c.source for c in block}
    dims = build_space(values)
    suggestion: dict[str, Value] = {}
    base: dict[str, Value] = dict(values)
    parent_hash = result.code_hash
    if not improved:
        base = {**values, **{n: old for n, (old, _new) in proposal.changes.items()}}
        parent_hash = result.parent_hash
    for name, (old, new) in proposal.changes.items():
        for d in dims:
            if d.name != name:
                continue
            a, b = d.coord(old), d.coord(new)
            if a is None or b is None or a == b:
                continue
            direction = 1 if b > a else -1
            start = base[name] if name not in suggestion else suggestion[name]
            # after a regression: the other way with half the step (a full step back
            # would only return to the grandparent's value)
            moved = d.move(start, direction if improved else -direction, 0 if improved else 1)
            if moved is not None:
                suggestion[name] = moved
    if not suggestion or check_values({**base, **suggestion}, shape) is not None:
        return None
    changes = {n: (base[n], v) for n, v in suggestion.items()}
    title = describe_changes(changes, sources)
    shown = f"{delta:+.4f}" if delta is not None else "?"
    why = (
        f"{proposal.description} gave {shown} on tier {result.vram_tier or '?'} "
        f"({'improved' if improved else 'worse'}); "
        + ("one more step the same way may help" if improved else "the opposite direction may help")
    )
    config = {n: list(v) if isinstance(v, tuple) else v for n, v in suggestion.items()}
    return Hypothesis(
        agent_id=agent_id,
        title=title,
        hypothesis=why,
        suggested_config=config,
        evidence_keys=(result.key,) if result.key else (),
        priority=4 if improved else 2,
        created_at=now,
        track=result.track,
        parent_hash=parent_hash,
    )


class HypothesesProposer:
    """Takes applicable unclaimed swarm hypotheses; publishes insights and new ones."""

    name = "hypotheses"
    #: in-process: reads the shared memory and edits constants, in a moment
    slow: bool = False

    def __init__(
        self,
        *,
        quiet: bool = False,
        publish: bool = True,
        publish_all: bool = False,
        scan_limit: int = 100,
        clock: Callable[[], float] = time.time,
    ) -> None:
        #: quiet: running inside a chain (search), so "nothing to take" is not worth a log line
        self.quiet = quiet
        #: publish an insight and a follow-up hypothesis after runs ...
        self.publish = publish
        #: ... of every proposal it is shown, not only of the hypotheses it took
        self.publish_all = publish_all
        self.scan_limit = scan_limit
        self.clock = clock
        self.unappliable: dict[str, str] = {}  # hypothesis key -> reason
        self.taken: list[str] = []
        self._ctx: ProposalContext | None = None
        self._parent_val: dict[str, float] = {}

    @classmethod
    def from_spec(cls, spec: ProposerSpec, **_options: Any) -> HypothesesProposer:
        """The proposer of a worker set to ``hypotheses``: it publishes after every run."""
        return cls(publish_all=True)

    @staticmethod
    def scan_every_s(ctx: ProposalContext) -> float:
        """How old a listing of hypotheses may be: the memory's heartbeat interval."""
        value = getattr(ctx.memory, "heartbeat_s", 0.0)
        return float(value) if isinstance(value, (int, float)) else 0.0

    async def propose(self, ctx: ProposalContext) -> Proposal:
        self._ctx = ctx
        if ctx.best_val_bpb is not None:
            self._parent_val[ctx.parent_hash] = ctx.best_val_bpb
        if ctx.memory is None:
            raise ProposerError("the hypotheses proposer needs the shared memory (none given)")
        try:
            # one listing per heartbeat interval for the whole machine: the list grows with
            # every hypothesis ever published, and a taken one is refused atomically anyway
            hyps = await ctx.memory.unclaimed_hypotheses(
                track=ctx.track, limit=self.scan_limit, max_age_s=self.scan_every_s(ctx)
            )
        except MemoryStoreError as exc:
            raise ProposerError(f"cannot read the swarm's hypotheses: {exc}") from exc
        try:
            block = await asyncio.to_thread(constants_block, ctx.best_train_py)
        except TrainPyError as exc:
            raise ProposerError(f"cannot read the best train.py: {exc}") from exc
        values = {c.name: c.value for c in block}
        sources = {c.name: c.source for c in block}
        ran = (
            {getattr(r, "code_hash", "") for r in ctx.history}
            | {getattr(r, "parent_hash", "") for r in ctx.history}
            | {ctx.parent_hash}
        )
        hyps = sorted(hyps, key=lambda h: (-h.priority, h.created_at or 0.0, h.key))
        for h in hyps:
            if h.key in self.unappliable:
                continue
            if h.track and h.track != ctx.track:
                continue
            applied = await asyncio.to_thread(self._apply, h, values, ctx)
            if isinstance(applied, str):
                if h.suggested_config:  # ideas without a config are for LLMs and people
                    self.unappliable[h.key] = applied
                    log.warning("hypothesis_unappliable", key=h.key, title=h.title, reason=applied)
                continue
            changes, src = applied
            if await asyncio.to_thread(code_hash, src) in ran:
                continue  # already run (by anyone, from any parent)
            desc = describe_changes({n: (values[n], v) for n, v in changes.items()}, sources)
            if await asyncio.to_thread(ctx.duplicate, desc, src):
                continue
            try:
                won = await ctx.memory.take_hypothesis(h)
            except MemoryStoreError as exc:
                raise ProposerError(f"cannot take hypothesis {h.key}: {exc}") from exc
            if not won:
                continue
            self.taken.append(h.key)
            log.info("hypothesis_taken", key=h.key, title=h.title, description=desc)
            return Proposal(
                train_py=src,
                description=desc,
                parent_hash=ctx.parent_hash,
                proposer=self.name,
                rationale=f"swarm hypothesis by {h.agent_id}: {h.title}. {h.hypothesis}".strip(),
                changes={n: (values[n], v) for n, v in changes.items()},
                hypothesis_key=h.key,
            )
        if not self.quiet:
            log.info("no_hypothesis_to_take", track=ctx.track, open=len(hyps))
        raise ProposerError(f"no applicable unclaimed hypothesis for track {ctx.track}")

    def _apply(
        self, h: Hypothesis, values: Mapping[str, Value], ctx: ProposalContext
    ) -> tuple[dict[str, Value], str] | str:
        """(changes, new source), or why the hypothesis cannot apply."""
        cfg = h.suggested_config or {}
        if not cfg:
            return "no suggested_config"
        changes: dict[str, Value] = {}
        for name, raw in cfg.items():
            if not re.fullmatch(r"[A-Z][A-Z0-9_]*", name):
                continue  # notes and other fields some clients add
            if name not in values:
                return f"{name} is not a constant of this train.py"
            try:
                v = coerce_value(values[name], raw)
            except ValueError as exc:
                return f"{name}: {exc}"
            if v != values[name] or type(v) is not type(values[name]):
                changes[name] = v
        if not changes:
            return "the best already has this config"
        reason = check_values({**values, **changes}, ctx.track_shape())
        if reason:
            return reason
        try:
            src = apply_changes(ctx.best_train_py, changes)
        except TrainPyError as exc:
            return str(exc)
        return changes, src

    async def observe(self, proposal: Proposal, result: Result) -> None:
        ctx = self._ctx
        if ctx is None or ctx.memory is None or not self.publish:
            return
        if proposal.proposer != self.name and not self.publish_all:
            return  # only runs this proposer chose
        now = self.clock()
        parent_val = self._parent_val.get(result.parent_hash)
        insight = evidence_insight(
            result, proposal, agent_id=ctx.agent_id, parent_val=parent_val, now=now
        )
        hyp = await asyncio.to_thread(
            lambda: evidence_hypothesis(
                result,
                proposal,
                agent_id=ctx.agent_id,
                shape=ctx.track_shape(),
                parent_val=parent_val,
                now=now,
            )
        )
        try:
            await ctx.memory.publish_insight(insight)
            if hyp is not None:
                await ctx.memory.publish_hypothesis(hyp)
        except MemoryStoreError as exc:
            log.warning("hypothesis_publish_failed", error=str(exc), result=result.key)
            return
        log.info(
            "insight_published",
            insight=insight.insight[:120],
            hypothesis=hyp.title if hyp else None,
        )
