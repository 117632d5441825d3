"""The supervisor's lifecycle rooms: signal handlers, the track's data, the exit status."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from swarm.errors import RunnerError
from swarm.exitcodes import (
    EXIT_FAILURE,
    EXIT_FORCED,
    EXIT_GRACE_EXPIRED,
    EXIT_OK,
    EXIT_PERMANENT,
    exit_status,
)
from swarm.faults import Fault, Reaction
from swarm.signals import SignalHandlers
from swarm.trackdata import data_ready, ensure_data
from swarm.worker import Slots, StopControl

# --------------------------------------------------------------------------- signals


async def test_signal_handlers_set_flags_and_are_removed_on_exit() -> None:
    """A real SIGUSR1 reaches the callback with its name; on exit the default is back."""
    seen: list[str] = []
    got = asyncio.Event()

    def on_signal(name: str) -> None:
        seen.append(name)
        got.set()

    with SignalHandlers(on_signal, (signal.SIGUSR1,)) as handlers:
        assert handlers.installed == (signal.SIGUSR1,)
        os.kill(os.getpid(), signal.SIGUSR1)
        await asyncio.wait_for(got.wait(), 5)
    assert seen == ["SIGUSR1"]
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL
    assert handlers.installed == ()


async def test_restore_early_is_idempotent() -> None:
    """restore() inside the block gives the default back at once; the exit does no harm."""
    with SignalHandlers(lambda _n: None, (signal.SIGUSR2,)) as handlers:
        assert signal.getsignal(signal.SIGUSR2) != signal.SIG_DFL
        handlers.restore()
        assert signal.getsignal(signal.SIGUSR2) == signal.SIG_DFL
        handlers.restore()
    assert handlers.installed == ()


def test_signal_handlers_outside_the_main_thread_install_nothing() -> None:
    """In another thread no handler can be installed: a warning, no exception, none kept."""
    result: list[tuple[signal.Signals, ...]] = []

    async def body() -> None:
        with SignalHandlers(lambda _n: None, (signal.SIGUSR1,)) as handlers:
            result.append(handlers.installed)

    thread = threading.Thread(target=lambda: asyncio.run(body()))
    thread.start()
    thread.join(10)
    assert result == [()]


# --------------------------------------------------------------------------- track data

FAKE_PREPARE = textwrap.dedent(
    """\
    import os, pathlib, signal, sys, time
    mode = os.environ["FAKE_PREPARE_MODE"]
    print("prepare.py", " ".join(sys.argv[1:]), flush=True)
    if mode == "fail":
        print("no text to tokenize", flush=True)
        sys.exit(5)
    if mode == "hang":
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(9))
        pathlib.Path(os.environ["FAKE_PREPARE_PID"]).write_text(str(os.getpid()))
        time.sleep(120)
    cache = pathlib.Path(os.environ["AUTORESEARCH_CACHE"]) / "smoke"
    (cache / "tokenizer").mkdir(parents=True)
    (cache / "data").mkdir()
    for name in ("tokenizer/tokenizer.pkl", "tokenizer/token_bytes.pt", "data/val.parquet",
                 "data/shard_00000.parquet"):
        (cache / name).write_bytes(b"x")
    """
)


@pytest.fixture
def fake_prepare(tmp_path: Path) -> Path:
    """A prepare.py stand-in whose behaviour FAKE_PREPARE_MODE picks."""
    path = tmp_path / "src" / "prepare.py"
    path.parent.mkdir()
    path.write_text(FAKE_PREPARE, encoding="utf-8")
    return path


def _env(tmp_path: Path, mode: str) -> dict[str, str]:
    return {
        **os.environ,
        "AUTORESEARCH_CACHE": str(tmp_path / "cache"),
        "FAKE_PREPARE_MODE": mode,
        "FAKE_PREPARE_PID": str(tmp_path / "prepare.pid"),
    }


async def test_ensure_data_prepares_once(tmp_path: Path, fake_prepare: Path) -> None:
    """Missing data: prepare.py runs with the track's profile; present data: it does not."""
    env = _env(tmp_path, "ok")
    log_path = tmp_path / "logs" / "prepare.log"
    assert not data_ready("smoke", env)
    assert await ensure_data(
        "smoke", fake_prepare, python=sys.executable, log_path=log_path, env=env
    )
    assert data_ready("smoke", env)
    assert "prepare.py --profile smoke" in log_path.read_text()
    assert not await ensure_data(
        "smoke", fake_prepare, python=sys.executable, log_path=log_path, env=env
    )
    assert log_path.read_text().count("prepare.py --profile smoke") == 1


async def test_ensure_data_failure_names_the_exit_and_the_log(
    tmp_path: Path, fake_prepare: Path
) -> None:
    """A failing prepare.py is a RunnerError with its exit status, log path and log tail."""
    log_path = tmp_path / "prepare.log"
    with pytest.raises(RunnerError, match=r"(?s)failed with exit 5.*prepare\.log.*no text") as err:
        await ensure_data(
            "smoke",
            fake_prepare,
            python=sys.executable,
            log_path=log_path,
            env=_env(tmp_path, "fail"),
        )
    assert "--profile smoke" in str(err.value)


async def test_ensure_data_stopped_terminates_the_preparation(
    tmp_path: Path, fake_prepare: Path
) -> None:
    """The stop event set while prepare.py runs: SIGTERM to its group, reaped, RunnerError."""
    stop = asyncio.Event()
    pidfile = tmp_path / "prepare.pid"

    async def set_stop_once_running() -> None:
        while not pidfile.exists() or not pidfile.read_text():
            await asyncio.sleep(0.02)
        stop.set()

    setter = asyncio.create_task(set_stop_once_running())
    t0 = time.monotonic()
    with pytest.raises(RunnerError, match="stopped by a signal"):
        await asyncio.wait_for(
            ensure_data(
                "smoke",
                fake_prepare,
                python=sys.executable,
                log_path=tmp_path / "prepare.log",
                env=_env(tmp_path, "hang"),
                stop=stop,
                grace_s=30.0,
            ),
            60,
        )
    await setter
    assert time.monotonic() - t0 < 20  # SIGTERM sufficed: the 30 s grace was not waited out
    pid = int(pidfile.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert not data_ready("smoke", _env(tmp_path, "hang"))


# --------------------------------------------------------------------------- exit status


def _stop(reason: str | None = None, *, forced: bool = False, aborted: int = 0) -> StopControl:
    stop = StopControl()
    if reason is not None:
        stop.request_stop(reason)
    if forced:
        stop.force(reason or "forced")
    stop.aborted_runs = aborted
    return stop


def test_exit_status_precedence() -> None:
    """Permanent fault > forced > grace ran out > every worker failed > clean (with why)."""
    fault = Fault(Reaction.PERMANENT, "the key was rejected", "set a valid key")
    slots = Slots(0)
    full = Slots(2)
    full.take()
    full.take()
    cases = [
        (
            exit_status(
                _stop("SIGTERM", forced=True, aborted=2), fault, failures=2, workers=2, slots=slots
            ),
            EXIT_PERMANENT,
            fault.line,
        ),
        (
            exit_status(
                _stop("SIGTERM", forced=True, aborted=2), None, failures=2, workers=2, slots=slots
            ),
            EXIT_FORCED,
            "forced (SIGTERM)",
        ),
        (
            exit_status(_stop("SIGTERM", aborted=2), None, failures=2, workers=2, slots=slots),
            EXIT_GRACE_EXPIRED,
            "grace period ran out (SIGTERM); 2 run(s) cut short",
        ),
        (
            exit_status(_stop(), None, failures=2, workers=2, slots=slots),
            EXIT_FAILURE,
            "every worker failed",
        ),
        (
            exit_status(_stop(), None, failures=1, workers=2, slots=slots),
            EXIT_OK,
            "workers finished",
        ),
        (
            exit_status(_stop("SIGINT"), None, failures=0, workers=2, slots=slots),
            EXIT_OK,
            "drained (SIGINT)",
        ),
        (
            exit_status(_stop(), None, failures=0, workers=2, slots=full),
            EXIT_OK,
            "max_experiments (2) reached",
        ),
    ]
    for status, code, reason in cases:
        assert (status.code, status.reason) == (code, reason)
