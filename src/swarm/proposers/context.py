"""The swarm summary that LLM and agent proposers read, under a size budget.

``gather_state(ctx)`` collects, for the context's track and tier: the bests, recent
keeps and discards with their deltas against the parent, recent failures, live claims
(experiments being run now), open hypotheses and insights -- from ``ctx.history`` and,
when there is one, the shared memory. ``render_state(state, budget_tokens)`` writes it
as Markdown, trimming the oldest entries of each list first until it fits (tokens are
estimated as characters / 4).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from swarm._logging import get_logger
from swarm.errors import MemoryStoreError
from swarm.proposers.base import ProposalContext
from swarm.trainpy import format_value

__all__ = ["SwarmState", "estimate_tokens", "gather_state", "render_state", "trim_to_tokens"]

log = get_logger(__name__)


def estimate_tokens(text: str) -> int:
    """A rough token count: characters / 4, rounded up."""
    return (len(text) + 3) // 4


def trim_to_tokens(text: str, budget: int, *, marker: str = "\n[... trimmed ...]\n") -> str:
    """``text`` cut at a line boundary to about ``budget`` tokens (with a marker)."""
    if estimate_tokens(text) <= budget:
        return text
    limit = max(0, budget * 4 - len(marker))
    cut = text.rfind("\n", 0, limit)
    return text[: cut if cut > 0 else limit] + marker


@dataclass(slots=True)
class SwarmState:
    """Sections of the summary; every list is newest first."""

    track: str
    tier: str
    parent_hash: str
    best_val_bpb: float | None
    bests: list[str] = field(default_factory=list)
    results: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    claims: list[str] = field(default_factory=list)
    hypotheses: list[str] = field(default_factory=list)
    insights: list[str] = field(default_factory=list)
    #: entries left out before rendering (beyond the gathering limit), per section
    dropped: dict[str, int] = field(default_factory=dict)


def _fmt_bpb(v: Any) -> str:
    return f"{v:.6f}" if isinstance(v, int | float) else "?"


def _result_lines(history: Sequence[Any]) -> tuple[list[str], list[str]]:
    known: dict[str, float] = {}
    for r in history:
        v = getattr(r, "val_bpb", None)
        h = getattr(r, "code_hash", "")
        if isinstance(v, int | float) and h:
            known[h] = min(v, known.get(h, v))
    results, failures = [], []
    for r in history:
        status = getattr(r, "status", "?")
        desc = getattr(r, "description", "") or "(no description)"
        who = getattr(r, "agent_id", "?")
        parent = getattr(r, "parent_hash", "") or ""
        v = getattr(r, "val_bpb", None)
        if status in ("keep", "discard") and isinstance(v, int | float):
            pv = known.get(parent)
            delta = v - pv if pv is not None else getattr(r, "delta", None)
            shown = f" ({delta:+.4f} vs parent)" if isinstance(delta, int | float) else ""
            results.append(f"- {status} val_bpb={_fmt_bpb(v)}{shown} [{who}] {desc}")
        else:
            why = getattr(r, "failure", None)
            failures.append(f"- {status}{'/' + why if why else ''} [{who}] {desc}")
    return results, failures


async def gather_state(ctx: ProposalContext, *, limit: int = 200) -> SwarmState:
    """Collect the summary sections for ``ctx`` (memory errors are logged, not raised)."""
    history = [
        r
        for r in ctx.history
        if getattr(r, "track", ctx.track) in (ctx.track, None, "")
        and getattr(r, "vram_tier", ctx.tier) in (ctx.tier, None, "")
    ]
    history.sort(key=lambda r: getattr(r, "completed_at", 0.0) or 0.0, reverse=True)
    results, failures = _result_lines(history[:limit])
    state = SwarmState(
        track=ctx.track,
        tier=ctx.tier,
        parent_hash=ctx.parent_hash,
        best_val_bpb=ctx.best_val_bpb,
        results=results,
        failures=failures,
    )
    if len(history) > limit:
        state.dropped["results"] = len(history) - limit
    mem = ctx.memory
    if mem is None:
        return state
    try:
        summary = await mem.analyze(track=ctx.track)
        for (track, tier), best in sorted(
            summary.bests.items(), key=lambda kv: (kv[0][0], kv[0][1] or "")
        ):
            scope = f"{track}/{tier}" if tier else f"{track} (all tiers)"
            mark = " (verified)" if best.verified else ""
            state.bests.append(
                f"- {scope}: val_bpb={_fmt_bpb(best.val_bpb)}{mark} by "
                f"{best.agent_id} -- {best.result.description}"
            )
        state.claims = [
            f"- [{c.agent_id}] {c.description}"
            for c in summary.live_claims
            if c.track in (ctx.track, "", None)
        ]
        for h in summary.unclaimed_hypotheses[:limit]:
            cfg = ""
            if h.suggested_config:
                cfg = (
                    " {"
                    + ", ".join(
                        f"{k}: {format_value(tuple(v) if isinstance(v, list) else v)}"
                        for k, v in h.suggested_config.items()
                    )
                    + "}"
                )
            state.hypotheses.append(f"- (priority {h.priority}) {h.title}{cfg} -- {h.hypothesis}")
        for ins in await mem.insights(track=ctx.track, limit=limit):
            state.insights.append(f"- [{ins.agent_id}] {ins.insight}")
    except MemoryStoreError as exc:
        log.warning("swarm_state_partial", error=str(exc))
    return state


def _render(state: SwarmState, counts: dict[str, int]) -> str:
    best = _fmt_bpb(state.best_val_bpb)
    parts = [
        f"# Swarm state: track {state.track}, tier {state.tier}",
        f"Current best (the parent of your experiment): code {state.parent_hash[:12]}, "
        f"val_bpb {best}. Lower is better.",
    ]
    sections = (
        ("bests", "## Bests per track and tier"),
        ("claims", "## Being run right now (do not propose these again)"),
        ("results", "## Recent results, newest first (delta against their parent)"),
        ("failures", "## Recent crashes and timeouts"),
        ("hypotheses", "## Open hypotheses (ideas nobody has taken yet)"),
        ("insights", "## Insights"),
    )
    for attr, title in sections:
        items: list[str] = getattr(state, attr)
        n = counts.get(attr, len(items))
        parts.append(title)
        shown = items[:n]
        parts.extend(shown if shown else ["- (none)"])
        left_out = len(items) - n + state.dropped.get(attr, 0)
        if left_out > 0:
            parts.append(f"- ... {left_out} older entries left out")
    return "\n".join(parts) + "\n"


def render_state(state: SwarmState, budget_tokens: int) -> str:
    """Markdown of ``state`` within ``budget_tokens``, dropping the oldest entries first."""
    counts = {
        a: len(getattr(state, a))
        for a in ("bests", "claims", "results", "failures", "hypotheses", "insights")
    }
    text = _render(state, counts)
    # trim the longest list (its oldest entry) until the text fits
    while estimate_tokens(text) > budget_tokens and any(counts.values()):
        attr = max(counts, key=lambda a: (counts[a], a != "bests"))
        counts[attr] -= 1
        text = _render(state, counts)
    return trim_to_tokens(text, budget_tokens)
