"""benchmarks/bench_swarm.py at toy size: real supervisors in two processes against a real hub
(SQLite), the fake trainer on the synthetic objective; what the benchmark's figures rest on."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from benchmarks import bench_swarm
from benchmarks.bench_swarm import HubProcess, MachineSpec, RunRecord, SimJob, read_memory, run_jobs


def _run(code: str, started: float, seed: int = 42, val: float | None = 1.0) -> RunRecord:
    return RunRecord(
        machine="m",
        gpu="0",
        code_hash=code,
        parent_hash="",
        seed=seed,
        started=started,
        ended=started + 1,
        val_bpb=val,
        true_bpb=val,
    )


def test_repeats_count_every_later_run_of_the_same_code_and_seed() -> None:
    """A code hash run twice with one seed is one duplicate; another seed is not."""
    runs = [_run("a", 0), _run("b", 1), _run("a", 2), _run("a", 3, seed=7), _run("a", 4)]
    assert [r.started for r in bench_swarm.repeats(runs)] == [2, 4]
    overlapping = [_run("a", 0), _run("a", 0.5), _run("a", 5)]  # runs last 1 s
    assert bench_swarm.repeats_while_running(overlapping) == 1


def test_best_curve_keeps_the_lowest_measured_value_per_gpu_hour() -> None:
    """Best-so-far never rises; crashed runs (no val_bpb) only add GPU time."""
    runs = [
        _run("a", 0, val=1.0),
        _run("b", 1, val=None),
        _run("c", 2, val=0.99),
        _run("d", 3, val=1.2),
    ]
    curve = bench_swarm.best_curve(runs)
    assert [round(h * 12) for h, _, _ in curve] == [1, 2, 3, 4]
    assert [b for _, b, _ in curve] == [1.0, 1.0, 0.99, 0.99]


def test_split_deals_machines_of_n_gpus_to_processes() -> None:
    """50 GPUs in machines of 8: six of 8 and one of 2, over at most the processes asked."""
    groups = bench_swarm.split(50, 8, 4, MachineSpec("", 0, "local", memory_path="x-{name}"))
    machines = [m for g in groups for m in g]
    assert len(groups) == 4
    assert sorted(m.gpus for m in machines) == [2, 8, 8, 8, 8, 8, 8]
    assert len({m.memory_path for m in machines}) == 7


def test_bad_counts_are_usage_errors() -> None:
    """--seeds 0 exits 2 naming the option."""
    with pytest.raises(SystemExit) as exc:
        bench_swarm.parse_args(["compare", "--seeds", "0"])
    assert exc.value.code == 2


@pytest.mark.slow
async def test_toy_swarm_runs_nothing_twice_and_publishes_every_run(tmp_path: Path) -> None:
    """4 one-GPU machines in 2 processes, 5 runs each, on one hub: every machine first races
    for the baseline (exactly one runs it), no code and seed runs twice, every run is
    published exactly once, and the hub's best is the lowest val_bpb of any run."""
    async with HubProcess(str(tmp_path / "hub.sqlite"), tmp_path / "hub.log").running() as hub:
        hub_spec = MachineSpec("", 0, "hub", hub.url)
        groups = bench_swarm.split(4, 1, 2, hub_spec)
        jobs = [
            SimJob(
                machines=tuple(g),
                work_dir=str(tmp_path / f"p{i}"),
                run_s=1.0,
                runs_per_gpu=5,
                proposer="random",
                verified_bests=False,
            )
            for i, g in enumerate(groups)
        ]
        reports = await run_jobs(jobs, tmp_path, timeout_s=300)
        calls, _ = await hub.tool_calls()
        view = await read_memory(url=hub.url, track="standard-budget-1", tier=bench_swarm.TIER)
    runs = [r for rep in reports for r in rep.runs]
    assert len(groups) == 2 and len(runs) == 20
    assert all(code == 0 for rep in reports for code in rep.exit_codes.values())
    baseline = bench_swarm.load_objective().block_constants()
    assert sum(r.parent_hash == "" for r in runs) == 1, "the baseline ran more than once"
    assert math.isclose(
        min(r.true_bpb for r in runs if r.parent_hash == "") or 0,
        bench_swarm.load_objective().evaluate(baseline, noise=False)["val_bpb"],
    )
    assert bench_swarm.repeats(runs) == []
    assert bench_swarm.publication_errors(runs, view.results) == 0
    assert len(view.results) == 20
    measured = [r.val_bpb for r in runs if r.val_bpb is not None]
    assert view.best_val_bpb == min(measured)
    assert min(r.val_bpb for r in view.results if r.status == "keep") == min(measured)
    assert sum(calls.values()) > 20 and calls["create_memory"] >= 20
    assert all(len(rep.publish_s) >= 1 for rep in reports)
