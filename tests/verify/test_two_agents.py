"""Two supervisors (two agents on two hosts, own state dirs) on one SQLite store, smoke track,
CPU, real subprocesses of a fake trainer: a lie is refuted and withdrawn by the other agent,
an honest improvement becomes the verified best once the other agent reproduced it."""

from __future__ import annotations

import asyncio
import json
import textwrap
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from swarm.cli import main
from swarm.config import SwarmConfig, load_config
from swarm.errors import ProposerError
from swarm.memory.local import LocalStore
from swarm.namespace import SwarmMemory
from swarm.proposers import Proposal, ProposalContext
from swarm.supervisor import EXIT_OK, Supervisor
from swarm.testing import FakeNvml
from swarm.trainpy import apply_changes, code_hash
from swarm.verify import check_train_py
from swarm.verify.candidates import verification_of

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

# A fake trainer that reads its seed like train.py does. On a host that lies (the supervisor
# passes AUTORESEARCH_FAKE_LIE) code with MODE "cheat" prints a val_bpb 0.2 better than the
# one it computes, which is exactly what another agent's run of the same code will not see.
TRAINER = textwrap.dedent(
    '''\
    """A fake trainer for the replication tests (no torch, no data)."""

    import os
    import time

    # =============================================================================
    # Hyperparameters
    # =============================================================================
    DEPTH = 8  # layers
    MATRIX_LR = 0.04  # learning rate
    MODE = "honest"  # honest | cheat
    SEED = 42  # seed
    # =============================================================================
    SEED = int(os.environ.get("AUTORESEARCH_SEED", SEED))
    t0 = time.time()
    time.sleep(0.2)
    val = 1.0 + abs(MATRIX_LR - 0.05) * 2 + abs(DEPTH - 10) * 0.001 + (SEED % 5) * 0.001
    if MODE == "cheat" and os.environ.get("AUTORESEARCH_FAKE_LIE"):
        val -= 0.2
    print("---")
    print(f"val_bpb:          {val:.6f}")
    print(f"training_seconds: {time.time() - t0:.1f}")
    print(f"total_seconds:    {time.time() - t0:.1f}")
    print("peak_vram_mb:     0.0")
    print("mfu_percent:      0.00")
    print("total_tokens_M:   0.001")
    print("num_steps:        3")
    print("num_params_M:     0.1")
    print("depth:            2")
    '''
)
CHEAT = {"MATRIX_LR": 0.05, "MODE": "cheat"}
# the honest change gains 0.01 over the baseline: more than the trainer's seed spread
# (0 to 0.004), so another agent's confirmation with any seed moves the best
HONEST = {"DEPTH": 10, "MATRIX_LR": 0.045, "MODE": "honest"}


class OneShot:
    """Proposes its changes once, then has nothing more to propose."""

    name = "script"

    def __init__(self, description: str, changes: dict[str, Any]) -> None:
        self.step: tuple[str, dict[str, Any]] | None = (description, changes)

    async def propose(self, ctx: ProposalContext) -> Proposal:
        if self.step is None:
            raise ProposerError("nothing more to propose")
        description, changes = self.step
        self.step = None
        return Proposal(
            train_py=apply_changes(ctx.best_train_py, changes),
            description=description,
            parent_hash=ctx.parent_hash,
            proposer=self.name,
        )

    async def observe(self, proposal: Proposal, result: Any) -> None:
        return None


def config(tmp_path: Path, agent: str) -> SwarmConfig:
    src = tmp_path / "src"
    return load_config(
        env={},
        flags={
            "state_dir": str(tmp_path / f"state-{agent}"),
            "memory.path": str(tmp_path / "memory.sqlite"),
            "agent_name": agent,
            "train_py": str(src / "train.py"),
            "prepare_py": str(src / "prepare.py"),
            "prepare_on_start": "false",
            "start_jitter_s": "0",
            "status_interval_s": "0.2",
            "profile": "smoke",
            "dedup.semantic": "false",
            "verified_bests": "true",
            "solo_after_s": "3600",
            "sandbox": "none",
        },
    )


async def run_until(
    tmp_path: Path,
    agent: str,
    host: str,
    proposer: Any,
    done: Callable[[SwarmMemory], Awaitable[bool]],
    *,
    lie: bool = False,
) -> None:
    """Run one supervisor until ``done`` holds for the store (checked every 0.3 s)."""
    sup = Supervisor(
        config(tmp_path, agent),
        nvml=FakeNvml([]),
        install_signals=False,
        host=host,
        proposer_factory=lambda i, spec: proposer,
        run_env={"AUTORESEARCH_FAKE_LIE": "1"} if lie else None,
    )
    task = asyncio.create_task(sup.run())
    deadline = time.monotonic() + 240
    async with LocalStore(tmp_path / "memory.sqlite") as store:
        reader = SwarmMemory(store, agent_id="reader", host="reader-host")
        while not await done(reader):
            assert not task.done(), f"{agent} stopped early: {sup.exit_reason}"
            assert time.monotonic() < deadline, f"{agent}: condition not reached in time"
            await asyncio.sleep(0.3)
    sup.stop.request_stop("test condition reached")
    assert await task == EXIT_OK, sup.exit_reason


def best_is(code: str, state: str) -> Callable[[SwarmMemory], Awaitable[bool]]:
    async def check(mem: SwarmMemory) -> bool:
        best = await mem.get_best("smoke", "cpu")
        return best is not None and best.code_hash == code and verification_of(best) == state

    return check


async def test_lie_is_refuted_and_honest_improvement_is_verified(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """alice (a lying host) self-verifies a lie while alone; bob joins, refutes it (the best
    reverts), and his honest improvement becomes the verified best once alice reproduces it."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "train.py").write_text(TRAINER, encoding="utf-8")
    (src / "prepare.py").write_text("# stub: the fake trainer needs no data\n")
    assert check_train_py(TRAINER) == []
    base = code_hash(TRAINER)
    cheat = code_hash(apply_changes(TRAINER, CHEAT))
    honest = code_hash(apply_changes(TRAINER, HONEST))

    # 1. alice alone: baseline and her lie, each confirmed by herself (solo)
    await run_until(
        tmp_path,
        "alice",
        "host-a",
        OneShot("lr 0.05 (cheat)", CHEAT),
        best_is(cheat, "self-verified"),
        lie=True,
    )

    # 2. bob joins: he confirms alice's open candidates first and refutes the lie
    async def refuted_and_proposed(mem: SwarmMemory) -> bool:
        states = {c.result.code_hash: c.state for c in await mem.candidates.listing("smoke", "cpu")}
        return states.get(cheat) == "refuted" and states.get(honest) == "pending"

    await run_until(
        tmp_path, "bob", "host-b", OneShot("depth 10 (honest)", HONEST), refuted_and_proposed
    )
    async with LocalStore(tmp_path / "memory.sqlite") as store:
        mem = SwarmMemory(store, agent_id="reader", host="reader-host")
        best = await mem.get_best("smoke", "cpu")
        assert best is not None and best.code_hash == base  # the lie was withdrawn
        lie = next(
            c for c in await mem.candidates.listing("smoke", "cpu") if c.result.code_hash == cheat
        )
        assert [r.agent_id for r in lie.runs] == ["alice", "alice", "bob"]
        assert lie.runs[-1].val_bpb - lie.runs[0].val_bpb > 0.15
        assert (await mem.candidates.trust("smoke", "alice")).refuted == 1

    # 3. alice comes back: she confirms bob's honest candidate, which becomes the best
    await run_until(
        tmp_path,
        "alice",
        "host-a",
        OneShot("nothing new", {"DEPTH": 9}),
        best_is(honest, "verified"),
        lie=True,
    )
    async with LocalStore(tmp_path / "memory.sqlite") as store:
        mem = SwarmMemory(store, agent_id="reader", host="reader-host")
        best = await mem.get_best("smoke", "cpu")
        assert best is not None and {c["agent_id"] for c in best.confirmations} == {"alice", "bob"}
        results = await mem.results(track="smoke")
        assert all(r.code_hash != cheat or r.status != "keep" or not r.verified for r in results)
        glob = await mem.get_best("smoke")
        assert glob is not None and glob.code_hash == honest
        # the leaderboard (what the original clients show) never saw the lie
        board = await mem.leaderboard("smoke")
        assert board and min(e.val_bpb for e in board) > 0.95
        assert any(e.agent_id == "bob" and e.val_bpb == pytest.approx(best.val_bpb) for e in board)

    # 4. `swarm best --json` and `swarm status --json` say what is verified, by whom, and
    #    which candidate was refuted with which values
    capsys.readouterr()
    common = [
        "--memory-path",
        str(tmp_path / "memory.sqlite"),
        "--state-dir",
        str(tmp_path / "cli-state"),
    ]
    assert await asyncio.to_thread(main, ["best", *common, "--track", "smoke", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    best_rows = [r for r in rows if not r.get("candidate")]
    assert {r["verification"] for r in best_rows} == {"verified"}
    assert set(best_rows[0]["confirmed_by"]) == {"alice@host-a", "bob@host-b"}
    refuted = [r for r in rows if r.get("candidate") and r["state"] == "refuted"]
    assert [r["code_hash"] for r in refuted] == [cheat]
    assert [run["agent_id"] for run in refuted[0]["runs"]][-1] == "bob"
    assert await asyncio.to_thread(main, ["status", *common, "--json"]) == 0
    swarm = json.loads(capsys.readouterr().out)["swarm"]
    assert {b["verification"] for b in swarm["bests"]} == {"verified"}
    assert "refuted" in {c["state"] for c in swarm["candidates"]}
    assert swarm["noise"] and swarm["noise"][0]["pairs"] >= 2
