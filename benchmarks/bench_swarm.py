"""Benchmark: a simulated swarm of N GPUs against one hub, and swarm against solo agents.

Each simulated machine is a real supervisor (``swarm_sim.py``: workers, the built-in search
proposer, the real deduplicator, claims, heartbeats, the outbox, best decisions with
verification, adoption of the swarm's best) on fake GPUs; only training is fake: a run
sleeps ``--run-s`` seconds and reports the synthetic objective of its constants block,
``tests/fixtures/synthetic_train.py``::

    val_bpb = 0.95 + sum over constants of a quadratic bowl in the constant's natural
              space (log2 for rates and batch sizes, units for depth, ...; MATRIX_LR's
              optimum moves with TOTAL_BATCH_SIZE) + offsets of the window pattern and
              head size + Gaussian noise of sd 0.002 seeded by the whole constants block
              (seed included)

It starts at 1.021; its noise-free optimum is 0.948. Configurations a real GPU could not
run (batch not divisible, activations beyond 80 GB) crash as an OOM would.

Time is scaled: a run of ``--run-s`` seconds stands for a 5-minute run, and every interval
of the protocol with it (the default lease of one run and a beat every third of it, solo
verification after two runs, start jitter); the lease is kept at 15 s and the beat at 5 s
at least. Machines are split over
``--procs`` OS processes (asyncio inside), against one ``swarm hub`` process on 127.0.0.1
started here: ``--db`` is handed to ``swarm hub --db`` as given (a SQLite path, or a
database URL where the hub supports one); ``{n}`` in it is replaced by the size, and an
existing database must be empty.

``scale``: for each N (GPUs; machines of ``--gpus-per-machine``), every GPU runs ``--runs``
experiments (or fewer: ``--minutes`` stops every machine after that long; the runs in
progress finish and are published). Printed: claims won per second, publish latency (the create of the result
record, client side) p50/p99, RPCs per experiment (the hub's own tool-call count, start-up
included), claims lost per experiment, duplicate runs (a run of a code hash and seed that
already ran: must be 0), hub CPU seconds and peak RSS (/proc of the hub process), the
stored bytes per experiment, and which dedup layers ran.

``compare``: the same number of GPUs and the same budget of runs, once as a swarm on one
hub and once as independent agents each with its own memory (a SQLite file), over several
seeds. Printed: best-so-far val_bpb against GPU-hours (a run counts as 5 GPU-minutes),
mean and spread over seeds; the noise-free value of the best run; the share of GPU time
spent on duplicates and on verification runs. ``--out DIR`` writes the curves as CSV (and
a PNG when matplotlib is installed).

    python benchmarks/bench_swarm.py                              # both, default sizes
    python benchmarks/bench_swarm.py scale --sizes 50 200 --runs 2
    python benchmarks/bench_swarm.py scale --sizes 1000 --runs 2 --minutes 6
    python benchmarks/bench_swarm.py compare --seeds 5 --out /tmp/swarm-vs-solo
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from swarm import keys
from swarm._logging import configure_logging
from swarm.memory.factory import open_memory
from swarm.records import from_iso

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sim_harness import HubProcess, proc_cpu_s, read_memory, run_jobs
from swarm_sim import (
    MachineSpec,
    ProcessReport,
    RunRecord,
    SimJob,
    load_objective,
    optimum,
    peak_rss_mb,
)

RUN_GPU_H = 5 / 60  # GPU-hours of one simulated run
TIER = "xl"  # FakeNvml's 80 GB GPUs


# --------------------------------------------------------------------------- analysis


def percentile(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def repeats(runs: list[RunRecord]) -> list[RunRecord]:
    """Runs of a code hash and seed that had already started before (duplicates)."""
    seen: set[tuple[str, int]] = set()
    out = []
    for r in sorted(runs, key=lambda r: r.started):
        key = (r.code_hash, r.seed)
        if key in seen:
            out.append(r)
        seen.add(key)
    return out


def repeats_while_running(runs: list[RunRecord]) -> int:
    """Duplicates that started while an earlier run of the same code and seed still ran (a
    claim taken over); the others started after it ended (its lock released or expired)."""
    first: dict[tuple[str, int], RunRecord] = {}
    count = 0
    for r in sorted(runs, key=lambda r: r.started):
        key = (r.code_hash, r.seed)
        if key in first and r.started < first[key].ended:
            count += 1
        first.setdefault(key, r)
    return count


def best_curve(runs: list[RunRecord]) -> list[tuple[float, float, float]]:
    """(GPU-hours, best measured val_bpb so far, noise-free value of that run), a point per
    finished run in order of completion."""
    out: list[tuple[float, float, float]] = []
    best, true = math.inf, math.inf
    for i, r in enumerate(sorted(runs, key=lambda r: r.ended), 1):
        if r.val_bpb is not None and r.val_bpb < best:
            best, true = r.val_bpb, r.true_bpb if r.true_bpb is not None else math.nan
        out.append((i * RUN_GPU_H, best, true))
    return out


def publication_errors(runs: list[RunRecord], published: Any) -> int:
    """Runs not published exactly once (by machine, code hash and seed)."""
    ran = Counter((r.machine, r.code_hash, r.seed) for r in runs)
    pub = Counter((p.agent_id, p.code_hash, p.seed) for p in published)
    return sum(abs(ran[k] - pub[k]) for k in ran.keys() | pub.keys())


def split(
    n_gpus: int, per_machine: int, procs: int, memory: MachineSpec
) -> list[list[MachineSpec]]:
    """Machines of ``per_machine`` GPUs (the last takes the rest), dealt to processes."""
    specs = []
    for i, start in enumerate(range(0, n_gpus, per_machine)):
        name = f"m{i:04d}"
        path = memory.memory_path.replace("{name}", name)
        specs.append(
            MachineSpec(
                name=name,
                gpus=min(per_machine, n_gpus - start),
                memory_kind=memory.memory_kind,
                memory_url=memory.memory_url,
                memory_path=path,
            )
        )
    groups = max(1, min(procs, len(specs)))
    return [specs[i::groups] for i in range(groups)]


def machine_line() -> str:
    load = os.getloadavg()
    return (
        f"{time.strftime('%Y-%m-%d %H:%M')} on {platform.node()} {platform.machine()} "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}, load average "
        f"{load[0]:.1f}"
    )


# --------------------------------------------------------------------------- scale


@dataclass(frozen=True, slots=True)
class ScaleRow:
    n: int
    machines: int
    procs: int
    run_s: float
    runs: int
    window_s: float
    claims_per_s: float
    publish_p50_ms: float
    publish_p99_ms: float
    rpcs_per_exp: float
    lost_per_exp: float
    duplicates: int
    duplicates_overlapping: int
    unpublished: int
    hub_cpu_s: float
    hub_rss_mb: float
    client_cpu_s: float
    bytes_per_exp: float
    db_bytes_per_exp: float
    best_ok: bool | None  # None: verified bests (the best is the mean of its runs)
    failed: int  # supervisors that exited non-zero (or hung and were cancelled)
    embedded: int
    by_tool: dict[str, float]
    kb_by_namespace: dict[str, float]


def auto_run_s(n: int) -> float:
    """Seconds a simulated run lasts at size ``n``: a quarter of a second per GPU, at least 5 s
    and at most 60 s (so that N = 1,000 ends in minutes; two shared cores then saturate)."""
    return min(60.0, max(5.0, n / 4))


async def scale_one(args: argparse.Namespace, n: int, work: Path) -> ScaleRow:
    run_s = args.run_s or auto_run_s(n)
    db = (args.db or str(work / "hub-{n}.sqlite")).replace("{n}", str(n))
    hub_proc = HubProcess(db, work / "hub.log", max_connections=args.hub_max_connections)
    async with hub_proc.running() as hub:
        groups = split(n, args.gpus_per_machine, args.procs, MachineSpec("", 0, "hub", hub.url))
        jobs = [
            SimJob(
                machines=tuple(g),
                work_dir=str(work / f"p{i}"),
                run_s=run_s,
                runs_per_gpu=args.runs,
                proposer=args.proposer,
                seed=args.seed,
                verified_bests=args.verified,
                deadline_s=60 * args.minutes,
            )
            for i, g in enumerate(groups)
        ]
        reports = await run_jobs(jobs, work, timeout_s=args.timeout)
        hub_cpu, hub_rss = proc_cpu_s(hub.pid), peak_rss_mb(hub.pid)
        calls, _ = await hub.tool_calls()
        track = f"standard-budget-{run_s:g}"
        view = await read_memory(url=hub.url, track=track, tier=TIER, sizes=True)
        runs = [r for rep in reports for r in rep.runs]
        if args.trace:
            await trace_duplicates(hub.url, runs, track)
            beacon_failures = sum(
                c.get("beacon_failures", 0) for rep in reports for c in rep.counters.values()
            )
            gaps = sorted(
                c.get("beacon_max_gap_ms", 0) / 1000
                for rep in reports
                for c in rep.counters.values()
            )
            print(
                f"# beacon beats that failed: {beacon_failures}; longest gap between two beats "
                f"per machine: median {percentile(gaps, 50):.1f} s, max {max(gaps, default=0):.1f} s",
                file=sys.stderr,
            )
            by_ns: Counter[str] = sum((rep.calls_by_ns for rep in reports), Counter())
            print(
                "# client calls per experiment: "
                + ", ".join(f"{k} {v / len(runs):.1f}" for k, v in by_ns.most_common()),
                file=sys.stderr,
            )
    window = max(r.ended for r in runs) - min(r.started for r in runs)
    publish = [s for rep in reports for s in rep.publish_s]
    lost = sum(c.get("claims_lost", 0) for rep in reports for c in rep.counters.values())
    oks = [
        r.val_bpb for r in view.results if r.val_bpb is not None and r.status in ("keep", "discard")
    ]
    kept_min = min(
        (r.val_bpb for r in view.results if r.status == "keep" and r.val_bpb is not None),
        default=None,
    )
    db_path = Path(db)
    db_bytes = (
        sum(p.stat().st_size for p in db_path.parent.glob(db_path.name + "*"))
        if db_path.parent.is_dir()
        else math.nan
    )
    total = sum(calls.values())
    return ScaleRow(
        n=n,
        machines=sum(len(g) for g in groups),
        procs=len(groups),
        run_s=run_s,
        runs=len(runs),
        window_s=window,
        claims_per_s=len(runs) / window,
        publish_p50_ms=1000 * percentile(publish, 50),
        publish_p99_ms=1000 * percentile(publish, 99),
        rpcs_per_exp=total / len(runs),
        lost_per_exp=lost / len(runs),
        duplicates=len(repeats(runs)),
        duplicates_overlapping=repeats_while_running(runs),
        unpublished=publication_errors(runs, view.results),
        hub_cpu_s=hub_cpu,
        hub_rss_mb=hub_rss,
        client_cpu_s=sum(rep.cpu_s for rep in reports),
        bytes_per_exp=sum(view.bytes_by_namespace.values()) / len(runs),
        db_bytes_per_exp=db_bytes / len(runs),
        best_ok=None
        if args.verified
        else (
            bool(oks)
            and view.best_val_bpb is not None
            and kept_min is not None
            and abs(view.best_val_bpb - kept_min) < 1e-12
        ),
        embedded=sum(rep.embedded_texts for rep in reports),
        failed=sum(code != 0 for rep in reports for code in rep.exit_codes.values()),
        by_tool={k: v / len(runs) for k, v in sorted(calls.items())},
        kb_by_namespace={
            k: v / 1024 / len(runs) for k, v in sorted(view.bytes_by_namespace.items())
        },
    )


def print_scale_head(args: argparse.Namespace) -> None:
    print(f"bench_swarm scale, {machine_line()}")
    print(
        f"machines of {args.gpus_per_machine} fake GPUs, {args.runs} runs per GPU, "
        f"{args.proposer} proposer, verified bests {'on' if args.verified else 'off'}; "
        "dedup: exact and structural layers (code), semantic layer on (it embeds only "
        "code edits; texts embedded below)"
    )
    print()
    print(
        "| GPUs | machines / processes | run (s) | experiments | claims/s | publish p50 / "
        "p99 (ms) | RPCs / experiment | lost claims / experiment | duplicate runs | "
        "unpublished | hub CPU (s) | hub peak RSS (MiB) | stored KB / experiment |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|", flush=True)


def print_scale_row(r: ScaleRow) -> None:
    print(
        f"| {r.n:,} | {r.machines} / {r.procs} | {r.run_s:g} | {r.runs:,} | "
        f"{r.claims_per_s:.1f} | {r.publish_p50_ms:.1f} / {r.publish_p99_ms:.0f} | "
        f"{r.rpcs_per_exp:.1f} | {r.lost_per_exp:.1f} | {r.duplicates} "
        f"({r.duplicates_overlapping} overlapping) | "
        f"{r.unpublished} | {r.hub_cpu_s:.0f} | {r.hub_rss_mb:.0f} | "
        f"{r.bytes_per_exp / 1024:.1f} ({_file_kb(r.db_bytes_per_exp)}) |",
        flush=True,
    )


def _file_kb(db_bytes_per_exp: float) -> str:
    """The database file's growth per experiment (a PostgreSQL hub has no file here)."""
    if math.isnan(db_bytes_per_exp):
        return "no database file: PostgreSQL"
    return f"file {db_bytes_per_exp / 1024:.1f}"


def print_scale_notes(rows: list[ScaleRow]) -> None:
    print()
    for r in rows:
        tools = ", ".join(f"{k} {v:.1f}" for k, v in r.by_tool.items())
        best = "n/a (verified: the mean of its runs)" if r.best_ok is None else r.best_ok
        print(
            f"N={r.n}: window {r.window_s:.0f} s, {r.failed} supervisor(s) failed, "
            f"client CPU {r.client_cpu_s:.0f} s, "
            f"hub CPU {1000 * r.hub_cpu_s / r.runs:.0f} ms/experiment, texts embedded "
            f"by clients {r.embedded}, best = min over keeps: {best}; per experiment: "
            f"{tools}; stored KB per experiment: "
            + ", ".join(f"{k} {v:.2f}" for k, v in r.kb_by_namespace.items())
        )


def write_scale_json(rows: list[ScaleRow], path: Path) -> None:
    """The scale rows as a JSON list of objects (``--json FILE``; NaN where undefined)."""
    path.write_text(json.dumps([asdict(r) for r in rows], indent=2) + "\n", encoding="utf-8")


async def trace_duplicates(url: str, runs: list[RunRecord], track: str) -> None:
    """Print, for every code hash run more than once with one seed, its runs and the
    history of its experiment and confirmation locks (to stderr)."""
    dup_keys = {(r.code_hash, r.seed) for r in repeats(runs)}
    t0 = min(r.started for r in runs)
    backend = open_memory("hub", url=url)
    async with backend as b:
        for code, seed in sorted(dup_keys):
            mine = sorted(
                (r for r in runs if r.code_hash == code and r.seed == seed), key=lambda r: r.started
            )
            print(f"# duplicate {code[:12]} seed {seed}", file=sys.stderr)
            for r in mine:
                print(
                    f"#   run {r.machine}/{r.gpu} {r.started - t0:7.1f}..{r.ended - t0:7.1f} "
                    f"confirm={r.confirmation} parent={r.parent_hash[:8]}",
                    file=sys.stderr,
                )
            for prefix in (
                keys.experiment_lock_prefix("", code, track=track, tier=TIER),
                keys.confirmation_lock_prefix(mine[0].parent_hash, code, track=track, tier=TIER),
            ):
                infos = await b.list_keys(prefix)
                found = await b.get([i.key for i in infos]) if infos else {}
                for key in sorted(found):
                    rec = json.loads(found[key].value)
                    at = {
                        k: f"{from_iso(rec.get(k)) - t0:.1f}" if rec.get(k) else "-"
                        for k in ("claimed_at", "heartbeat_at", "released_at")
                    }
                    print(
                        f"#   lock {key.removeprefix(prefix)} {prefix.split('/')[1]} "
                        f"{rec.get('agent_id')} {rec.get('status')} claimed {at['claimed_at']} "
                        f"beat {at['heartbeat_at']} released {at['released_at']} "
                        f"result {rec.get('result_key', '')}",
                        file=sys.stderr,
                    )


# --------------------------------------------------------------------------- compare


@dataclass(frozen=True, slots=True)
class Trial:
    mode: str  # "swarm" | "solo"
    seed: int
    curve: list[tuple[float, float, float]]
    runs: int
    duplicate_share: float
    confirm_share: float


async def compare_one(args: argparse.Namespace, seed: int, mode: str, work: Path) -> Trial:
    common = {
        "run_s": args.run_s or 2.0,
        "runs_per_gpu": args.runs,
        "proposer": args.proposer,
        "seed": seed,
        "verified_bests": args.verified,
    }

    async def simulate(memory: MachineSpec) -> list[ProcessReport]:
        groups = split(
            args.agents * args.gpus_per_machine, args.gpus_per_machine, args.procs, memory
        )
        jobs = [
            SimJob(machines=tuple(g), work_dir=str(work / f"p{i}"), **common)
            for i, g in enumerate(groups)
        ]
        return await run_jobs(jobs, work, timeout_s=args.timeout)

    if mode == "swarm":
        async with HubProcess(str(work / "hub.sqlite"), work / "hub.log").running() as hub:
            reports = await simulate(MachineSpec("", 0, "hub", hub.url))
    else:
        reports = await simulate(
            MachineSpec("", 0, "local", memory_path=str(work / "own-{name}.sqlite"))
        )
    runs = [r for rep in reports for r in rep.runs]
    return Trial(
        mode=mode,
        seed=seed,
        curve=best_curve(runs),
        runs=len(runs),
        duplicate_share=len(repeats(runs)) / len(runs),
        confirm_share=sum(r.confirmation for r in runs) / len(runs),
    )


def _at(curve: list[tuple[float, float, float]], gpu_h: float) -> tuple[float, float]:
    """Best measured and its noise-free value after ``gpu_h`` GPU-hours."""
    point = (math.inf, math.inf)
    for h, best, true in curve:
        if h > gpu_h + 1e-9:
            break
        point = (best, true)
    return point


def _mean_sd(values: list[float], digits: int = 4) -> str:
    if len(values) < 2:
        return f"{values[0]:.{digits}f}" if values else "n/a"
    return f"{statistics.fmean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def print_compare(trials: list[Trial], args: argparse.Namespace) -> None:
    budget = min(t.runs for t in trials) * RUN_GPU_H
    print(f"bench_swarm compare, {machine_line()}")
    print(
        f"{args.agents} agents x {args.gpus_per_machine} GPU(s), {args.runs} runs per GPU "
        f"({budget:.1f} GPU-hours of 5-minute runs), {args.proposer} proposer, verified "
        f"bests {'on' if args.verified else 'off'}, seeds {args.seeds}; optimum "
        f"{optimum(load_objective()):.4f} (noise-free); mean ± sd over seeds"
    )
    print()
    marks = [budget * f for f in (0.25, 0.5, 0.75, 1.0)]
    print(
        "| mode | "
        + " | ".join(f"best val_bpb at {h:.1f} GPU-h" for h in marks)
        + " | noise-free value of the final best | GPU time on duplicates | on "
        "verification runs |"
    )
    print("|---|" + "---|" * (len(marks) + 3))
    for mode in ("swarm", "solo"):
        mine = [t for t in trials if t.mode == mode]
        cells = [_mean_sd([_at(t.curve, h)[0] for t in mine]) for h in marks]
        final = _mean_sd([_at(t.curve, budget)[1] for t in mine])
        dup = _mean_sd([100 * t.duplicate_share for t in mine], 1)
        conf = _mean_sd([100 * t.confirm_share for t in mine], 1)
        label = "swarm (one hub)" if mode == "swarm" else "independent agents"
        print(f"| {label} | " + " | ".join(cells) + f" | {final} | {dup} % | {conf} % |")


def write_curves(trials: list[Trial], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    lines = ["mode,seed,gpu_hours,best_val_bpb,best_noise_free"]
    for t in trials:
        lines += [f"{t.mode},{t.seed},{h:.4f},{b:.6f},{v:.6f}" for h, b, v in t.curve]
    (out / "swarm_vs_solo.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(7, 4))
    for t in trials:
        xs = [h for h, b, _ in t.curve if math.isfinite(b)]
        ys = [b for _, b, _ in t.curve if math.isfinite(b)]
        ax.plot(
            xs,
            ys,
            color="tab:blue" if t.mode == "swarm" else "tab:orange",
            alpha=0.6,
            label=f"{t.mode}" if t.seed == 0 else None,
        )
    ax.set_xlabel("GPU-hours (5-minute runs)")
    ax.set_ylabel("best val_bpb so far")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "swarm_vs_solo.png", dpi=120)


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("what", nargs="?", choices=("all", "scale", "compare"), default="all")
    p.add_argument(
        "--sizes", type=int, nargs="+", default=[50, 200, 1000], help="scale: GPUs in the swarm"
    )
    p.add_argument(
        "--gpus-per-machine",
        type=int,
        default=None,
        help="GPUs of one simulated machine (scale: 8, compare: 1)",
    )
    p.add_argument("--procs", type=int, default=8, help="simulating OS processes")
    p.add_argument("--runs", type=int, default=None, help="runs per GPU (scale: 2, compare: 12)")
    p.add_argument(
        "--run-s",
        type=float,
        default=0.0,
        help="seconds per simulated run (0 = scale: N/4 within 5..60; compare: 2)",
    )
    p.add_argument(
        "--db",
        default="",
        help="scale: swarm hub --db (default: a new SQLite "
        "file per size; '{n}' is replaced by the size)",
    )
    p.add_argument("--proposer", choices=("search", "random"), default="search")
    p.add_argument(
        "--no-verified",
        dest="verified",
        action="store_false",
        help="bests move at once (no confirming run by another agent)",
    )
    p.add_argument("--agents", type=int, default=8, help="compare: agents (machines)")
    p.add_argument("--seeds", type=int, default=5, help="compare: seeds")
    p.add_argument("--seed", type=int, default=0, help="scale: seed of the proposers")
    p.add_argument(
        "--minutes",
        type=float,
        default=0.0,
        help="scale: stop every machine "
        "after this long (runs in progress finish; 0 = when all runs are done)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=1800,
        help="seconds per simulation; then its processes are stopped and report what they did",
    )
    p.add_argument(
        "--hub-max-connections",
        type=int,
        default=0,
        help="scale: swarm hub --max-connections (0 = the hub's default, 256; a machine of "
        "8 GPUs holds up to about 10 connections)",
    )
    p.add_argument(
        "--trace",
        action="store_true",
        help="scale: print each duplicate run with its lock history (stderr)",
    )
    p.add_argument("--out", type=Path, help="compare: write CSV (and PNG) here")
    p.add_argument("--json", type=Path, metavar="FILE", help="scale: also write the rows to FILE")
    p.add_argument("--log-level", default="error")
    args = p.parse_args(argv)
    for name in ("sizes", "procs", "runs", "agents", "seeds", "gpus_per_machine"):
        value = getattr(args, name)
        if value is not None and min(value if isinstance(value, list) else [value]) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    return args


async def amain(args: argparse.Namespace) -> int:
    configure_logging(args.log_level)
    if args.what in ("all", "scale"):
        scale = argparse.Namespace(**vars(args))
        scale.gpus_per_machine = args.gpus_per_machine or 8
        scale.runs = args.runs or 2
        rows = []
        print_scale_head(scale)
        for n in args.sizes:
            with tempfile.TemporaryDirectory(prefix=f"bench-swarm-{n}-") as tmp:
                rows.append(await scale_one(scale, n, Path(tmp)))
            print_scale_row(rows[-1])
        print_scale_notes(rows)
        if args.json:
            write_scale_json(rows, args.json)
    if args.what in ("all", "compare"):
        cmp_args = argparse.Namespace(**vars(args))
        cmp_args.gpus_per_machine = args.gpus_per_machine or 1
        cmp_args.runs = args.runs or 12
        cmp_args.procs = min(args.procs, 4)
        trials = []
        for seed in range(args.seeds):
            for mode in ("swarm", "solo"):
                with tempfile.TemporaryDirectory(prefix=f"bench-swarm-{mode}-") as tmp:
                    trials.append(await compare_one(cmp_args, seed, mode, Path(tmp)))
                t = trials[-1]
                print(
                    f"# seed {seed} {mode}: {t.runs} runs, best {t.curve[-1][1]:.4f} "
                    f"(noise-free {t.curve[-1][2]:.4f}), duplicates "
                    f"{100 * t.duplicate_share:.1f} %, verification "
                    f"{100 * t.confirm_share:.1f} %",
                    flush=True,
                )
        if args.what == "all":
            print()
        print_compare(trials, cmp_args)
        if args.out:
            write_curves(trials, args.out)
    return 0


def main(argv: list[str] | None = None) -> int:
    return asyncio.run(amain(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
