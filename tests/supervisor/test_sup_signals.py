"""Signals: `python -m swarm run` as a real process drains on SIGTERM, cuts runs short after
the grace period, and stops at once on a second signal; claims are always released."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from swarm.memory.local import LocalStore
from swarm.namespace import SwarmMemory
from swarm.status import read_snapshot
from swarm.supervisor import EXIT_FORCED, EXIT_GRACE_EXPIRED, EXIT_OK

REPO = Path(__file__).resolve().parents[2]


def _start(tmp_path: Path, train: Path, prepare: Path, *extra: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWARM_")}
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
        str(tmp_path / "memory.sqlite"),
        "--agent-name",
        "sig-tester",
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
        *extra,
    ]
    return subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def _wait_training(proc: subprocess.Popen[str], state_dir: Path, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            pytest.fail(f"supervisor exited early with {proc.returncode}:\n{out[-3000:]}")
        snap = read_snapshot(state_dir)
        if snap and any(w.state == "training" for w in snap.workers):
            return
        time.sleep(0.1)
    proc.kill()
    pytest.fail("no worker started training in time")


def _finish(proc: subprocess.Popen[str], timeout: float) -> tuple[int, str, float]:
    t0 = time.monotonic()
    out, _ = proc.communicate(timeout=timeout)
    return proc.returncode, out, time.monotonic() - t0


def _child_pids(output: str) -> list[int]:
    return [int(p) for p in re.findall(r"run_started.* pid=(\d+)", output)]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def _memory_state(path: Path) -> tuple[list[Any], list[Any]]:
    async with LocalStore(path) as store:
        memory = SwarmMemory(store, agent_id="reader")
        return await memory.live_claims(), await memory.results()


@pytest.mark.slow
def test_sigterm_drains_the_running_experiment_and_exits_clean(
    fake_sources: Callable[..., tuple[Path, Path]], tmp_path: Path
) -> None:
    """First SIGTERM: the running experiment finishes and is published, the claim is
    released, nothing new starts, exit 0 well within the grace period."""
    train, prepare = fake_sources(SLEEP_S=4.0)
    proc = _start(tmp_path, train, prepare, "--grace", "60")
    _wait_training(proc, tmp_path / "state")
    proc.send_signal(signal.SIGTERM)
    code, out, took = _finish(proc, timeout=60)
    assert code == EXIT_OK, out[-3000:]
    assert took < 30
    claims, results = asyncio.run(_memory_state(tmp_path / "memory.sqlite"))
    assert claims == []
    assert [r.description for r in results] == ["baseline"]  # finished and published
    assert results[0].status == "keep"
    tsv = (tmp_path / "state" / "results.tsv").read_text().splitlines()
    assert len(tsv) == 2 and tsv[1].endswith("\tbaseline")
    snap = read_snapshot(tmp_path / "state")
    assert snap is not None and snap.state == "stopped"
    assert snap.exit_reason is not None and "SIGTERM" in snap.exit_reason
    assert snap.counters.done == 1
    assert "supervisor_draining" in out


@pytest.mark.slow
def test_grace_period_over_cuts_runs_short_and_releases_claims(
    fake_sources: Callable[..., tuple[Path, Path]], tmp_path: Path
) -> None:
    """A run longer than the grace period is stopped (its process group killed), its claim
    released, nothing published for it; exit status 3."""
    train, prepare = fake_sources(SLEEP_S=120.0)
    proc = _start(tmp_path, train, prepare, "--grace", "1.5")
    _wait_training(proc, tmp_path / "state")
    proc.send_signal(signal.SIGTERM)
    code, out, took = _finish(proc, timeout=60)
    assert code == EXIT_GRACE_EXPIRED, out[-3000:]
    assert took < 20
    pids = _child_pids(out)
    assert pids and not any(_alive(p) for p in pids)
    claims, results = asyncio.run(_memory_state(tmp_path / "memory.sqlite"))
    assert claims == [] and results == []
    snap = read_snapshot(tmp_path / "state")
    assert snap is not None and "grace period ran out" in (snap.exit_reason or "")


@pytest.mark.slow
def test_second_sigint_forces_an_immediate_stop(
    fake_sources: Callable[..., tuple[Path, Path]], tmp_path: Path
) -> None:
    """Ctrl-C twice: no waiting for the (long) grace period; exit 130, children gone,
    claims released."""
    train, prepare = fake_sources(SLEEP_S=120.0)
    proc = _start(tmp_path, train, prepare, "--grace", "300")
    _wait_training(proc, tmp_path / "state")
    proc.send_signal(signal.SIGINT)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    code, out, took = _finish(proc, timeout=60)
    assert code == EXIT_FORCED, out[-3000:]
    assert took < 20
    pids = _child_pids(out)
    assert pids and not any(_alive(p) for p in pids)
    claims, _ = asyncio.run(_memory_state(tmp_path / "memory.sqlite"))
    assert claims == []
