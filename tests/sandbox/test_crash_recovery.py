"""kill -9 of the supervisor: nothing of the run survives, and the next start neither loses
the run nor skips the baseline because of its own stale claim; a run that finished while no
supervisor watched is published exactly once."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from sandbox_helpers import write_trainer

from swarm.config import load_config
from swarm.memory.local import LocalStore
from swarm.namespace import SwarmMemory
from swarm.recovery import FINISHED_NAME, RunMeta
from swarm.status import read_snapshot
from swarm.supervisor import EXIT_OK, Supervisor
from swarm.trainpy import code_hash

REPO = Path(__file__).resolve().parents[2]


def _cli(
    tmp_path: Path, train: Path, prepare: Path, sleep_s: float, *extra: str, mech: str = "bwrap"
) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWARM_")}
    env["AUTORESEARCH_TEST_SLEEP"] = str(sleep_s)
    cmd = [
        sys.executable,
        "-m",
        "swarm",
        "--log-level",
        "info",
        "run",
        "--profile",
        "smoke",
        "--state-dir",
        str(tmp_path / "state"),
        "--memory-path",
        str(tmp_path / "mem.sqlite"),
        "--agent-name",
        "crash-tester",
        "--sandbox",
        mech,
        "--set",
        f"train_py={train}",
        "--set",
        f"prepare_py={prepare}",
        "--set",
        "prepare_on_start=false",
        "--set",
        "start_jitter_s=0",
        "--set",
        "status_interval_s=0.2",
        "--set",
        "dedup.semantic=false",
        "--set",
        "kill_grace_s=1",
        # the stand-in leaves a grandchild behind on purpose: the static check would refuse
        # it before it runs, and this test is about containing what runs
        "--set",
        "verify_runs=false",
        *extra,
    ]
    return subprocess.Popen(
        cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def _matching(needle: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if needle.encode() in cmd and state not in ("Z", "X"):
            found.append(int(entry.name))
    return found


async def _results(path: Path) -> list[Any]:
    async with LocalStore(path) as store:
        return await SwarmMemory(store, agent_id="reader").results()


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("mech", ["bwrap", "unshare"])
def test_kill9_contains_the_run_and_restart_runs_the_baseline(tmp_path: Path, mech: str) -> None:
    """After kill -9 of `swarm run` mid-training, no process of the run is alive 5 s later;
    the restart re-claims its own baseline (claim still live) and runs it to a result."""
    marker = str(time.time_ns())
    train, prepare = write_trainer(tmp_path, marker)
    state = tmp_path / "state"
    proc = _cli(tmp_path, train, prepare, 60.0, mech=mech)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        snap = read_snapshot(state)
        if snap and any(w.state == "training" for w in snap.workers) and _matching(marker):
            break
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        time.sleep(0.1)
    else:
        proc.kill()
        pytest.fail("never trained")
    assert read_snapshot(state).sandbox.startswith(mech)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    time.sleep(5)
    assert _matching(marker) == [], "a process of the run outlived the supervisor"
    assert _matching(str(state)) == [], "a sandbox process outlived the supervisor"

    again = _cli(tmp_path, train, prepare, 0.5, "--max-experiments", "1", mech=mech)
    out, _ = again.communicate(timeout=120)
    assert again.returncode == EXIT_OK, out[-3000:]
    results = asyncio.run(_results(tmp_path / "mem.sqlite"))
    assert [(r.description, r.status, r.sandbox) for r in results] == [
        ("baseline", "keep", mech)
    ], out[-6000:]
    assert results[0].wall_s is not None and results[0].wall_s >= results[0].training_seconds
    assert "leftover_run_abandoned" in out
    assert "claim_taken_over" in out
    runs = sorted((state / "runs").iterdir())
    assert len(runs) == 2 and all((r / FINISHED_NAME).is_file() for r in runs)


def _leftover(state: Path, train_src: str, description: str, agent: str, host: str) -> Path:
    """A scratch dir as a crash leaves it: run.json, sources, a complete run.log."""
    work = state / "runs" / "20261127-000000-w0-leftover"
    (work / "src").mkdir(parents=True)
    (work / "src" / "train.py").write_text(train_src)
    (work / "src" / "prepare.py").write_text("# stub\n")
    meta = RunMeta(
        agent_id=agent,
        host=host,
        track="smoke",
        tier="cpu",
        gpu_name="cpu",
        description=description,
        parent_hash="",
        code_hash=code_hash(train_src),
        proposer="search",
        sandbox="bwrap",
    )
    (work / "run.json").write_bytes(orjson.dumps(meta.to_json()))
    (work / "run.log").write_text(
        "training\n---\nval_bpb:          1.234000\ntraining_seconds: 1.0\n"
        "total_seconds:    1.2\npeak_vram_mb:     0.0\nmfu_percent:      0.00\n"
        "total_tokens_M:   0.1\nnum_steps:        3\nnum_params_M:     1.0\ndepth:            9\n"
    )
    return work


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_finished_leftover_is_published_once(tmp_path: Path) -> None:
    """A run that printed its summary before the crash is published at the next start (as
    keep: it beats nothing yet), and not again at the start after that; another agent's
    leftover is not touched."""
    train, prepare = write_trainer(tmp_path, "leftover")
    src = train.read_text().replace("DEPTH = 8", "DEPTH = 9")
    state = tmp_path / "state"
    work = _leftover(state, src, "DEPTH 8 -> 9", "me", "host-a")
    foreign = _leftover(state / "other", src, "x", "someone-else", "host-a")

    def cfg() -> Any:
        return load_config(
            env={},
            flags={
                "state_dir": str(state),
                "memory.path": str(tmp_path / "mem.sqlite"),
                "agent_name": "me",
                "train_py": str(train),
                "prepare_py": str(prepare),
                "prepare_on_start": "false",
                "start_jitter_s": "0",
                "profile": "smoke",
                "max_experiments": "1",
                "dedup.semantic": "false",
                "sandbox": "bwrap",
                "verify_runs": "false",
                "verified_bests": "false",  # no confirmation rerun
            },
        )

    os.environ["AUTORESEARCH_TEST_SLEEP"] = "0.2"
    try:
        for _ in range(2):
            sup = Supervisor(cfg(), install_signals=False, host="host-a")
            assert await sup.run() == EXIT_OK, sup.exit_reason
    finally:
        del os.environ["AUTORESEARCH_TEST_SLEEP"]
    results = await _results(tmp_path / "mem.sqlite")
    harvested = [r for r in results if r.description == "DEPTH 8 -> 9"]
    assert len(harvested) == 1
    assert harvested[0].val_bpb == 1.234 and harvested[0].sandbox == "bwrap"
    assert (work / FINISHED_NAME).read_text().strip() == "harvested"
    assert not (foreign / FINISHED_NAME).exists()
