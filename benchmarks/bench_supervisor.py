"""Benchmark: how busy the supervisor keeps its GPUs.

Eight simulated GPUs (swarm.testing.FakeNvml) run a fake trainer that trains for
exactly its budget (``--budget``, default 5 s: it sleeps, then prints a valid summary whose
val_bpb is the synthetic function of its constants block) on the embedded local store,
for ``--minutes`` (default 5). Everything else is the real thing: supervisor, workers,
deduplicator, claims, bests, results files, status snapshot, real subprocesses. The
proposer is ``--proposer search`` (the built-in search proposer, the default: it changes
one constant per proposal, and pairs of constants once the single moves around a parent
were tried) or ``random`` (random changes of 1-3 learning-rate-like constants, an
unbounded space, so the figure measures the supervisor alone).

The runs are timed by an observer around the supervisor's runner (``run_fn``): a run's
span is one call of :func:`swarm.runner.run_experiment`, from the moment the worker hands
it the experiment to the moment the process group is gone -- writing the run directory,
the sandbox set-up, the interpreter start and the imports of train.py, its training, its
exit and the parsing of its summary are all *inside* the span. Reported per GPU and
overall:

* busy fraction = time inside a run span / wall time, the wall time running from the
  GPU's first run to the end of the benchmark (start-up excluded, idle time at the end
  included) -- floor 97 %; also the same with only the trainer's own training time (the
  budget, so without the interpreter start and exit) in the numerator;
* gap between consecutive runs on one GPU (end of a run span to the start of the next):
  p50 (floor 0.5 s) and p99.

    python benchmarks/bench_supervisor.py               # 8 GPUs, 5 minutes, 5 s runs
    python benchmarks/bench_supervisor.py --minutes 1 --gpus 8 --budget 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import random
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from swarm._logging import configure_logging
from swarm.config import load_config
from swarm.proposers import Proposal, ProposalContext, ProposerSpec, build_proposer
from swarm.runner import RunOutcome, RunSpec, run_experiment
from swarm.supervisor import Supervisor
from swarm.testing import FakeNvml
from swarm.trainpy import apply_changes, constants, format_value

REPO = Path(__file__).resolve().parents[1]
SYNTHETIC = REPO / "tests" / "fixtures" / "synthetic_train.py"


def fake_trainer_source() -> str:
    """synthetic_train.py, changed to train (sleep) for exactly AUTORESEARCH_TIME_BUDGET."""
    src = SYNTHETIC.read_text(encoding="utf-8")
    anchor = "    t0 = time.time()\n"
    assert anchor in src, "synthetic_train.py changed: update the benchmark"
    budget = (
        "    budget = float(os.environ.get('AUTORESEARCH_TIME_BUDGET', '5'))\n"
        "    time.sleep(budget)\n"
    )
    src = src.replace(anchor, anchor + budget, 1)
    return src.replace(
        'print(f"training_seconds: {300.0 + (time.time() - t0):.1f}")',
        'print(f"training_seconds: {budget:.1f}")',
    )


class RandomProposer:
    """Random log-scale changes of 1-3 learning-rate-like constants: an unbounded space,
    so the benchmark measures the supervisor, not how soon a search runs out of ideas."""

    name = "random"
    NAMES = ("MATRIX_LR", "EMBEDDING_LR", "UNEMBEDDING_LR", "SCALAR_LR", "WEIGHT_DECAY")

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    async def propose(self, ctx: ProposalContext) -> Proposal:
        old = constants(ctx.best_train_py)
        names = self.rng.sample(self.NAMES, self.rng.randint(1, 3))
        changes = {n: float(f"{old[n] * math.exp(self.rng.gauss(0, 0.3)):.4g}") for n in names}
        desc = ", ".join(
            f"{n} {format_value(old[n])} → {format_value(v)}" for n, v in changes.items()
        )
        return Proposal(
            train_py=apply_changes(ctx.best_train_py, changes),
            description=desc,
            parent_hash=ctx.parent_hash,
            proposer=self.name,
        )

    async def observe(self, proposal: Proposal, result: Any) -> None:
        return None


class RunTimer:
    """Observes the runs of the supervisor through its runner: (start, end) monotonic
    spans per GPU index (see the module docstring for what a span includes)."""

    def __init__(self) -> None:
        self.spans: dict[str, list[tuple[float, float]]] = {}

    async def run(self, spec: RunSpec) -> RunOutcome:
        t0 = time.monotonic()
        try:
            return await run_experiment(spec)
        finally:
            self.spans.setdefault(spec.gpu or "cpu", []).append((t0, time.monotonic()))


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    pos = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[pos]


async def bench(args: argparse.Namespace, work: Path) -> dict[str, object]:
    train = work / "train.py"
    train.write_text(fake_trainer_source(), encoding="utf-8")
    prepare = work / "prepare.py"
    prepare.write_text("# the fake trainer needs no data\n", encoding="utf-8")
    cfg = load_config(
        env={},
        flags={
            "state_dir": str(work / "state"),
            "memory.path": str(work / "memory.sqlite"),
            "train_py": str(train),
            "prepare_py": str(prepare),
            "prepare_on_start": "false",
            # the stand-in reads its own constants through globals(), which the static check
            # refuses; this benchmark measures the supervisor, not the checks
            "verify_runs": "false",
            "profile": "standard",
            "budget_s": str(args.budget),
            "startup_allowance_s": "30",
            "min_free_mb": "1000",
            "start_jitter_s": "1",
            "agent_name": "bench",
        },
    )

    def factory(index: int, spec: ProposerSpec) -> Any:
        if args.proposer == "random":
            return RandomProposer(seed=index)
        return build_proposer(spec)

    timer = RunTimer()
    sup = Supervisor(
        cfg,
        nvml=FakeNvml.with_gpus(args.gpus),
        install_signals=False,
        proposer_factory=factory,
        run_fn=timer.run,
    )
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    task = asyncio.create_task(sup.run())
    t_start = time.monotonic()
    await asyncio.sleep(args.minutes * 60)
    t_stop = time.monotonic()
    sup.request_stop("benchmark over")
    code = await task
    total = time.monotonic() - t_start
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    # the supervisor's own CPU time (all its threads, start-up included; not the trainers)
    sup_cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)

    rows = []
    gaps: list[float] = []
    busy_fracs: list[float] = []
    window_fracs: list[float] = []
    train_fracs: list[float] = []
    for w in sup.workers:
        spans = timer.spans.get(str(w.gpu_index), [])
        if len(spans) < 2:
            rows.append({"gpu": w.gpu_index, "runs": len(spans)})
            window_fracs.append(0.0)
            continue
        # whole window: from this GPU's first run to the end of the benchmark (idle time
        # after the last run counts against it); runs still going at the end count to there
        window = t_stop - spans[0][0]
        in_window = sum(max(0.0, min(b, t_stop) - a) for a, b in spans if a < t_stop)
        wall = spans[-1][1] - spans[0][0]
        busy = sum(b - a for a, b in spans)
        w_gaps = [spans[i + 1][0] - spans[i][1] for i in range(len(spans) - 1)]
        gaps.extend(w_gaps)
        busy_fracs.append(busy / wall)
        window_fracs.append(in_window / window)
        # the trainer's own training time: its budget per run (pro rata for a run cut by
        # the end of the window)
        trained = sum(
            args.budget * max(0.0, min(1.0, (t_stop - a) / (b - a))) for a, b in spans if b > a
        )
        train_fracs.append(trained / window)
        rows.append(
            {
                "gpu": w.gpu_index,
                "runs": len(spans),
                "window_s": round(window, 1),
                "busy": round(in_window / window, 4),
                "training": round(trained / window, 4),
                "gap_p50_s": round(percentile(w_gaps, 50), 3),
                "gap_p99_s": round(percentile(w_gaps, 99), 3),
            }
        )
    c = sup.counters.value
    return {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}",
        "gpus": args.gpus,
        "budget_s": args.budget,
        "minutes": args.minutes,
        "exit_code": code,
        "elapsed_s": round(total, 1),
        "experiments": c.done,
        "kept": c.kept,
        "crashed": c.crashed,
        "duplicates_skipped": c.duplicates_skipped,
        "claims_lost": c.claims_lost,
        "proposer": args.proposer,
        "busy_fraction_mean": round(statistics.fmean(window_fracs), 4) if window_fracs else None,
        "busy_fraction_min": round(min(window_fracs), 4) if window_fracs else None,
        "busy_first_to_last_run": round(statistics.fmean(busy_fracs), 4) if busy_fracs else None,
        "training_fraction_mean": round(statistics.fmean(train_fracs), 4) if train_fracs else None,
        "gap_p50_s": round(percentile(gaps, 50), 3),
        "gap_p99_s": round(percentile(gaps, 99), 3),
        "supervisor_cpu_s": round(sup_cpu, 1),
        "supervisor_cpu_ms_per_experiment": round(1000 * sup_cpu / max(1, c.done)),
        "load_average_1m": round(os.getloadavg()[0], 1),
        "per_gpu": rows,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gpus", type=int, default=8)
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--budget", type=float, default=5.0, help="seconds per fake run")
    parser.add_argument(
        "--proposer",
        choices=("random", "search"),
        default="search",
        help="search: the built-in search proposer (default); random: unbounded "
        "random changes (measures the supervisor alone)",
    )
    parser.add_argument("--log-level", default="warning")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON only")
    args = parser.parse_args()
    configure_logging(args.log_level)
    with tempfile.TemporaryDirectory(prefix="bench-supervisor-") as tmp:
        out = asyncio.run(bench(args, Path(tmp)))
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(f"bench_supervisor {out['date']} on {out['machine']}")
    print(
        f"{out['gpus']} simulated GPUs, {out['budget_s']:g} s runs, {out['minutes']:g} min, "
        f"{out['proposer']} proposer: "
        f"{out['experiments']} experiments ({out['kept']} kept, "
        f"{out['duplicates_skipped']} duplicates skipped, {out['claims_lost']} claims lost)"
    )
    print(
        f"GPU busy fraction (inside the runner, interpreter start included; whole window): mean {out['busy_fraction_mean']}, "
        f"min {out['busy_fraction_min']} (floor 0.97); first-to-last run "
        f"{out['busy_first_to_last_run']}; training time only {out['training_fraction_mean']}"
    )
    print(f"gap between runs: p50 {out['gap_p50_s']} s (floor 0.5 s), p99 {out['gap_p99_s']} s")
    print(
        f"supervisor process CPU: {out['supervisor_cpu_s']} s, "
        f"{out['supervisor_cpu_ms_per_experiment']} ms per experiment "
        f"(load average at the end {out['load_average_1m']} on {os.cpu_count()} CPUs)"
    )
    for row in out["per_gpu"]:  # type: ignore[union-attr]
        print("  ", row)
    ok = (out["busy_fraction_mean"] or 0) >= 0.97 and out["gap_p50_s"] <= 0.5  # type: ignore[operator]
    print("floors met" if ok else "FLOORS NOT MET")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
