"""The progress chart of ``swarm plot``: val_bpb of every result, one panel per track/tier.

Each panel shows, like upstream autoresearch's progress chart: every result as a dot
(kept ones large and green, discarded ones small and grey, this machine's results
outlined), the running best as a step line, verified bests as stars, and crashes as
ticks along the bottom. The x axis is the experiment number or the wall-clock time.
matplotlib runs headless (Agg), so no display is needed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from swarm.errors import ConfigError
from swarm.records import Result

__all__ = ["PlotSummary", "plot_results"]

XAxis = Literal["number", "time"]
_KEEP = "#2e9d44"
_DISCARD = "#9a9a9a"
_BEST = "#1f5fbf"
_CRASH = "#d0342c"


@dataclass(frozen=True, slots=True)
class PlotSummary:
    """What was drawn: panels (track/tier), results plotted, the best of each panel."""

    path: Path
    panels: tuple[str, ...]
    plotted: int
    bests: dict[str, float]


def _panel_key(r: Result) -> str:
    return f"{r.track}/{r.vram_tier or 'all'}"


def _x(r: Result, i: int, axis: XAxis) -> Any:
    if axis == "time" and r.completed_at is not None:
        return datetime.fromtimestamp(r.completed_at, tz=UTC)
    return i + 1


@dataclass(slots=True)
class _Series:
    """One panel's points, sorted into what is drawn how."""

    keep: tuple[list[Any], list[float]] = field(default_factory=lambda: ([], []))
    discard: tuple[list[Any], list[float]] = field(default_factory=lambda: ([], []))
    mine: tuple[list[Any], list[float]] = field(default_factory=lambda: ([], []))
    best_step: tuple[list[Any], list[float]] = field(default_factory=lambda: ([], []))
    crashes: list[Any] = field(default_factory=list)
    best: float | None = None

    @classmethod
    def of(cls, results: Sequence[Result], axis: XAxis, mine: str | None) -> _Series:
        out = cls()
        for i, r in enumerate(results):
            x = _x(r, i, axis)
            v = r.val_bpb
            if r.status in ("crash", "timeout") or v is None or not math.isfinite(v):
                out.crashes.append(x)
                continue
            if r.status == "keep":
                _add(out.keep, x, v)
                out.best = v if out.best is None else min(out.best, v)
            else:
                _add(out.discard, x, v)
            if mine and r.host == mine:
                _add(out.mine, x, v)
            if out.best is not None:
                _add(out.best_step, x, out.best)
        return out


def _add(series: tuple[list[Any], list[float]], x: Any, y: float) -> None:
    series[0].append(x)
    series[1].append(y)


def _draw_panel(
    ax: Any,
    results: Sequence[Result],
    axis: XAxis,
    mine: str | None,
    verified: Sequence[tuple[float, float]],
) -> float | None:
    """Draw one panel; returns the panel's best val_bpb."""
    s = _Series.of(results, axis, mine)
    ax.scatter(*s.discard, s=14, c=_DISCARD, alpha=0.7, label="discarded", zorder=2)
    ax.scatter(*s.keep, s=46, c=_KEEP, edgecolors="black", linewidths=0.4, label="kept", zorder=3)
    if s.mine[0]:
        ax.scatter(
            *s.mine,
            s=90,
            facecolors="none",
            edgecolors="#e08a00",
            linewidths=1.2,
            label=f"this machine ({mine})",
            zorder=4,
        )
    if s.best_step[0]:
        ax.step(*s.best_step, where="post", c=_BEST, lw=1.8, label="running best", zorder=1)
    if verified:
        vx = [
            datetime.fromtimestamp(t, tz=UTC) if axis == "time" else _index_at(results, t)
            for t, _ in verified
        ]
        ax.scatter(
            vx,
            [v for _, v in verified],
            marker="*",
            s=220,
            c="#f2c200",
            edgecolors="black",
            linewidths=0.6,
            label="verified best",
            zorder=5,
        )
    if s.crashes:
        ax.scatter(
            s.crashes,
            [0.0] * len(s.crashes),
            marker="|",
            s=80,
            c=_CRASH,
            transform=ax.get_xaxis_transform(),
            label="crash / timeout",
            zorder=2,
            clip_on=False,
        )
    if s.best is not None:
        ax.axhline(s.best, c=_BEST, lw=0.6, ls=":", zorder=0)
        ax.annotate(
            f"best {s.best:.6f}",
            xy=(0.99, s.best),
            xycoords=("axes fraction", "data"),
            ha="right",
            va="bottom",
            fontsize=9,
            color=_BEST,
        )
    _dress_axes(ax, axis)
    _zoom(ax, s.keep[1] + s.discard[1])
    return s.best


def _dress_axes(ax: Any, axis: XAxis) -> None:
    if axis == "number":
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(True, alpha=0.3)
    ax.set_ylabel("val_bpb (lower is better)")
    ax.set_xlabel("experiment (completion time, UTC)" if axis == "time" else "experiment #")
    ax.legend(loc="upper right", fontsize=8, framealpha=0.85)


def _index_at(results: Sequence[Result], t: float) -> int:
    """The experiment number of the result finished at ``t`` (for verified bests)."""
    for i, r in enumerate(results):
        if r.completed_at is not None and r.completed_at >= t:
            return i + 1
    return len(results)


def _zoom(ax: Any, ys: Sequence[float]) -> None:
    """Keep the interesting band in view: one runaway discard must not flatten the chart."""
    if len(ys) < 3:
        return
    ordered = sorted(ys)
    lo = ordered[0]
    hi = ordered[min(len(ordered) - 1, int(0.9 * (len(ordered) - 1)) + 1)]
    pad = max((hi - lo) * 0.08, 1e-4)
    ax.set_ylim(lo - pad, hi + pad)


def plot_results(
    results: Sequence[Result],
    out: str | Path,
    *,
    axis: XAxis = "number",
    mine: str | None = None,
    verified: dict[str, list[tuple[float, float]]] | None = None,
    title: str = "swarm progress",
    dpi: int = 110,
) -> PlotSummary:
    """Write the chart of ``results`` (any order) to ``out`` (PNG); returns what was drawn.

    ``mine`` is this machine's host name: its results are outlined.
    ``verified`` maps a panel (``track/tier``) to (time, val_bpb) of its verified bests.
    Raises ConfigError when there is nothing to plot or ``out`` cannot be written.
    """
    import matplotlib

    matplotlib.use("Agg", force=True)
    from matplotlib import pyplot as plt

    if not results:
        raise ConfigError(
            "nothing to plot: the memory holds no results yet (run some "
            "experiments, or check --memory/--track/--tier)",
            key="results",
            value=0,
        )
    panels: dict[str, list[Result]] = {}
    for r in sorted(results, key=lambda r: (r.completed_at or 0.0, r.key)):
        panels.setdefault(_panel_key(r), []).append(r)
    names = sorted(panels)
    fig, axes = plt.subplots(len(names), 1, figsize=(11, 4.2 * len(names)), squeeze=False)
    bests: dict[str, float] = {}
    try:
        for ax, name in zip(axes[:, 0], names, strict=True):
            rows = panels[name]
            best = _draw_panel(ax, rows, axis, mine, (verified or {}).get(name, []))
            keeps = sum(1 for r in rows if r.status == "keep")
            ax.set_title(
                f"{name}: {len(rows)} experiments, {keeps} kept"
                + (f", best {best:.6f}" if best is not None else ""),
                loc="left",
            )
            if best is not None:
                bests[name] = best
        fig.suptitle(title, x=0.01, ha="left", fontsize=13, fontweight="bold")
        fig.tight_layout()
        path = Path(out)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fig.savefig(path, dpi=dpi, format="png")
        except OSError as exc:
            raise ConfigError(
                f"--out {out}: cannot write the PNG ({exc.strerror or exc})",
                key="--out",
                value=str(out),
            ) from exc
    finally:
        plt.close(fig)
    return PlotSummary(path=path, panels=tuple(names), plotted=len(results), bests=bests)
