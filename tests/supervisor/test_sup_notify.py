"""The systemd unit's protocol, from the test's own NOTIFY_SOCKET: READY=1 after the workers
start, STATUS lines, WATCHDOG=1 pings while the loop runs, STOPPING=1 on the first SIGTERM;
and the unit file itself (watchdog, no restart on a permanent fault)."""

from __future__ import annotations

import asyncio
import configparser
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from fault_helpers import REPO, clean_env, run_args, start_run, wait_exit

from swarm.faults import EXIT_PERMANENT
from swarm.notify import notify_loop, watchdog_interval_s
from swarm.supervisor import EXIT_OK


def _recv_all(sock: socket.socket) -> list[str]:
    out = []
    while True:
        try:
            out.append(sock.recv(4096).decode())
        except BlockingIOError:
            return out


@pytest.mark.slow
async def test_notify_protocol_of_a_real_supervisor(
    fake_sources: Callable[..., tuple[Path, Path]],
    tmp_path: Path,
) -> None:
    """A supervisor process under a fake systemd: READY=1 once its worker starts, STATUS
    updates, watchdog pings every half WatchdogSec (from startup on), STOPPING=1 on
    SIGTERM, exit 0."""
    train, prepare = fake_sources(SLEEP_S=3.0)
    address = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(address))
        sock.setblocking(False)
        env = clean_env(tmp_path, NOTIFY_SOCKET=str(address), WATCHDOG_USEC="1000000")
        proc = start_run(
            tmp_path,
            run_args(tmp_path, train, prepare, "--memory-path", str(tmp_path / "m.sqlite")),
            env,
        )
        try:
            got: list[str] = []
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                got += _recv_all(sock)
                if got and sum("WATCHDOG=1" in m for m in got) >= 3:
                    break
                assert proc.poll() is None
                await asyncio.sleep(0.1)
            proc.send_signal(signal.SIGTERM)
            waiting = asyncio.ensure_future(wait_exit(proc, 60))
            while not waiting.done():  # keep reading, as systemd does
                got += _recv_all(sock)
                await asyncio.sleep(0.1)
            code, _ = waiting.result()
            got += _recv_all(sock)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert code == EXIT_OK
    fields = [line for m in got for line in m.split("\n")]
    ready = fields.index("READY=1")
    assert any(f.startswith("STATUS=") and "training" in f for f in fields)
    pings = [i for i, f in enumerate(fields) if f == "WATCHDOG=1"]
    assert len([p for p in pings if p > ready]) >= 2  # pinged while the workers run
    assert "STOPPING=1" in fields[ready:]


async def test_a_hung_loop_sends_no_pings() -> None:
    """Pings come from the event loop: while it is blocked, none are sent (systemd then
    restarts the service)."""
    sent: list[tuple[float, str]] = []
    task = asyncio.create_task(
        notify_loop(
            {"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "200000"},
            lambda: "running",
            lambda m: bool(sent.append((time.monotonic(), m))),
        )
    )
    await asyncio.sleep(0.35)
    before = len(sent)
    time.sleep(0.6)  # the loop hangs
    hung_end = time.monotonic()
    await asyncio.sleep(0)
    task.cancel()
    assert before >= 3
    assert not [t for t, _m in sent[before:] if t < hung_end]
    assert watchdog_interval_s({"WATCHDOG_USEC": "200000", "WATCHDOG_PID": "1"}) is None


def test_unit_restarts_on_failure_and_hangs_but_not_on_permanent_faults() -> None:
    """deploy/swarm.service: WatchdogSec is set, exit 4 (permanent fault) and 2 (bad config)
    are not restarted, the drain statuses count as success."""
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.read(REPO / "deploy" / "swarm.service")
    service = unit["Service"]
    assert int(service["WatchdogSec"]) > 0
    prevent = service["RestartPreventExitStatus"].split()
    assert str(EXIT_PERMANENT) in prevent and "2" in prevent
    assert service["Restart"] == "on-failure"
    assert {"3", "130"} <= set(service["SuccessExitStatus"].split())
