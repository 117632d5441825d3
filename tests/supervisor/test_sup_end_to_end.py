"""End to end on CPU: two fake GPUs, the real smoke train.py in real subprocesses, the
embedded store; results in memory, results.tsv and results.jsonl agree, the best moves only
on improvement, and the status snapshot shows it."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from swarm.memory.local import LocalStore
from swarm.namespace import SwarmMemory
from swarm.results_log import ResultsLog
from swarm.status import read_snapshot
from swarm.supervisor import EXIT_OK, Supervisor, data_ready
from swarm.testing import FakeNvml
from swarm.trainpy import code_hash
from swarm.worker import BASELINE_DESCRIPTION

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.timeout(900)
async def test_two_fake_gpus_run_the_real_smoke_trainer(
    make_config: Callable[..., Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Four real smoke experiments on two simulated GPUs, published and consistent everywhere."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("AUTORESEARCH_CACHE", str(cache))
    assert not data_ready("smoke")
    cfg = make_config(
        train_py=REPO / "train.py",
        prepare_py=REPO / "prepare.py",
        profile="smoke",
        max_experiments=4,
        budget_s=2,
        startup_allowance_s=400,
        prepare_on_start="true",
        agent_name="",  # a codename is generated and kept in the state dir
    )
    sup = Supervisor(cfg, nvml=FakeNvml.with_gpus(2, total_mb=24564), install_signals=False)
    code = await sup.run()
    assert code == EXIT_OK, sup.exit_reason
    assert data_ready("smoke")  # the supervisor ran prepare.py once

    agent = (cfg.state_dir / "agent_name").read_text().strip()
    async with LocalStore(cfg.memory_file()) as store:
        memory = SwarmMemory(store, agent_id="reader")
        # a 2 s budget is a track of its own, never compared with the smoke track's bests
        results = await memory.results(track="smoke-budget-2")
        best = await memory.get_best("smoke-budget-2", "medium")
        assert await memory.results(track="smoke") == []
        claims = await memory.live_claims()
    assert len(results) == 4
    assert claims == []
    assert {r.agent_id for r in results} == {agent}
    assert {r.vram_tier for r in results} == {"medium"}  # 24 GB fake GPUs
    assert {r.gpu_name for r in results} == {"NVIDIA H100 80GB HBM3"}
    baseline = [r for r in results if r.description == BASELINE_DESCRIPTION]
    assert len(baseline) == 1
    assert baseline[0].code_hash == code_hash((REPO / "train.py").read_text())
    for r in results:
        assert r.train_py and code_hash(r.train_py) == r.code_hash  # full source published
        assert r.status in ("keep", "discard", "crash", "timeout")
        if r.status in ("keep", "discard"):
            assert r.val_bpb is not None and r.val_bpb > 0.5

    # results.tsv and results.jsonl hold exactly what the memory holds
    rows = ResultsLog(cfg.state_dir).read_jsonl()
    assert sorted(r["key"] for r in rows) == sorted(r.key for r in results)
    by_key = {r.key: r for r in results}
    for row in rows:
        r = by_key[row["key"]]
        assert (row["status"], row["val_bpb"], row["description"]) == (
            r.status,
            r.val_bpb,
            r.description,
        )
    tsv = (cfg.state_dir / "results.tsv").read_text(encoding="utf-8").splitlines()
    assert tsv[0].split("\t") == ["commit", "val_bpb", "memory_gb", "status", "description"]
    assert sorted(line.split("\t")[4] for line in tsv[1:]) == sorted(r.description for r in results)

    # the best moved only on improvement: keeps in publication order strictly improve,
    # and the best is the lowest keep
    keeps = sorted((r for r in results if r.status == "keep"), key=lambda r: r.completed_at or 0.0)
    assert keeps, "the baseline (or a better run) must have become the best"
    vals = [r.val_bpb for r in keeps]
    assert all(b < a for a, b in itertools.pairwise(vals)), vals
    assert best is not None and best.val_bpb == vals[-1]
    for r in results:
        if r.status != "discard":
            continue
        # a discard never beat the best it was judged against -- unless the namespace's
        # sanity bound (no single improvement above 0.1) refused it. A keep that finished a
        # moment later may have been judged first (two workers), hence the window.
        before = [k.val_bpb for k in keeps if k.completed_at < r.completed_at]
        window = [k.val_bpb for k in keeps if k.completed_at < r.completed_at + 2.0]
        assert window, "a discard before any best"
        explained = (
            r.val_bpb >= min(window)
            or (before and r.val_bpb >= min(before))
            or (before and min(before) - r.val_bpb > 0.1)
        )
        assert explained, (r.val_bpb, before, window)

    # the snapshot reflects it
    snap = read_snapshot(cfg.state_dir)
    assert snap is not None and snap.state == "stopped" and snap.track == "smoke-budget-2"
    assert snap.agent_id == agent
    assert [w.gpu_index for w in snap.workers] == [0, 1]
    assert snap.counters.done == 4
    assert snap.counters.kept == len(keeps)
    last_keys = {w.last_result.key for w in snap.workers if w.last_result}
    assert last_keys and last_keys <= set(by_key)
