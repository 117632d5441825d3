"""The supervisor's status snapshot, and what ``python -m swarm status`` shows.

The supervisor writes ``STATE_DIR/status.json`` atomically (temporary file + rename)
every couple of seconds: one entry per worker (GPU, state, current experiment, elapsed,
last result, proposer) and the machine's counters. ``swarm status`` reads it back,
decides whether a supervisor is alive (pid exists and the snapshot is fresh), adds the
GPUs as NVML sees them and the swarm as the shared memory sees it, and renders all of
it with rich (or as JSON). Every part degrades on its own: no supervisor, no NVML, or
an unreachable memory is said, never fatal.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import orjson
from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from swarm._logging import get_logger

__all__ = [
    "SNAPSHOT_FILE",
    "WORKER_STATES",
    "Counters",
    "LastResult",
    "Snapshot",
    "SnapshotWriter",
    "StatusReport",
    "WorkerState",
    "WorkerStatus",
    "is_alive",
    "pid_alive",
    "read_snapshot",
    "render_config_values",
    "render_status",
    "write_snapshot",
]

log = get_logger(__name__)

SNAPSHOT_FILE = "status.json"
SNAPSHOT_VERSION = 1

WorkerState = Literal[
    "idle",
    "proposing",
    "claiming",
    "training",
    "publishing",
    "waiting",
    "quarantined",
    "stopped",
]
WORKER_STATES: tuple[str, ...] = (
    "idle",
    "proposing",
    "claiming",
    "training",
    "publishing",
    "waiting",
    "quarantined",
    "stopped",
)


@dataclass(frozen=True, slots=True)
class LastResult:
    """The most recent finished experiment of a worker."""

    key: str
    status: str  # keep | discard | crash | timeout
    description: str
    val_bpb: float | None
    failure: str | None = None
    finished_at: float = 0.0


@dataclass(frozen=True, slots=True)
class WorkerStatus:
    """One worker as the snapshot shows it."""

    index: int
    gpu_index: int | None  # None: CPU worker
    gpu_name: str
    tier: str
    state: str = "idle"
    state_since: float = 0.0
    detail: str = ""  # why it waits, what failed ...
    experiment_key: str | None = None
    description: str | None = None
    run_started_at: float | None = None
    last_result: LastResult | None = None
    proposer: str = ""
    proposer_active: str = ""  # the one producing proposals now (the fallback after failures)
    fallback_active: bool = False
    runs: int = 0
    run_log: str | None = None  # run.log of the current run (the live view reads its steps)

    def elapsed(self, now: float) -> float | None:
        """Seconds the current experiment has been training, if one is."""
        return None if self.run_started_at is None else max(0.0, now - self.run_started_at)


@dataclass(frozen=True, slots=True)
class Counters:
    """Experiments finished by this machine since the supervisor started."""

    done: int = 0
    kept: int = 0
    discarded: int = 0
    crashed: int = 0
    timeouts: int = 0
    duplicates_skipped: int = 0
    claims_lost: int = 0
    invalid: int = 0
    #: confirmation runs of candidate bests (this machine's share of the replication)
    confirmations: int = 0

    def add(self, status: str) -> Counters:
        """Counters after one more published result of ``status``."""
        field_name = {
            "keep": "kept",
            "discard": "discarded",
            "crash": "crashed",
            "timeout": "timeouts",
            "invalid": "invalid",
        }.get(status)
        new = replace(self, done=self.done + 1)
        if field_name:
            new = replace(new, **{field_name: getattr(new, field_name) + 1})
        return new


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What the supervisor writes to ``status.json``."""

    pid: int
    host: str
    agent_id: str
    track: str
    memory: str  # "local /path/memory.sqlite", "hub http://..."
    started_at: float
    updated_at: float
    state: str  # starting | running | draining | stopped
    workers: tuple[WorkerStatus, ...] = ()
    counters: Counters = field(default_factory=Counters)
    cpu_mode: bool = False
    exit_reason: str | None = None
    #: the isolation of training runs, e.g. "bwrap (auto: first that works; ...)"
    sandbox: str = ""
    version: int = SNAPSHOT_VERSION

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Snapshot:
        """Parse a snapshot; tolerant of missing optional fields."""
        workers = []
        for w in data.get("workers") or ():
            lr = w.get("last_result")
            known = {k: w[k] for k in WorkerStatus.__dataclass_fields__ if k in w}
            known["last_result"] = (
                LastResult(**{k: lr[k] for k in LastResult.__dataclass_fields__ if k in lr})
                if lr
                else None
            )
            workers.append(WorkerStatus(**known))
        counters = data.get("counters") or {}
        return cls(
            pid=int(data["pid"]),
            host=str(data.get("host", "")),
            agent_id=str(data.get("agent_id", "")),
            track=str(data.get("track", "")),
            memory=str(data.get("memory", "")),
            started_at=float(data.get("started_at", 0.0)),
            updated_at=float(data.get("updated_at", 0.0)),
            state=str(data.get("state", "running")),
            workers=tuple(workers),
            counters=Counters(
                **{k: int(counters[k]) for k in Counters.__dataclass_fields__ if k in counters}
            ),
            cpu_mode=bool(data.get("cpu_mode", False)),
            sandbox=str(data.get("sandbox") or ""),
            exit_reason=data.get("exit_reason"),
            version=int(data.get("version", SNAPSHOT_VERSION)),
        )


# --------------------------------------------------------------------------- file I/O


def snapshot_path(state_dir: Path | str) -> Path:
    return Path(state_dir) / SNAPSHOT_FILE


def write_snapshot(state_dir: Path | str, snapshot: Snapshot) -> Path:
    """Write ``status.json`` atomically: readers see the old or the new file, never half."""
    path = snapshot_path(state_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{SNAPSHOT_FILE}.{os.getpid()}.tmp")
    data = orjson.dumps(snapshot.to_json(), option=orjson.OPT_INDENT_2)
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
    os.replace(tmp, path)
    return path


def read_snapshot(state_dir: Path | str) -> Snapshot | None:
    """The last snapshot, or None when there is none (or it cannot be parsed)."""
    path = snapshot_path(state_dir)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        return Snapshot.from_json(orjson.loads(raw))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        log.warning("status_snapshot_unreadable", path=str(path), error=str(exc))
        return None


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists (on this host)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_alive(snapshot: Snapshot | None, *, now: float | None = None, stale_s: float = 15.0) -> bool:
    """A supervisor is running: the pid exists, the snapshot is fresh, and it did not stop."""
    if snapshot is None or snapshot.state == "stopped":
        return False
    if snapshot.host and snapshot.host != socket.gethostname():
        return False
    current = time.time() if now is None else now
    return current - snapshot.updated_at <= stale_s and pid_alive(snapshot.pid)


class SnapshotWriter:
    """Writes ``build()`` to the state dir every ``interval_s`` seconds while entered.

    ``build`` is called on the event loop (it only reads in-memory state); the file write
    runs in a thread. ``flush()`` writes at once (state changes that matter: start, stop).
    """

    def __init__(
        self,
        state_dir: Path | str,
        build: Callable[[], Snapshot],
        *,
        interval_s: float = 2.0,
    ) -> None:
        self.state_dir = Path(state_dir)
        self._build = build
        self.interval_s = interval_s
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self.writes = 0

    async def flush(self) -> None:
        async with self._lock:
            snap = self._build()
            try:
                await asyncio.to_thread(write_snapshot, self.state_dir, snap)
                self.writes += 1
            except OSError as exc:
                log.warning(
                    "status_snapshot_write_failed", state_dir=str(self.state_dir), error=str(exc)
                )

    async def _loop(self) -> None:
        while True:
            await self.flush()
            await asyncio.sleep(self.interval_s)

    async def __aenter__(self) -> SnapshotWriter:
        self._task = asyncio.create_task(self._loop(), name="status-snapshot")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.flush()


# --------------------------------------------------------------------------- report


@dataclass(frozen=True, slots=True)
class StatusReport:
    """Everything ``swarm status`` shows; each part says when it is unavailable."""

    generated_at: float
    state_dir: str
    supervisor_running: bool
    snapshot: Snapshot | None
    gpus: Sequence[Mapping[str, Any]] | None
    gpus_error: str | None
    swarm: Mapping[str, Any] | None
    swarm_error: str | None
    memory: str
    config_values: Sequence[tuple[str, Any, str]] | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "generated_at": self.generated_at,
            "state_dir": self.state_dir,
            "supervisor": {
                "running": self.supervisor_running,
                "snapshot": self.snapshot.to_json() if self.snapshot else None,
            },
            "gpus": list(self.gpus) if self.gpus is not None else None,
            "gpus_error": self.gpus_error,
            "memory": self.memory,
            "swarm": dict(self.swarm) if self.swarm is not None else None,
            "swarm_error": self.swarm_error,
        }
        if self.config_values is not None:
            out["config"] = [{"key": k, "value": v, "source": s} for k, v, s in self.config_values]
        return out


def _fmt_bpb(value: Any) -> str:
    return "-" if value is None else f"{float(value):.6f}"


def _fmt_age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def _gpu_table(report: StatusReport) -> Table | Text:
    if report.gpus is None:
        return Text(f"GPUs: unavailable ({report.gpus_error or 'no NVML'})", style="yellow")
    if not report.gpus:
        return Text("GPUs: none found (CPU mode)", style="yellow")
    table = Table(title="GPUs", title_justify="left")
    for col in ("#", "name", "tier", "util", "memory", "temp", "processes", "health"):
        table.add_column(col)
    for g in report.gpus:
        used = g.get("used_mb")
        total = g.get("total_mb")
        mem = f"{used:.0f}/{total:.0f} MB" if used is not None and total else "-"
        procs = g.get("processes") or []
        proc_text = ", ".join(f"{p.get('pid')}({p.get('used_mb', 0):.0f}MB)" for p in procs) or "-"
        util = g.get("utilization")
        temp = g.get("temperature")
        table.add_row(
            str(g.get("index")),
            str(g.get("name", "")),
            str(g.get("tier", "")),
            "-" if util is None else f"{util}%",
            mem,
            "-" if temp is None else f"{temp}C",
            proc_text,
            "quarantined" if g.get("quarantined") else "ok",
        )
    return table


def _worker_table(report: StatusReport) -> Table | Text:
    snap = report.snapshot
    if snap is None:
        return Text(
            f"Workers: no supervisor running (no snapshot in {report.state_dir})", style="yellow"
        )
    now = report.generated_at
    head = (
        f"Workers: supervisor pid {snap.pid} on {snap.host}, agent {snap.agent_id}, "
        f"track {snap.track}{' (CPU mode)' if snap.cpu_mode else ''}, state {snap.state}, "
        f"up {_fmt_age(now - snap.started_at)}"
        + (f"\nsandbox: {snap.sandbox}" if snap.sandbox else "")
    )
    if not report.supervisor_running:
        head = (
            f"Workers: no supervisor running (last snapshot from pid {snap.pid}, "
            f"{_fmt_age(now - snap.updated_at)} ago, state {snap.state}"
            + (f", {snap.exit_reason}" if snap.exit_reason else "")
            + ")"
        )
    c = snap.counters
    table = Table(
        title=head,
        title_justify="left",
        caption=(
            f"done {c.done}  kept {c.kept}  discarded {c.discarded}  crashed {c.crashed}  "
            f"timeouts {c.timeouts}  duplicates skipped {c.duplicates_skipped}  "
            f"claims lost {c.claims_lost}  invalid {c.invalid}  confirmations {c.confirmations}"
        ),
        caption_justify="left",
    )
    for col in ("worker", "gpu", "state", "experiment", "elapsed", "last result", "proposer"):
        table.add_column(col)
    for w in snap.workers:
        gpu = "cpu" if w.gpu_index is None else f"{w.gpu_index} {w.gpu_name} ({w.tier})"
        state = w.state + (f" ({w.detail})" if w.detail else "")
        exp = w.description or "-"
        if w.experiment_key:
            exp = f"{exp} [{w.experiment_key}]"
        last = "-"
        if w.last_result:
            lr = w.last_result
            last = f"{lr.status} {_fmt_bpb(lr.val_bpb)}"
            if lr.failure:
                last += f" ({lr.failure})"
        proposer = w.proposer
        if w.fallback_active:
            proposer += f" -> {w.proposer_active} (fallback)"
        table.add_row(str(w.index), gpu, state, exp, _fmt_age(w.elapsed(now)), last, proposer)
    return table


def _verified_cell(row: Mapping[str, Any]) -> str:
    by = ", ".join(row.get("confirmed_by") or [])
    return f"{row.get('verification') or '-'}" + (f" ({by})" if by else "")


def _trust_part(swarm: Mapping[str, Any]) -> list[Any]:
    """Open and refuted candidates, and the seed noise per track and tier."""
    parts: list[Any] = []
    from swarm.verify.report import SHOWN_STATES

    cands = [c for c in swarm.get("candidates") or [] if c.get("state") in SHOWN_STATES]
    if cands:
        table = Table(
            title=f"Candidate bests: open and refuted ({len(cands)}, newest 20)",
            title_justify="left",
        )
        for col in ("state", "track", "tier", "val_bpb", "agent", "description", "runs"):
            table.add_column(col)
        for c in cands[:20]:
            runs = ", ".join(
                f"{r.get('agent_id')} {_fmt_bpb(r.get('val_bpb'))}" for r in c.get("runs") or []
            )
            state = str(c.get("state", "")) + (" (suspicious)" if c.get("suspicious") else "")
            table.add_row(
                state,
                str(c.get("track", "")),
                str(c.get("tier", "")),
                _fmt_bpb(c.get("val_bpb")),
                str(c.get("agent_id", "")),
                str(c.get("description", "")),
                runs,
            )
        parts.append(table)
    noise = swarm.get("noise") or []
    if noise:
        parts.append(
            Text(
                "Seed noise (sigma): "
                + "; ".join(
                    f"{n['track']}/{n['tier']} {n['sigma']:.4f} "
                    f"({'measured from ' + str(n['pairs']) + ' pairs' if n['measured'] else 'default'})"
                    for n in noise
                )
            )
        )
    return parts


def _swarm_part(report: StatusReport) -> list[Any]:
    if report.swarm is None:
        return [Text(f"Swarm ({report.memory}): unreachable: {report.swarm_error}", style="red")]
    parts: list[Any] = []
    bests = report.swarm.get("bests") or []
    table = Table(title=f"Swarm bests ({report.memory})", title_justify="left")
    for col in ("track", "tier", "val_bpb", "agent", "description", "age", "verified"):
        table.add_column(col)
    now = report.generated_at
    for b in bests:
        at = b.get("completed_at")
        table.add_row(
            str(b.get("track", "")),
            str(b.get("tier", "")),
            _fmt_bpb(b.get("val_bpb")),
            str(b.get("agent_id", "")),
            str(b.get("description", "")),
            _fmt_age(now - at) if isinstance(at, int | float) else "-",
            _verified_cell(b),
        )
    parts.append(table if bests else Text("Swarm bests: none yet"))
    parts.extend(_trust_part(report.swarm))
    claims = report.swarm.get("live_claims") or []
    ctab = Table(title=f"Live claims ({len(claims)})", title_justify="left")
    for col in ("agent", "description", "track", "tier", "heartbeat age"):
        ctab.add_column(col)
    for c in claims:
        hb = c.get("heartbeat_at") or c.get("claimed_at")
        ctab.add_row(
            str(c.get("agent_id", "")),
            str(c.get("description", "")),
            str(c.get("track", "")),
            str(c.get("tier", "")),
            _fmt_age(now - hb) if isinstance(hb, int | float) else "-",
        )
    parts.append(ctab if claims else Text("Live claims: none"))
    recent = report.swarm.get("recent") or []
    rtab = Table(title="Recent results", title_justify="left")
    for col in ("status", "val_bpb", "delta", "agent", "track/tier", "description"):
        rtab.add_column(col)
    for r in recent:
        delta = r.get("delta")
        rtab.add_row(
            str(r.get("status", "")),
            _fmt_bpb(r.get("val_bpb")),
            "-" if delta is None else f"{float(delta):+.4f}",
            str(r.get("agent_id", "")),
            f"{r.get('track', '')}/{r.get('vram_tier', '')}",
            str(r.get("description", "")),
        )
    parts.append(rtab if recent else Text("Recent results: none"))
    for note in report.swarm.get("notes") or []:
        parts.append(Text(str(note), style="dim"))
    return parts


def render_config_values(values: Sequence[tuple[str, Any, str]]) -> Table:
    table = Table(
        title="Configuration (effective value and where it came from)", title_justify="left"
    )
    table.add_column("key")
    table.add_column("value")
    table.add_column("source")
    for key, value, source in values:
        table.add_row(key, repr(value) if isinstance(value, str) else str(value), source)
    return table


def render_status(report: StatusReport, console: Console) -> None:
    """Print the report for people (rich)."""
    parts: list[Any] = [_gpu_table(report), _worker_table(report), *_swarm_part(report)]
    if report.config_values is not None:
        parts.append(render_config_values(report.config_values))
    console.print(Group(*parts))


# --------------------------------------------------------------------------- gathering


def _gpu_rows(infos: Sequence[Any], quarantined: Mapping[int, str]) -> list[dict[str, Any]]:
    rows = []
    for g in infos:
        rows.append(
            {
                "index": g.index,
                "uuid": g.uuid,
                "name": g.name,
                "tier": g.tier,
                "utilization": g.utilization_pct,
                "temperature": g.temperature_c,
                "total_mb": g.memory_total_mb,
                "free_mb": g.memory_free_mb,
                "used_mb": g.memory_total_mb - g.memory_free_mb,
                "processes": [{"pid": p.pid, "used_mb": p.used_mb or 0} for p in g.processes],
                "quarantined": g.index in quarantined,
            }
        )
    return rows


async def gather_gpus(
    nvml: Any = None, *, snapshot: Snapshot | None = None, timeout_s: float = 10.0
) -> tuple[list[dict[str, Any]] | None, str | None]:
    """GPU rows from NVML, or (None, why) when NVML is unavailable."""
    from swarm.errors import GpuError
    from swarm.gpu_pool import GpuPool

    quarantined = {
        w.gpu_index: w.detail
        for w in (snapshot.workers if snapshot else ())
        if w.state == "quarantined" and w.gpu_index is not None
    }
    try:
        async with asyncio.timeout(timeout_s):
            pool = GpuPool(nvml=nvml)
            async with pool:
                if pool.cpu_mode:
                    return None, pool.cpu_reason or "no GPU found"
                infos = await pool.snapshot_all()
    except (GpuError, TimeoutError) as exc:
        return None, f"{type(exc).__name__}: {exc}"
    return _gpu_rows(infos, quarantined), None


def _claim_row(c: Any) -> dict[str, Any]:
    return {
        "agent_id": c.agent_id,
        "description": c.description,
        "track": c.track,
        "tier": c.vram_tier,
        "heartbeat_at": c.heartbeat_at,
        "claimed_at": c.claimed_at,
        "key": c.key,
    }


def result_row(r: Any) -> dict[str, Any]:
    """The JSON/table form of a result (no source)."""
    return {
        "key": r.key,
        "status": r.status,
        "val_bpb": r.val_bpb,
        "delta": r.delta,
        "agent_id": r.agent_id,
        "track": r.track,
        "vram_tier": r.vram_tier,
        "description": r.description,
        "completed_at": r.completed_at,
        "failure": r.failure,
        "gpu_name": r.gpu_name,
        "code_hash": r.code_hash,
        "parent_hash": r.parent_hash,
        "proposer": r.proposer,
    }


async def gather_swarm(memory: Any, *, recent: int = 10) -> dict[str, Any]:
    """Bests per track and tier, live claims and recent results from a SwarmMemory."""
    from swarm.verify.report import best_fields, candidate_rows, noise_rows

    summary = await memory.analyze()
    bests = []
    for (track, tier), b in sorted(
        summary.bests.items(), key=lambda kv: (kv[0][0], kv[0][1] or "")
    ):
        bests.append(
            {
                "track": track,
                "tier": tier or "all",
                "val_bpb": b.val_bpb,
                "agent_id": b.agent_id,
                "description": b.result.description,
                "completed_at": b.result.completed_at,
                "verified": b.verified,
                "code_hash": b.code_hash,
                **best_fields(b),
            }
        )
    results = await memory.results(limit=recent)
    return {
        "bests": bests,
        "candidates": [c for c in await candidate_rows(memory) if c["state"] != "superseded"],
        "noise": await noise_rows(memory),
        "live_claims": [_claim_row(c) for c in summary.live_claims],
        "recent": [result_row(r) for r in results],
        "total_results": summary.total_results,
        "active_agents": list(summary.active_agents),
        "trend": summary.trend,
        "notes": [],
    }


async def gather_status(
    config: Any,
    *,
    nvml: Any = None,
    backend: Any = None,
    api_key: str | None = None,
    with_config: bool = False,
    recent: int = 10,
    timeout_s: float = 15.0,
) -> StatusReport:
    """Everything ``swarm status`` shows for ``config`` (a SwarmConfig); never raises for
    an absent supervisor, missing NVML or an unreachable memory: each is reported."""
    from swarm.errors import ConfigError, MemoryStoreError
    from swarm.namespace import SwarmMemory

    state_dir = Path(config.state_dir)
    snap = read_snapshot(state_dir)
    running = is_alive(snap, stale_s=max(15.0, 5 * float(config.status_interval_s)))
    gpus, gpus_error = await gather_gpus(nvml, snapshot=snap)

    label = f"{config.memory_kind} {config.memory_url or ''}".strip()
    swarm: dict[str, Any] | None = None
    swarm_error: str | None = None
    try:
        if backend is None and config.memory_kind == "local":
            path = config.memory_file()
            label = f"local {path}"
            if not path.exists():
                swarm = {
                    "bests": [],
                    "live_claims": [],
                    "recent": [],
                    "total_results": 0,
                    "notes": [f"no memory file yet at {path}"],
                }
        if swarm is None:
            if backend is None:
                from swarm.memory.factory import open_configured

                backend = open_configured(config, api_key)
            async with asyncio.timeout(timeout_s), backend as opened:
                agent = snap.agent_id if snap and snap.agent_id else "status"
                swarm = await gather_swarm(SwarmMemory(opened, agent_id=agent), recent=recent)
    except (MemoryStoreError, ConfigError, OSError) as exc:
        swarm, swarm_error = None, f"{type(exc).__name__}: {exc}"
    except TimeoutError:
        swarm, swarm_error = None, f"no answer within {timeout_s:g}s"
    return StatusReport(
        generated_at=time.time(),
        state_dir=str(state_dir),
        supervisor_running=running,
        snapshot=snap,
        gpus=gpus,
        gpus_error=gpus_error,
        swarm=swarm,
        swarm_error=swarm_error,
        memory=label,
        config_values=config.values() if with_config else None,
    )
