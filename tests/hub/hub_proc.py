"""A hub run as its own process (``python -m swarm hub``), for tests that measure its
memory or need it to be a real server apart from the test's event loop."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from swarm.hub import TokenStore, wait_for_hub

ENV = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
ROLES = {"reader": "read", "alice": "participant", "bob": "participant", "root": "admin"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class HubProc:
    """A running hub process: its URL, port, tokens by name and log file."""

    proc: subprocess.Popen[bytes]
    url: str
    port: int
    db: Path
    log: Path
    tokens: dict[str, str] = field(default_factory=dict)

    def _status(self, field_name: str) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1]) // 1024
        raise AssertionError(f"{field_name} not in /proc/{self.proc.pid}/status")

    def rss_mib(self) -> int:
        """Resident memory now, MiB."""
        return self._status("VmRSS")

    def peak_mib(self) -> int:
        """Peak resident memory since the process started, MiB."""
        return self._status("VmHWM")

    def alive(self) -> bool:
        return self.proc.poll() is None


@contextlib.asynccontextmanager
async def hub_process(tmp_path: Path, *args: str) -> AsyncIterator[HubProc]:
    """``python -m swarm hub`` on a free port with tokens of every role (ROLES)."""
    db = tmp_path / "hubproc.db"
    with TokenStore(db) as ts:
        tokens = {name: ts.add(name, role) for name, role in ROLES.items()}
    port = free_port()
    log = tmp_path / "hubproc.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "swarm",
                "--log-level",
                "info",
                "hub",
                "--port",
                str(port),
                "--db",
                str(db),
                *args,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=ENV,
        )
    hub = HubProc(proc, f"http://127.0.0.1:{port}/", port, db, log, tokens)
    try:
        await wait_for_hub(hub.url, timeout_s=60)
        yield hub
    finally:
        proc.terminate()
        try:
            await asyncio.to_thread(proc.wait, 20)
        except subprocess.TimeoutExpired:
            proc.kill()
            await asyncio.to_thread(proc.wait)


@contextlib.contextmanager
def stopwatch() -> Iterator[list[float]]:
    """Yields a list that holds the elapsed seconds once the block ends."""
    out: list[float] = []
    t0 = time.perf_counter()
    try:
        yield out
    finally:
        out.append(time.perf_counter() - t0)
