"""Simulated machines of a swarm: real supervisors, a fake trainer on the synthetic objective.

One OS process runs several simulated machines on one event loop. Each machine is a real
:class:`swarm.supervisor.Supervisor` (workers, the built-in search proposer, the real
deduplicator, claims with heartbeats, the outbox, publishing, best decisions and adoption)
on fake GPUs (``FakeNvml``) whose memory backend is the real client of a ``swarm hub``
(or, for an agent that shares nothing, its own SQLite file). Only the trainer is fake:
:class:`FakeTrainer` is the supervisor's ``run_fn``; it sleeps ``run_s`` seconds and
answers with the synthetic objective of the constants block (``tests/fixtures/
synthetic_train.py``: a sum of quadratic bowls in each constant's natural space plus
seeded noise of sd 0.002; the noise-free optimum is 0.948). Every run is logged with its
code hash and seed, so that the caller can count runs of the same code twice (the
duplicates the protocol must prevent) from the runs themselves, not from what the
supervisors report.

The parent (``bench_swarm.py``) writes a :class:`SimJob` as JSON and starts::

    python benchmarks/swarm_sim.py JOB.json OUT.json

which writes a :class:`ProcessReport` (runs, latencies, counters) to ``OUT.json``.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import math
import os
import random
import signal
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from swarm import keys
from swarm._logging import configure_logging
from swarm.config import SwarmConfig, load_config
from swarm.embedding import get_embedder
from swarm.memory import NewMemory
from swarm.memory.factory import open_memory
from swarm.runner import RunOutcome, RunSpec
from swarm.summary import Summary
from swarm.supervisor import Supervisor
from swarm.testing import FakeNvml
from swarm.trainpy import code_hash, constants
from swarm.worker import SEED_ENV

REPO = Path(__file__).resolve().parents[1]
SYNTHETIC = REPO / "tests" / "fixtures" / "synthetic_train.py"
#: seconds of a real run, against which every interval of the protocol is scaled
REAL_RUN_S = 300.0


def load_objective() -> ModuleType:
    """The synthetic trainer as a module (its ``evaluate`` is the objective)."""
    spec = importlib.util.spec_from_file_location("_swarm_sim_objective", SYNTHETIC)
    if spec is None or spec.loader is None:
        raise RuntimeError(f"cannot load {SYNTHETIC}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def optimum(objective: ModuleType) -> float:
    """The noise-free minimum of the objective: every bowl at its bottom, the best window
    pattern and head size."""
    return float(
        objective.BASE
        + min(objective.WINDOW_OFFSET.values())
        + min(objective.HEAD_DIM_OFFSET.values())
    )


# --------------------------------------------------------------------------- job


@dataclass(frozen=True, slots=True)
class MachineSpec:
    """One simulated machine: its agent name, GPUs and memory (``hub`` URL or own file)."""

    name: str
    gpus: int
    memory_kind: str  # "hub" | "local"
    memory_url: str = ""
    memory_path: str = ""


@dataclass(frozen=True, slots=True)
class SimJob:
    """What one process simulates."""

    machines: tuple[MachineSpec, ...]
    work_dir: str
    run_s: float
    runs_per_gpu: int
    proposer: str = "search"  # "search" (built-in) | "random" (bench_supervisor's)
    seed: int = 0
    verified_bests: bool = True
    deadline_s: float = 0.0  # ask every machine to stop after this long (0: at its limit)
    log_level: str = "error"

    @property
    def scale(self) -> float:
        """Simulated seconds per real second of a 5-minute run."""
        return self.run_s / REAL_RUN_S

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> SimJob:
        raw = json.loads(text)
        raw["machines"] = tuple(MachineSpec(**m) for m in raw["machines"])
        return cls(**raw)


@dataclass(frozen=True, slots=True)
class RunRecord:
    """One training run as the fake GPU saw it."""

    machine: str
    gpu: str
    code_hash: str
    parent_hash: str
    seed: int
    started: float
    ended: float
    val_bpb: float | None  # None: the configuration crashed (OOM, batch divisibility)
    true_bpb: float | None  # noise-free objective of the constants
    confirmation: bool = False  # a second run of a candidate with another seed


@dataclass(slots=True)
class ProcessReport:
    """What one process measured (written as JSON for the parent)."""

    runs: list[RunRecord] = field(default_factory=list)
    publish_s: list[float] = field(default_factory=list)
    claim_s: list[float] = field(default_factory=list)
    calls: Counter[str] = field(default_factory=Counter)
    #: calls by tool and the namespace of their first key ("get locks/exp")
    calls_by_ns: Counter[str] = field(default_factory=Counter)
    counters: dict[str, dict[str, int]] = field(default_factory=dict)
    exit_codes: dict[str, int] = field(default_factory=dict)
    running_at: dict[str, float] = field(default_factory=dict)
    embedded_texts: int = 0
    cpu_s: float = 0.0
    peak_rss_mb: float = 0.0

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["calls"] = dict(self.calls)
        out["calls_by_ns"] = dict(self.calls_by_ns)
        return out

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> ProcessReport:
        raw = dict(raw)
        raw["runs"] = [RunRecord(**r) for r in raw["runs"]]
        raw["calls"] = Counter(raw["calls"])
        raw["calls_by_ns"] = Counter(raw.get("calls_by_ns", {}))
        return cls(**raw)


# --------------------------------------------------------------------------- trainer


class FakeTrainer:
    """The supervisor's ``run_fn``: sleeps ``run_s``, answers with the synthetic objective."""

    def __init__(
        self, objective: ModuleType, run_s: float, machine: str, report: ProcessReport
    ) -> None:
        self.objective = objective
        self.run_s = run_s
        self.machine = machine
        self.report = report

    def _evaluate(self, consts: dict[str, Any]) -> tuple[dict[str, Any] | None, float | None]:
        try:
            measured = self.objective.evaluate(consts)
            true = float(self.objective.evaluate(consts, noise=False)["val_bpb"])
        except self.objective.SyntheticCrash:
            return None, None
        return measured, true

    async def __call__(self, spec: RunSpec) -> RunOutcome:
        started = time.time()
        consts = constants(spec.train_py)
        raw_seed = spec.env.get(SEED_ENV) or consts.get("SEED") or 0
        seed = int(raw_seed) if isinstance(raw_seed, (str, int, float)) else 0
        measured, true = self._evaluate({**consts, "SEED": seed})
        await asyncio.sleep(self.run_s)
        ended = time.time()
        self.report.runs.append(
            RunRecord(
                machine=self.machine,
                gpu=str(spec.gpu),
                code_hash=code_hash(spec.train_py),
                parent_hash=str(spec.meta.get("parent_hash") or ""),
                seed=seed,
                started=started,
                ended=ended,
                val_bpb=None if measured is None else float(measured["val_bpb"]),
                true_bpb=true,
                confirmation=SEED_ENV in spec.env,
            )
        )
        workdir = spec.workdir
        if measured is None:
            return RunOutcome(
                status="crash",
                failure="oom",
                summary=None,
                message="torch.OutOfMemoryError (synthetic)",
                log_path=workdir / "run.log",
                log_tail="CUDA out of memory",
                returncode=1,
                wall_s=ended - started,
                prepare_hash="",
                workdir=workdir,
            )
        summary = Summary(
            val_bpb=float(measured["val_bpb"]),
            training_seconds=spec.budget_s,
            total_seconds=spec.budget_s + 25.0,
            peak_vram_mb=measured["memory_gb"] * 1024,
            mfu_percent=39.8,
            total_tokens_M=measured["total_tokens_M"],
            num_steps=int(measured["num_steps"]),
            num_params_M=measured["num_params_M"],
            depth=int(measured["depth"]),
        )
        return RunOutcome(
            status="ok",
            failure=None,
            summary=summary,
            message="",
            log_path=workdir / "run.log",
            log_tail="",
            returncode=0,
            wall_s=ended - started,
            prepare_hash="",
            workdir=workdir,
        )


# --------------------------------------------------------------------------- backend


class TimedBackend:
    """A memory backend that counts the calls it passes on and times two of them: the
    create of a result (publish) and the create of an experiment lock (claim)."""

    def __init__(self, inner: Any, report: ProcessReport) -> None:
        self._inner = inner
        self._report = report

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def __aenter__(self) -> TimedBackend:
        await self._inner.__aenter__()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._inner.__aexit__(*exc_info)

    async def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        self._report.calls[name] += 1
        first = args[0] if args else ""
        if not isinstance(first, str):
            items = list(first)
            first = items[0] if items else ""
            first = getattr(first, "key", first)
        self._report.calls_by_ns[f"{name} {_namespace(str(first))}"] += 1
        return await getattr(self._inner, name)(*args, **kwargs)

    async def get(self, key_list: Sequence[str]) -> Any:
        return await self._call("get", key_list)

    async def create(self, items: Sequence[NewMemory]) -> Any:
        first = items[0].key if items else ""
        t0 = time.perf_counter()
        out = await self._call("create", items)
        if first.startswith(keys.RESULTS):
            self._report.publish_s.append(time.perf_counter() - t0)
        elif first.startswith(keys.EXPERIMENT_LOCKS):
            self._report.claim_s.append(time.perf_counter() - t0)
        return out

    async def update(self, *args: Any, **kwargs: Any) -> Any:
        return await self._call("update", *args, **kwargs)

    async def delete(self, key_list: Sequence[str]) -> Any:
        return await self._call("delete", key_list)

    async def list_keys(self, prefix: str, **kwargs: Any) -> Any:
        return await self._call("list_keys", prefix, **kwargs)

    async def search(self, *args: Any, **kwargs: Any) -> Any:
        return await self._call("search", *args, **kwargs)

    async def ping(self) -> None:
        await self._call("ping")


def _namespace(key: str) -> str:
    """The namespace of a key for the call counts: ``locks/exp``, ``feed``, ``results``."""
    parts = key.split("/")
    return "/".join(parts[:2]) if parts[0] in ("locks", "best") else parts[0]


# --------------------------------------------------------------------------- machines


def machine_config(job: SimJob, m: MachineSpec, train_py: Path, prepare_py: Path) -> Any:
    """A supervisor's configuration: the protocol's intervals scaled like the run."""
    f = job.scale
    defaults = SwarmConfig()
    return load_config(
        env={},
        flags={
            "state_dir": str(Path(job.work_dir) / m.name),
            "memory.kind": m.memory_kind,
            "memory.url": m.memory_url,
            "memory.path": m.memory_path,
            "train_py": str(train_py),
            "prepare_py": str(prepare_py),
            "prepare_on_start": "false",
            "profile": "standard",
            "budget_s": str(job.run_s),
            "startup_allowance_s": "30",
            "min_free_mb": "1000",
            "start_jitter_s": f"{2.0 * f:g}",
            "agent_name": m.name,
            "max_experiments": str(job.runs_per_gpu * m.gpus),
            # the defaults (lease 300 s, a beat every 100 s) scaled like the run; the lease is
            # kept at 15 s at least: on a loaded 2-core machine a shorter one expires live
            # claims
            "heartbeat_s": f"{max(defaults.heartbeat_s * f, 5.0):g}",
            "lease_s": f"{max(defaults.lease_s * f, 15.0):g}",
            "solo_after_s": f"{600.0 * f:g}",
            "status_interval_s": f"{max(2.0, job.run_s):g}",
            "sandbox": "none",
            "verify_runs": "false",
            "log_level": job.log_level,
            "verified_bests": str(job.verified_bests).lower(),
            "proposer.seed": str(1 + (job.seed * 7919 + _name_number(m.name)) % (2**31 - 2)),
        },
    )


def _name_number(name: str) -> int:
    return sum(ord(c) * 131**i for i, c in enumerate(name)) % (2**31)


def _proposer_factory(job: SimJob, m: MachineSpec) -> Any:
    if job.proposer == "search":
        return None  # the supervisor builds the built-in search proposer
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_supervisor import RandomProposer

    base = _name_number(m.name) + job.seed * 7919
    return lambda index, spec: RandomProposer(seed=base + index)


def build_machine(
    job: SimJob,
    m: MachineSpec,
    objective: ModuleType,
    report: ProcessReport,
    train_py: Path,
    prepare_py: Path,
) -> Supervisor:
    """A real supervisor on fake GPUs with the fake trainer and a timed memory client."""
    inner = (
        open_memory("hub", url=m.memory_url)
        if m.memory_kind == "hub"
        else open_memory("local", path=m.memory_path)
    )
    return Supervisor(
        machine_config(job, m, train_py, prepare_py),
        nvml=FakeNvml.with_gpus(m.gpus, total_mb=81559),
        install_signals=False,
        run_fn=FakeTrainer(objective, job.run_s, m.name, report),
        backend=TimedBackend(inner, report),
        proposer_factory=_proposer_factory(job, m),
        host=f"host-{m.name}",
        env={},
        rng=random.Random(f"{job.seed}-{m.name}"),
    )


def _seed_files(work: Path) -> tuple[Path, Path]:
    """The seed train.py (the synthetic trainer) and an empty prepare.py in ``work``."""
    work.mkdir(parents=True, exist_ok=True)
    train_py = work / "train.py"
    train_py.write_text(SYNTHETIC.read_text(encoding="utf-8"), encoding="utf-8")
    prepare_py = work / "prepare.py"
    prepare_py.write_text("# the fake trainer needs no data\n", encoding="utf-8")
    return train_py, prepare_py


async def _watch_running(sup: Supervisor, name: str, report: ProcessReport) -> None:
    while sup.state == "starting":  # noqa: ASYNC110 (the supervisor has no event for it)
        await asyncio.sleep(0.05)
    report.running_at[name] = time.time()


class _Stopper:
    """Ends a simulation early: at ``deadline_s`` or on SIGTERM every supervisor drains (the
    runs in progress finish and are published); after ``grace_s`` more they are forced, and
    after another ``grace_s`` a supervisor still running is cancelled (exit code -1)."""

    def __init__(self, sups: dict[str, Supervisor], grace_s: float) -> None:
        self.sups = sups
        self.grace_s = grace_s
        self.now = asyncio.Event()
        self.tasks: dict[str, asyncio.Task[int]] = {}

    async def run(self, deadline_s: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.now.wait(), timeout=deadline_s or None)
        for sup in self.sups.values():
            sup.request_stop("the simulation's time is up")
        await asyncio.sleep(self.grace_s)
        for sup in self.sups.values():
            sup.force_stop("the simulation's time is up")
        await asyncio.sleep(self.grace_s)
        for task in self.tasks.values():
            task.cancel()

    def exit_code(self, name: str) -> int:
        return self.tasks[name].result()


async def run_job(job: SimJob) -> ProcessReport:
    """Run every machine of ``job`` to its experiment limit (or its deadline); what they did."""
    configure_logging(job.log_level)
    objective = load_objective()
    report = ProcessReport()
    train_py, prepare_py = await asyncio.to_thread(_seed_files, Path(job.work_dir))
    sups = {
        m.name: build_machine(job, m, objective, report, train_py, prepare_py) for m in job.machines
    }
    stopper = _Stopper(sups, grace_s=max(30.0, 3 * job.run_s))
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopper.now.set)
    async with asyncio.TaskGroup() as tg:
        stop_task = tg.create_task(stopper.run(job.deadline_s))
        stopper.tasks = {
            name: tg.create_task(_guarded(sup.run()), name=f"machine-{name}")
            for name, sup in sups.items()
        }
        for name, sup in sups.items():
            tg.create_task(_watch_running(sup, name, report))
        await asyncio.wait(stopper.tasks.values())
        stop_task.cancel()
    for name, sup in sups.items():
        report.exit_codes[name] = stopper.exit_code(name)
        report.counters[name] = {
            k: int(v) for k, v in asdict(sup.counters.value).items() if isinstance(v, int)
        }
        beacon = sup.memory.beacon if sup.memory is not None else None
        if beacon is not None:
            report.counters[name]["beacon_beats"] = beacon.beats
            report.counters[name]["beacon_failures"] = beacon.failures
            report.counters[name]["beacon_max_gap_ms"] = round(1000 * beacon.max_gap_s)
    report.embedded_texts = get_embedder().calls
    usage = os.times()
    report.cpu_s = usage.user + usage.system
    report.peak_rss_mb = peak_rss_mb("self")
    return report


async def _guarded(run: Any) -> int:
    """A supervisor's exit code; cancelling it (a hung one) does not cancel the others."""
    try:
        return int(await run)
    except asyncio.CancelledError:
        return -1


def peak_rss_mb(pid: int | str) -> float:
    """VmHWM of a process in MiB (nan when /proc cannot tell)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return math.nan


def main(argv: Sequence[str]) -> int:
    if len(argv) != 2:
        sys.stderr.write("usage: swarm_sim.py JOB.json OUT.json\n")
        return 2
    job = SimJob.from_json(Path(argv[0]).read_text(encoding="utf-8"))
    report = asyncio.run(run_job(job))
    Path(argv[1]).write_text(json.dumps(report.to_json()), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
