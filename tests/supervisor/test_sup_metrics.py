"""A running supervisor seen from outside: Prometheus metrics on its port, and the live
view reading the progress of the current run from its run.log."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sup_helpers import FAKE_TRAIN

from pty_helpers import PtyProcess
from swarm.errors import ConfigError, TransportError
from swarm.metrics import CountingBackend
from swarm.supervisor import EXIT_OK, Supervisor
from swarm.testing import FakeNvml
from swarm.ui.live import gather_live

# the fake trainer, printing train.py's step lines while it "trains"
STEPPING = FAKE_TRAIN.replace(
    "    time.sleep(SLEEP_S)\n",
    "    for i in range(20):\n"
    "        print(f'step {i:05d} ({5 * i:5.1f}%) | loss {5 - i / 10:.4f} | lrm 1.00 | '\n"
    "              f'dt 1ms | tok/s 1 | mfu 0.0% | epoch 0 | left {SLEEP_S * (20 - i) / 20:.1f}s',\n"
    "              flush=True)\n"
    "        time.sleep(SLEEP_S / 20)\n",
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for smp in fam.samples:
            out[(smp.name, tuple(sorted(smp.labels.items())))] = smp.value
    return out


@pytest.mark.slow
async def test_metrics_port_and_live_progress_of_a_running_supervisor(
    fake_sources: Callable[..., tuple[Path, Path]],
    make_config: Callable[..., Any],
) -> None:
    """While experiments run, /metrics counts them by status with GPU busy seconds and
    queue depth, and the live view shows the current run's step and loss from run.log."""
    assert STEPPING != FAKE_TRAIN
    train, prepare = fake_sources()
    train.write_text(STEPPING.replace("SLEEP_S = 0.2", "SLEEP_S = 2.0"), encoding="utf-8")
    port = _free_port()
    cfg = make_config(
        train_py=train, prepare_py=prepare, profile="smoke", max_experiments=3, metrics_port=port
    )
    sup = Supervisor(cfg, nvml=FakeNvml.with_gpus(1), install_signals=False)
    task = asyncio.create_task(sup.run())
    seen_progress = None
    samples: dict[Any, float] = {}
    async with aiohttp.ClientSession() as s:
        for _ in range(300):
            await asyncio.sleep(0.1)
            if task.done():
                break
            if seen_progress is None:
                model = await gather_live(cfg, swarm=None)
                seen_progress = next(iter(model.progress.values()), None)
            try:
                async with s.get(f"http://127.0.0.1:{port}/metrics") as r:
                    assert r.status == 200
                    samples = _samples(await r.text())
            except aiohttp.ClientError:
                continue
            done = sum(v for (n, _), v in samples.items() if n == "swarm_experiments_total")
            if done >= 1 and seen_progress is not None:
                break
    assert await task == EXIT_OK, sup.exit_reason
    assert seen_progress is not None and 0 <= seen_progress.step < 20
    assert seen_progress.loss is not None and 3.0 <= seen_progress.loss <= 5.0
    assert sum(v for (n, _), v in samples.items() if n == "swarm_experiments_total") >= 1
    busy = samples[("swarm_gpu_busy_seconds_total", (("gpu", "0"), ("worker", "0")))]
    assert busy >= 1.0
    assert ("swarm_queue_depth", (("worker", "0"),)) in samples
    assert samples[("swarm_memory_errors_total", (("operation", "create"),))] == 0
    assert samples[("swarm_memory_outbox", ())] == 0


async def test_counting_backend_counts_memory_errors_and_passes_the_rest() -> None:
    """Failures of the wrapped backend are counted per operation and re-raised."""

    class Flaky:
        name = "flaky"

        async def get(self, keys: list[str]) -> dict[str, Any]:
            raise TransportError("connection refused")

        async def ping(self) -> None:
            return None

    backend = CountingBackend(Flaky())
    for _ in range(2):
        with pytest.raises(TransportError):
            await backend.get(["a"])
    await backend.ping()
    assert backend.errors["get"] == 2 and backend.errors["ping"] == 0
    assert backend.name == "flaky"


async def test_a_taken_metrics_port_is_a_config_error(
    fake_sources: Callable[..., tuple[Path, Path]],
    make_config: Callable[..., Any],
) -> None:
    """A metrics port in use stops the supervisor with a ConfigError naming metrics_port."""
    train, prepare = fake_sources()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cfg = make_config(
            train_py=train,
            prepare_py=prepare,
            profile="smoke",
            max_experiments=1,
            metrics_port=port,
        )
        sup = Supervisor(cfg, nvml=FakeNvml.with_gpus(1), install_signals=False)
        with pytest.raises(ConfigError, match=f"metrics_port {port}"):
            await sup.run()


def _run_argv(tmp_path: Path, train: Path, prepare: Path) -> list[str]:
    import sys

    return [
        sys.executable,
        "-m",
        "swarm",
        "run",
        "--profile",
        "smoke",
        "--state-dir",
        str(tmp_path / "state"),
        "--memory-path",
        str(tmp_path / "m.sqlite"),
        "--max-experiments",
        "2",
        "--agent-name",
        "tty-tester",
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
    ]


@pytest.mark.slow
def test_swarm_run_on_a_terminal_shows_the_live_view_and_logs_to_a_file(
    fake_sources: Callable[..., tuple[Path, Path]],
    tmp_path: Path,
) -> None:
    """`swarm run` on a TTY draws the live view (no log lines on the screen) and writes
    its structured log to STATE_DIR/swarm.log, whose path it shows."""
    import os

    train, prepare = fake_sources()
    train.write_text(STEPPING.replace("SLEEP_S = 0.2", "SLEEP_S = 1.0"), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWARM_")}
    env.update(COLUMNS="160", LINES="50", TERM="xterm", SWARM_CPU_WORKERS="1")
    term = PtyProcess(_run_argv(tmp_path, train, prepare), env)
    try:
        screen = term.read_until(None, timeout_s=240)
        code = term.proc.wait(timeout=30)
    finally:
        term.close()
    log_file = tmp_path / "state" / "swarm.log"
    assert code == 0, screen[-3000:]
    assert "Workers" in screen and "tty-tester" in screen
    assert "done 2" in screen  # the final frame stays on the screen
    assert f"logs: {log_file}" in screen.replace("\r\n", "")
    assert "supervisor_started" not in screen and "experiment_started" not in screen
    logged = log_file.read_text(encoding="utf-8")
    assert "supervisor_started" in logged and "result_published" in logged


@pytest.mark.slow
def test_swarm_run_log_format_json_keeps_plain_structured_lines(
    fake_sources: Callable[..., tuple[Path, Path]],
    tmp_path: Path,
) -> None:
    """With --log-format json (as under systemd) stderr carries one JSON object per line
    and stdout stays empty, even on a terminal."""
    import json
    import os
    import subprocess

    train, prepare = fake_sources()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWARM_")}
    env["SWARM_CPU_WORKERS"] = "1"
    argv = _run_argv(tmp_path, train, prepare)
    argv.insert(3, "--log-format")
    argv.insert(4, "json")
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout == ""
    events = [json.loads(line) for line in proc.stderr.splitlines() if line.strip()]
    names = {e["event"] for e in events}
    assert {"supervisor_started", "result_published"} <= names
    assert all("timestamp" in e and "level" in e for e in events)
    assert not (tmp_path / "state" / "swarm.log").exists()
