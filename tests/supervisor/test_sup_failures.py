"""Failing experiments are results: classified, published, and the worker goes on."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sup_helpers import ScriptedProposer

import swarm.supervisor as supervisor_module
from swarm.memory.local import LocalStore
from swarm.namespace import SwarmMemory
from swarm.outbox import OUTBOX_NAME, Outbox
from swarm.proposers import ProposerSpec, build_proposer
from swarm.results_log import ResultsLog
from swarm.status import read_snapshot
from swarm.supervisor import EXIT_OK, Supervisor
from swarm.testing import FakeNvml
from swarm.trainpy import constants
from swarm.worker import BASELINE_DESCRIPTION


async def _results(path: Path) -> list[Any]:
    async with LocalStore(path) as store:
        return await SwarmMemory(store, agent_id="reader").results()


@pytest.mark.slow
async def test_crash_nan_hang_and_no_summary_are_published_and_the_worker_goes_on(
    fake_sources: Callable[..., tuple[Path, Path]],
    make_config: Callable[..., Any],
    tmp_path: Path,
) -> None:
    """Crash, NaN, a hang past the deadline and a missing summary are each classified and
    published; the worker keeps going and the good run after them is judged normally."""
    train, prepare = fake_sources()
    cfg = make_config(
        train_py=train,
        prepare_py=prepare,
        profile="smoke",
        max_experiments=6,
        budget_s=1,
        startup_allowance_s=1.5,
        kill_grace_s=0.5,
        **{"dedup.semantic": "false"},
    )
    script = ScriptedProposer(
        [
            ("MODE ok → crash", {"MODE": "crash", "DEPTH": 9}),
            ("MODE ok → nan", {"MODE": "nan", "DEPTH": 10}),
            ("MODE ok → hang", {"MODE": "hang", "DEPTH": 11}),
            ("MODE ok → nosummary", {"MODE": "nosummary", "DEPTH": 12}),
            ("MATRIX_LR 0.04 → 0.05", {"MATRIX_LR": 0.05}),
        ]
    )
    sup = Supervisor(
        cfg, nvml=FakeNvml([]), install_signals=False, proposer_factory=lambda i, spec: script
    )
    code = await sup.run()
    assert code == EXIT_OK
    assert sup.cpu_mode and len(sup.workers) == 1

    by_desc = {r.description: r for r in await _results(cfg.memory_file())}
    assert set(by_desc) == {
        BASELINE_DESCRIPTION,
        "MODE ok → crash",
        "MODE ok → nan",
        "MODE ok → hang",
        "MODE ok → nosummary",
        "MATRIX_LR 0.04 → 0.05",
    }
    outcomes = {d: (r.status, r.failure) for d, r in by_desc.items()}
    assert outcomes["MODE ok → crash"] == ("crash", "exception")
    assert outcomes["MODE ok → nan"] == ("crash", "nan")
    assert outcomes["MODE ok → hang"] == ("timeout", "timeout")
    assert outcomes["MODE ok → nosummary"] == ("crash", "no_summary")
    assert outcomes[BASELINE_DESCRIPTION] == ("keep", None)
    # 1.0 + |0.05 - 0.05| * 2 + 0.002 beats the baseline's 1.0 + 0.02 + 0.002
    assert outcomes["MATRIX_LR 0.04 → 0.05"] == ("keep", None)
    assert "fake trainer exploded" in by_desc["MODE ok → crash"].log_tail
    assert constants(by_desc["MODE ok → crash"].train_py)["MODE"] == "crash"  # full source
    for r in by_desc.values():
        assert r.track == "smoke-budget-1" and r.vram_tier == "cpu" and r.agent_id == "tester"

    c = sup.counters.value
    assert (c.done, c.kept, c.crashed, c.timeouts) == (6, 2, 3, 1)
    rows = ResultsLog(cfg.state_dir).read_jsonl()
    assert sorted(r["description"] for r in rows) == sorted(by_desc)
    assert len(script.observed) == 6  # the proposer learns from every result, baseline too


async def test_memory_claims_released_and_best_is_the_minimum(
    fake_sources: Callable[..., tuple[Path, Path]],
    make_config: Callable[..., Any],
) -> None:
    """After a run on two fake GPUs no claim is left live, each tier best is the lowest keep,
    and every non-baseline result with a metric carries its delta to the parent."""
    train, prepare = fake_sources()
    cfg = make_config(
        train_py=train,
        prepare_py=prepare,
        profile="smoke",
        max_experiments=6,
        **{"dedup.semantic": "false"},
    )
    sup = Supervisor(cfg, nvml=FakeNvml.with_gpus(2), install_signals=False)
    assert await sup.run() == EXIT_OK
    assert [w.gpu_index for w in sup.workers] == [0, 1]
    async with LocalStore(cfg.memory_file()) as store:
        memory = SwarmMemory(store, agent_id="reader")
        assert await memory.live_claims() == []
        results = await memory.results(track="smoke")
        best = await memory.get_best("smoke", "xl")
    assert len(results) == 6
    keeps = [r.val_bpb for r in results if r.status == "keep"]
    assert best is not None and best.val_bpb == min(keeps)
    assert best.val_bpb == min(r.val_bpb for r in results if r.val_bpb is not None)
    by_code = {r.code_hash: r for r in results}
    for r in results:
        parent = by_code.get(r.parent_hash)
        parent_val = parent.val_bpb if parent is not None else None
        if (
            r.val_bpb is not None
            and parent_val is not None
            and r.parent_hash != r.code_hash
            and parent.completed_at < r.completed_at
        ):  # parent finished first
            assert r.delta is not None, r.description
            assert r.delta == pytest.approx(r.val_bpb - parent_val, abs=1e-9), r.description
    # all but the baseline and the one run that trained beside it on the other GPU
    assert sum(r.delta is not None for r in results) >= len(results) - 2


class _SlowProposer:
    """A proposer that never answers in time (a stuck LLM or agent)."""

    name = "agent"

    def __init__(self) -> None:
        self.calls = 0

    async def propose(self, ctx: Any) -> Any:
        self.calls += 1
        await asyncio.sleep(3600)

    async def observe(self, proposal: Any, result: Any) -> None:
        return None


@pytest.mark.slow
async def test_a_slow_proposer_never_idles_the_gpu(
    fake_sources: Callable[..., tuple[Path, Path]],
    make_config: Callable[..., Any],
) -> None:
    """When the configured proposer has nothing ready, the built-in search fills in after
    proposer.idle_fallback_s, so experiments keep flowing."""
    train, prepare = fake_sources()
    cfg = make_config(
        train_py=train,
        prepare_py=prepare,
        profile="smoke",
        max_experiments=3,
        **{
            "dedup.semantic": "false",
            "proposer.kind": "agent",
            "proposer.agent_cmd": "never-called {prompt_file}",
            "proposer.idle_fallback_s": 0.3,
        },
    )
    slow = _SlowProposer()

    def factory(index: int, spec: ProposerSpec) -> Any:
        return build_proposer(spec) if spec.kind == "search" else slow

    sup = Supervisor(cfg, nvml=FakeNvml([]), install_signals=False, proposer_factory=factory)
    assert await asyncio.wait_for(sup.run(), timeout=60) == EXIT_OK
    results = await _results(cfg.memory_file())
    assert len(results) == 3
    assert {r.proposer for r in results} == {"baseline", "search"}
    assert slow.calls >= 1


@pytest.mark.slow
async def test_unreachable_memory_keeps_training_and_saves_results_locally(
    fake_sources: Callable[..., tuple[Path, Path]],
    make_config: Callable[..., Any],
) -> None:
    """With the hub down the worker still trains (offline claim), writes results.tsv, and
    keeps the unpublished result in the durable outbox for a later replay."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once the socket is closed
    train, prepare = fake_sources()
    cfg = make_config(
        train_py=train,
        prepare_py=prepare,
        profile="smoke",
        max_experiments=1,
        **{
            "dedup.semantic": "false",
            "memory.kind": "hub",
            "memory.url": f"http://127.0.0.1:{port}/",
        },
    )
    sup = Supervisor(cfg, nvml=FakeNvml([]), install_signals=False)
    assert await asyncio.wait_for(sup.run(), timeout=240) == EXIT_OK
    rows = ResultsLog(cfg.state_dir).read_jsonl()
    assert [(r["description"], r["status"]) for r in rows] == [("baseline", "keep")]
    pending = Outbox(cfg.state_dir / OUTBOX_NAME).pending("result")
    assert [e.result.description for e in pending if e.result] == ["baseline"]


@pytest.mark.slow
async def test_a_lost_gpu_is_quarantined_and_the_others_go_on(
    fake_sources: Callable[..., tuple[Path, Path]],
    make_config: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A GPU that falls off the bus fails three readiness checks, is quarantined and shown
    so; the other GPU does all the experiments."""
    train, prepare = fake_sources()
    cfg = make_config(
        train_py=train,
        prepare_py=prepare,
        profile="smoke",
        max_experiments=4,
        **{"dedup.semantic": "false"},
    )
    nvml = FakeNvml.with_gpus(2)
    sup = Supervisor(cfg, nvml=nvml, install_signals=False)
    build_workers = supervisor_module.build_workers

    def build_then_lose(*args: Any, **kwargs: Any) -> Any:
        workers = build_workers(*args, **kwargs)
        nvml.lose(1)  # detected at start, gone before any worker runs
        return workers

    monkeypatch.setattr(supervisor_module, "build_workers", build_then_lose)
    assert await sup.run() == EXIT_OK
    w0, w1 = sup.workers
    assert w1.status.state == "quarantined" and w1.runs == 0
    assert w0.runs == 4
    snap = read_snapshot(cfg.state_dir)
    assert snap is not None and snap.workers[1].state == "quarantined"
    assert "lost" in snap.workers[1].detail.lower()
