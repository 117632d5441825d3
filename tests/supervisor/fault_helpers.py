"""Helpers of the fault-injection tests: a hub process the test can kill -9 and restart,
`python -m swarm run` as a process, and readers of what the hub and the state dir hold."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from swarm.hub import wait_for_hub
from swarm.memory.factory import open_memory
from swarm.namespace import SwarmMemory
from swarm.outbox import OUTBOX_NAME, Outbox
from swarm.records import Result
from swarm.results_log import ResultsLog

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def clean_env(home: Path, **extra: str) -> dict[str, str]:
    """The environment of a child: no SWARM_* or key variables, its own config dir."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("SWARM_") and k not in ("ENSUE_API_KEY", "NOTIFY_SOCKET")
    }
    env.update(
        XDG_CONFIG_HOME=str(home / "config"),
        XDG_DATA_HOME=str(home / "data"),
        XDG_STATE_HOME=str(home / "xstate"),
        HF_HUB_OFFLINE="1",
    )
    env.update(extra)
    return env


def swarm_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "swarm", "--log-level", "warning", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        cwd=REPO,
    )


class HubProcess:
    """`python -m swarm hub` on 127.0.0.1 with its own database; kill -9 and restart."""

    def __init__(self, tmp: Path) -> None:
        self.db = str(tmp / "hub.sqlite")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = tmp / "hub.log"

    def token(self, name: str, role: str = "participant") -> str:
        out = swarm_cli("hub", "token", "add", name, "--role", role, "--db", self.db)
        assert out.returncode == 0, out.stderr
        return out.stdout.strip()

    def revoke(self, name: str) -> None:
        out = swarm_cli("hub", "token", "revoke", name, "--db", self.db)
        assert out.returncode == 0, out.stderr

    async def start(self) -> None:
        with self.log.open("ab") as fh:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "swarm", "hub", "--port", str(self.port), "--db", self.db],
                stdout=fh,
                stderr=subprocess.STDOUT,
                env=dict(os.environ, HF_HUB_OFFLINE="1"),
            )
        await wait_for_hub(self.url, timeout_s=60)

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    async def results(self, token: str) -> list[Result]:
        async with open_memory("hub", url=self.url, api_key=token) as backend:
            return await SwarmMemory(backend, agent_id="reader").results()


def run_args(tmp: Path, train: Path, prepare: Path, *extra: str) -> list[str]:
    """`python -m swarm run` on the fake trainer with this test's state dir."""
    return [
        sys.executable,
        "-m",
        "swarm",
        "--log-level",
        "info",
        "run",
        "--profile",
        "smoke",
        "--state-dir",
        str(tmp / "state"),
        "--agent-name",
        "fault-tester",
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


def start_run(tmp: Path, args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    out = (tmp / "run.log").open("a")
    return subprocess.Popen(
        args, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, text=True
    )


def teardown(proc: subprocess.Popen[str], hub: HubProcess | None = None) -> None:
    """End what a test started: the supervisor (if still running) and the hub."""
    if proc.poll() is None:
        proc.kill()
        proc.wait(timeout=30)
    if hub is not None:
        hub.stop()


def run_log(tmp: Path) -> str:
    return (tmp / "run.log").read_text(errors="replace")


def local_rows(state: Path) -> list[dict[str, Any]]:
    """results.jsonl, one record per run (a replay's key replaces the offline line)."""
    return ResultsLog(state).read_jsonl()


def pending(state: Path) -> int:
    return len(Outbox(state / OUTBOX_NAME).pending("result"))


async def wait_until(
    cond: Callable[[], bool], timeout: float, what: str, proc: subprocess.Popen[str] | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"{what}: the supervisor exited early with {proc.returncode}")
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


async def wait_exit(proc: subprocess.Popen[str], timeout: float) -> tuple[int, float]:
    t0 = time.monotonic()
    code = await asyncio.to_thread(proc.wait, timeout)
    return code, time.monotonic() - t0


def identity(r: Result | dict[str, Any]) -> tuple[Any, ...]:
    """One run: who ran which code with which seed when."""
    if isinstance(r, Result):
        r = r.to_json()
    return (r.get("agent_id"), r.get("code_hash"), r.get("seed"), r.get("completed_at"))
