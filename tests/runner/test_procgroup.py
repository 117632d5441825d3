"""swarm.procgroup with real children: stubborn leaders, grandchildren, cancels mid-stop."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from swarm.errors import RunnerError
from swarm.procgroup import ProcessGroup, live_group_members, spawn_group

STUBBORN = """
import signal, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("ignoring SIGTERM", flush=True)
time.sleep(120)
"""

POLITE = """
import signal, sys, time
def on_term(*_):
    print("got SIGTERM", flush=True)
    sys.exit(3)
signal.signal(signal.SIGTERM, on_term)
print("waiting", flush=True)
time.sleep(120)
"""

LEAVES_GRANDCHILD = """
import pathlib, subprocess, sys
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
pathlib.Path("grandchild.pid").write_text(str(child.pid))
print("leaving", flush=True)
"""


async def _spawn(tmp_path: Path, code: str, grace_s: float) -> ProcessGroup:
    return await spawn_group(
        [sys.executable, "-c", code],
        name="test child",
        log_path=tmp_path / "child.log",
        grace_s=grace_s,
        cwd=tmp_path,
    )


async def _wait_for_text(path: Path, text: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text(errors="replace"):
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{text!r} never appeared in {path}")


async def test_child_ignoring_sigterm_is_killed_after_the_grace(
    tmp_path: Path, alive: Callable[[int], bool], reap_leftovers: list[int]
) -> None:
    """A leader that ignores SIGTERM gets SIGKILL once the grace is over, and is reaped."""
    group = await _spawn(tmp_path, STUBBORN, grace_s=0.5)
    reap_leftovers.append(group.pid)
    await _wait_for_text(tmp_path / "child.log", "ignoring SIGTERM")
    t0 = time.monotonic()
    ended = await group.wait(timeout_s=0.2)
    elapsed = time.monotonic() - t0
    assert ended.ended == "timeout"
    assert ended.returncode == -signal.SIGKILL
    assert group.sent == [signal.SIGTERM, signal.SIGKILL]
    assert 0.6 <= elapsed < 5.0  # the timeout, then the whole grace, then the kill
    assert not alive(group.pid)


async def test_polite_child_stops_on_sigterm_within_the_grace(
    tmp_path: Path, alive: Callable[[int], bool], reap_leftovers: list[int]
) -> None:
    """A leader that exits on SIGTERM is not SIGKILLed; its own exit status is kept."""
    group = await _spawn(tmp_path, POLITE, grace_s=10.0)
    reap_leftovers.append(group.pid)
    await _wait_for_text(tmp_path / "child.log", "waiting")
    t0 = time.monotonic()
    ended = await group.wait(timeout_s=0.1)
    assert ended.ended == "timeout" and ended.returncode == 3
    assert group.sent == [signal.SIGTERM]
    assert time.monotonic() - t0 < 5.0  # did not wait out the 10 s grace
    assert "got SIGTERM" in (tmp_path / "child.log").read_text()


async def test_grandchild_left_behind_is_swept(
    tmp_path: Path, alive: Callable[[int], bool], reap_leftovers: list[int]
) -> None:
    """A leader that exits on its own leaves no grandchild running: the final sweep kills it."""
    group = await _spawn(tmp_path, LEAVES_GRANDCHILD, grace_s=1.0)
    ended = await group.wait(timeout_s=30)
    grandchild = int((tmp_path / "grandchild.pid").read_text())
    reap_leftovers.append(grandchild)
    assert ended.ended == "exited" and ended.returncode == 0
    assert not alive(grandchild), "grandchild orphaned"
    assert live_group_members(group.pgid) in ([], None)


async def test_second_cancel_during_the_grace_skips_to_sigkill(
    tmp_path: Path, alive: Callable[[int], bool], reap_leftovers: list[int]
) -> None:
    """Cancel: SIGTERM; a second cancel during the grace: SIGKILL now; the cancel re-raised."""
    group = await _spawn(tmp_path, STUBBORN, grace_s=30.0)
    reap_leftovers.append(group.pid)
    await _wait_for_text(tmp_path / "child.log", "ignoring SIGTERM")
    task = asyncio.create_task(group.wait())
    await asyncio.sleep(0.1)
    t0 = time.monotonic()
    task.cancel()
    await asyncio.sleep(0.3)
    assert group.sent == [signal.SIGTERM] and not task.done()  # waiting out the grace
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.monotonic() - t0 < 10.0  # far less than the 30 s grace
    assert group.sent == [signal.SIGTERM, signal.SIGKILL]
    assert group.proc.returncode == -signal.SIGKILL and not alive(group.pid)


async def test_cancel_is_reraised_only_after_the_group_is_gone(
    tmp_path: Path, alive: Callable[[int], bool], reap_leftovers: list[int]
) -> None:
    """One cancel of a waiting caller stops the group (and its grandchild) before it returns."""
    code = LEAVES_GRANDCHILD.replace('print("leaving", flush=True)', "import time; time.sleep(120)")
    group = await _spawn(tmp_path, code, grace_s=5.0)
    reap_leftovers.append(group.pid)
    pidfile = tmp_path / "grandchild.pid"
    task = asyncio.create_task(group.wait())
    deadline = time.monotonic() + 10
    while not pidfile.exists() or not pidfile.read_text():
        assert time.monotonic() < deadline, "the child never started its grandchild"
        await asyncio.sleep(0.02)
    grandchild = int(pidfile.read_text())
    reap_leftovers.append(grandchild)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not alive(group.pid) and not alive(grandchild)


async def test_stop_event_terminates_the_group(
    tmp_path: Path, alive: Callable[[int], bool], reap_leftovers: list[int]
) -> None:
    """Setting the stop event ends the wait as ``stopped`` after SIGTERM and the reap."""
    group = await _spawn(tmp_path, POLITE, grace_s=5.0)
    reap_leftovers.append(group.pid)
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(0.3, stop.set)
    ended = await group.wait(stop=stop)
    assert ended.ended == "stopped" and ended.returncode == 3 and not alive(group.pid)


async def test_a_command_that_cannot_start_is_a_runner_error(tmp_path: Path) -> None:
    """A missing program raises RunnerError naming it and what it was for."""
    with pytest.raises(RunnerError, match=r"no-such-program.*for test child"):
        await spawn_group(
            [str(tmp_path / "no-such-program")],
            name="test child",
            log_path=tmp_path / "x.log",
            grace_s=1.0,
        )


async def test_shell_command_and_extra_sweep(tmp_path: Path) -> None:
    """A string runs through /bin/sh with output in the log; the caller's sweep runs last."""
    swept: list[int | None] = []
    holder: list[ProcessGroup] = []

    async def extra() -> None:
        swept.append(holder[0].proc.returncode)

    (tmp_path / "sh.log").write_text("earlier\n")
    group = await spawn_group(
        "echo hello from sh; exit 7",
        name="sh",
        log_path=tmp_path / "sh.log",
        grace_s=1.0,
        also_sweep=extra,
    )
    holder.append(group)
    ended = await group.wait(timeout_s=30)
    assert ended.ended == "exited" and ended.returncode == 7
    assert swept == [7]  # after the leader was reaped
    assert (tmp_path / "sh.log").read_text() == "earlier\nhello from sh\n"  # appended


def _running_with(marker: str) -> list[int]:
    """Pids of live processes whose command line holds ``marker``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker.encode() in cmdline and state not in ("Z", "X"):
            found.append(int(entry.name))
    return found


async def test_cancel_mid_spawn_leaves_no_child(tmp_path: Path) -> None:
    """A cancel that lands before the child exists still kills and reaps it once it does."""
    marker = f"procgroup-mid-spawn-{os.getpid()}-{time.monotonic_ns()}"
    task = asyncio.create_task(
        spawn_group(
            [sys.executable, "-c", f"import time; time.sleep(120)  # {marker}"],
            name="mid-spawn",
            log_path=tmp_path / "spawn.log",
            grace_s=30.0,
        )
    )
    await asyncio.sleep(0)  # the task starts spawning; the child does not exist yet
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert _running_with(marker) == []
