"""The live terminal view of ``swarm run`` (on a TTY) and ``swarm status --watch``.

Everything it shows comes from what already exists on disk or in the memory:

- the supervisor's snapshot (``status.json``): workers, their experiment, counters;
- each training worker's ``run.log``: step, loss, fraction of the budget, seconds left;
- ``results.jsonl`` of this machine: the last results with keep/discard and delta;
- the shared memory, polled less often: the best (verified or not) of each track and
  tier, and the improvements pending a confirming run.

:func:`render_live` turns a :class:`LiveModel` into one rich renderable (tests render it
into a fixed-width Console); :class:`LiveView` refreshes a ``rich.live.Live`` with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from swarm._logging import get_logger
from swarm.records import Result
from swarm.status import Snapshot, WorkerStatus, is_alive, read_snapshot
from swarm.ui.progress import RunProgress, read_progress, read_tail

__all__ = [
    "LOG_FILE",
    "LiveModel",
    "LiveView",
    "SwarmPart",
    "gather_live",
    "gather_swarm_part",
    "read_recent",
    "render_live",
    "warnings_of",
]

log = get_logger(__name__)

LOG_FILE = "swarm.log"  # in the state dir, while the live view owns the terminal
_RECENT_TAIL_BYTES = 512 * 1024
_STATUS_STYLE = {"keep": "green", "discard": "yellow", "crash": "red", "timeout": "red"}


@dataclass(frozen=True, slots=True)
class SwarmPart:
    """What the shared memory says (polled every ``swarm_every_s``)."""

    bests: tuple[Mapping[str, Any], ...] = ()  # gather_swarm's rows (track, tier, val_bpb ...)
    pending: tuple[Result, ...] = ()
    live_claims: int = 0
    error: str | None = None
    fetched_at: float = 0.0


@dataclass(frozen=True, slots=True)
class LiveModel:
    """One frame of the live view."""

    now: float
    state_dir: str
    snapshot: Snapshot | None
    running: bool
    progress: Mapping[int, RunProgress] = field(default_factory=dict)  # worker index ->
    recent: tuple[Result, ...] = ()  # this machine's, newest first
    swarm: SwarmPart | None = None
    log_file: str | None = None
    memory: str = ""


# --------------------------------------------------------------------------- reading


def read_recent(state_dir: str | Path, limit: int = 6) -> tuple[Result, ...]:
    """The newest ``limit`` results of ``results.jsonl`` (reads only the file's tail)."""
    data = read_tail(Path(state_dir) / "results.jsonl", _RECENT_TAIL_BYTES)
    if data is None:
        return ()
    lines = data.split(b"\n")
    out: list[Result] = []
    for line in reversed(lines):
        if not line.strip():
            continue
        try:
            rec = orjson.loads(line)
            out.append(Result.from_json(str(rec.get("key", "")), rec))
        except (orjson.JSONDecodeError, ValueError, TypeError, KeyError, AttributeError):
            continue  # a torn or foreign line is skipped, not fatal
        if len(out) >= limit:
            break
    return tuple(out)


def _local_part(
    state_dir: Path, stale_s: float
) -> tuple[Snapshot | None, bool, dict[int, RunProgress], tuple[Result, ...]]:
    snap = read_snapshot(state_dir)
    running = is_alive(snap, stale_s=stale_s)
    progress: dict[int, RunProgress] = {}
    for w in snap.workers if snap else ():
        if w.state == "training" and w.run_log:
            p = read_progress(w.run_log)
            if p is not None:
                progress[w.index] = p
    return snap, running, progress, read_recent(state_dir)


async def gather_swarm_part(
    config: Any, *, api_key: str | None = None, timeout_s: float = 10.0
) -> SwarmPart:
    """Bests and pending improvements from the configured memory; errors are reported."""
    from swarm.cli.results import open_backend
    from swarm.errors import ConfigError, MemoryStoreError
    from swarm.namespace import SwarmMemory
    from swarm.status import gather_swarm

    now = time.time()
    if config.memory_kind == "local" and not config.memory_file().exists():
        return SwarmPart(fetched_at=now)
    try:
        async with asyncio.timeout(timeout_s), open_backend(config, api_key) as backend:
            memory = SwarmMemory(backend, agent_id=config.agent_name or "live-view")
            data = await gather_swarm(memory, recent=1)
            pending = await memory.pending_confirmations()
    except (MemoryStoreError, ConfigError, OSError) as exc:
        return SwarmPart(error=f"{type(exc).__name__}: {exc}", fetched_at=now)
    except TimeoutError:
        return SwarmPart(error=f"no answer within {timeout_s:g}s", fetched_at=now)
    return SwarmPart(
        bests=tuple(data["bests"]),
        pending=tuple(pending),
        live_claims=len(data["live_claims"]),
        fetched_at=now,
    )


async def gather_live(
    config: Any,
    *,
    swarm: SwarmPart | None,
    log_file: str | None = None,
) -> LiveModel:
    """A frame from the state dir of ``config`` plus an already fetched swarm part."""
    state_dir = Path(config.state_dir)
    stale_s = max(15.0, 5 * float(config.status_interval_s))
    snap, running, progress, recent = await asyncio.to_thread(_local_part, state_dir, stale_s)
    memory = snap.memory if snap else f"{config.memory_kind} {config.memory_url or ''}".strip()
    return LiveModel(
        now=time.time(),
        state_dir=str(state_dir),
        snapshot=snap,
        running=running,
        progress=progress,
        recent=recent,
        swarm=swarm,
        log_file=log_file,
        memory=memory,
    )


# --------------------------------------------------------------------------- rendering


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = max(0, int(seconds))
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def _bpb(v: float | None) -> str:
    return "-" if v is None else f"{v:.6f}"


def _best_for(model: LiveModel, track: str, tier: str) -> tuple[str, int]:
    """('0.991234 ✓' or '-', pending count) of one track and tier."""
    part = model.swarm
    if part is None:
        return "…", 0
    best = "-"
    for row in part.bests:
        if row.get("track") == track and row.get("tier") == tier:
            best = _bpb(row.get("val_bpb")) + (" ✓" if row.get("verified") else "")
    pending = sum(1 for r in part.pending if r.track == track and r.vram_tier == tier)
    return best, pending


def _progress_cells(w: WorkerStatus, p: RunProgress | None, now: float) -> list[RenderableType]:
    if w.state != "training":
        return [Text("-"), Text("-"), Text("-"), Text("-")]
    if p is None:
        return [
            Text(f"starting {_age(w.elapsed(now))}", style="dim"),
            Text("-"),
            Text("-"),
            Text("-"),
        ]
    bar = Table.grid(padding=(0, 1))
    bar.add_row(
        ProgressBar(total=1.0, completed=p.fraction, width=16), Text(f"{100 * p.fraction:3.0f}%")
    )
    eta = "eval" if p.evaluating else _age(p.left_s)
    return [bar, Text(str(p.step)), Text("-" if p.loss is None else f"{p.loss:.4f}"), Text(eta)]


def _workers_table(model: LiveModel) -> Table:
    snap = model.snapshot
    assert snap is not None
    table = Table(title="Workers", title_justify="left", expand=True)
    for col in ("#", "gpu", "state", "experiment", "run", "step", "loss", "ETA", "best", "pending"):
        wide = col in ("experiment", "state")
        table.add_column(
            col,
            no_wrap=True,
            overflow="ellipsis",
            ratio=(3 if col == "experiment" else 1) if wide else None,
            max_width=28 if col == "state" else None,
        )
    for w in snap.workers:
        gpu = "cpu" if w.gpu_index is None else f"{w.gpu_index} {w.gpu_name}"
        state = w.state + (f" ({w.detail})" if w.detail else "")
        best, pending = _best_for(model, snap.track, w.tier)
        table.add_row(
            Text(str(w.index)),
            Text(f"{gpu} [{w.tier}]"),
            Text(state),
            Text(w.description or "-"),
            *_progress_cells(w, model.progress.get(w.index), model.now),
            Text(best),
            Text(str(pending) if pending else "-"),
        )
    return table


def _recent_table(model: LiveModel) -> Table | Text:
    if not model.recent:
        return Text("Last results: none yet on this machine", style="dim")
    table = Table(title="Last results (this machine)", title_justify="left", expand=True)
    for col in ("status", "val_bpb", "delta", "description", "age"):
        table.add_column(col, no_wrap=col != "description", overflow="ellipsis")
    for r in model.recent:
        status = r.status + (f" ({r.failure})" if r.failure and r.status != "timeout" else "")
        delta = "-" if r.delta is None else f"{r.delta:+.4f}"
        age = None if r.completed_at is None else model.now - r.completed_at
        table.add_row(
            Text(status, style=_STATUS_STYLE.get(r.status, "")),
            Text(_bpb(r.val_bpb)),
            Text(delta),
            Text(r.description),
            Text(_age(age)),
        )
    return table


def warnings_of(model: LiveModel) -> list[str]:
    """What needs a person's attention in this frame, one line each."""
    out: list[str] = []
    snap = model.snapshot
    if snap is None:
        out.append(f"no supervisor has run here yet (no status.json in {model.state_dir})")
    elif snap.state == "stopped":
        out.append("supervisor stopped" + (f": {snap.exit_reason}" if snap.exit_reason else ""))
    elif not model.running:
        out.append(
            f"supervisor not running (last snapshot {_age(model.now - snap.updated_at)} "
            f"ago, state {snap.state})"
        )
    if snap is not None and snap.sandbox.startswith("none"):
        out.append(f"sandbox off: training runs are not isolated ({snap.sandbox})")
    for w in snap.workers if snap else ():
        if w.state == "quarantined":
            out.append(f"worker {w.index} GPU {w.gpu_index} quarantined: {w.detail or '?'}")
        if w.fallback_active:
            out.append(
                f"worker {w.index}: proposer {w.proposer} failing, using {w.proposer_active}"
            )
    if model.swarm is not None and model.swarm.error:
        out.append(f"memory offline ({model.memory}): {model.swarm.error}")
    return out


def _header(model: LiveModel) -> Text:
    snap = model.snapshot
    text = Text("swarm", style="bold")
    if snap is not None:
        text.append(
            f"  agent {snap.agent_id}  track {snap.track}"
            f"{' (CPU)' if snap.cpu_mode else ''}  {snap.state}  "
            f"up {_age(model.now - snap.started_at)}"
        )
    text.append(f"  memory {model.memory}")
    if model.swarm is not None and not model.swarm.error:
        text.append(f"  live claims {model.swarm.live_claims}")
    return text


def _counters(snap: Snapshot) -> Text:
    c = snap.counters
    return Text(
        f"done {c.done}  kept {c.kept}  discarded {c.discarded}  crashed {c.crashed}  "
        f"timeouts {c.timeouts}  duplicates skipped {c.duplicates_skipped}  "
        f"claims lost {c.claims_lost}"
    )


def render_live(model: LiveModel) -> RenderableType:
    """The whole view of one frame."""
    parts: list[RenderableType] = [_header(model)]
    if model.snapshot is not None:
        parts += [_workers_table(model), _recent_table(model), _counters(model.snapshot)]
    else:
        parts.append(_recent_table(model))
    parts += [Text(f"! {w}", style="bold yellow") for w in warnings_of(model)]
    if model.log_file:
        parts.append(Text(f"logs: {model.log_file}", style="dim"))
    return Group(*parts)


# --------------------------------------------------------------------------- refreshing


class LiveView:
    """Keeps a ``rich.live.Live`` on ``console`` up to date while entered (or in ``run``).

    The local part is re-read every ``refresh_s``; the memory every ``swarm_every_s``
    (its own backend connection, as ``swarm status`` opens one).
    """

    def __init__(
        self,
        config: Any,
        console: Console,
        *,
        log_file: str | None = None,
        api_key: str | None = None,
        refresh_s: float = 1.0,
        swarm_every_s: float = 10.0,
        screen: bool = False,
    ) -> None:
        self.config = config
        self.console = console
        self.log_file = log_file
        self.api_key = api_key
        self.refresh_s = refresh_s
        self.swarm_every_s = swarm_every_s
        self.frames = 0
        self._swarm: SwarmPart | None = None
        self._live = Live(
            console=console,
            auto_refresh=False,
            screen=screen,
            redirect_stdout=False,
            redirect_stderr=False,
        )
        self._task: asyncio.Task[None] | None = None

    async def frame(self) -> LiveModel:
        """Fetch what is due and show one frame; returns its model."""
        now = time.time()
        if self._swarm is None or now - self._swarm.fetched_at >= self.swarm_every_s:
            self._swarm = await gather_swarm_part(self.config, api_key=self.api_key)
        model = await gather_live(self.config, swarm=self._swarm, log_file=self.log_file)
        self._live.update(render_live(model), refresh=True)
        self.frames += 1
        return model

    async def run(self, frames: int | None = None) -> None:
        """Refresh until cancelled (or after ``frames`` frames)."""
        while frames is None or self.frames < frames:
            try:
                await self.frame()
            except Exception as exc:  # supervision edge of the view: never stop the swarm
                log.warning("live_view_frame_failed", error=repr(exc))
            await asyncio.sleep(self.refresh_s)

    async def __aenter__(self) -> LiveView:
        self._live.start()
        self._task = asyncio.create_task(self.run(), name="live-view")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        try:
            await self.frame()  # the final state stays on the screen
        except Exception as exc:  # supervision edge of the view, as in run()
            log.warning("live_view_frame_failed", error=repr(exc), final=True)
        self._live.stop()
