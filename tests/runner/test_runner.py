"""run_experiment with real train.py stand-ins run as real subprocesses."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from swarm.errors import RunnerError
from swarm.runner import LOG_NAME, build_child_env, classify_run, run_experiment

SUMMARY_CODE = """
def summary(val=0.9979):
    print("---")
    for k, v in [("val_bpb", f"{val:.6f}"), ("training_seconds", "1.0"),
                 ("total_seconds", "1.5"), ("peak_vram_mb", "2048.0"), ("mfu_percent", "1.5"),
                 ("total_tokens_M", "0.5"), ("num_steps", "12"), ("num_params_M", "0.8"),
                 ("depth", "2")]:
        print(f"{k}: {v}", flush=True)
"""

GOOD = (
    """
import json, os, sys
import prepare  # the pinned copy sits next to train.py
print("step 00001 | loss 3.2", flush=True)
print("warming up", file=sys.stderr, flush=True)
json.dump(dict(os.environ), open("env.json", "w"))
"""
    + SUMMARY_CODE
    + "summary()\n"
)


async def test_good_run_is_ok(make_spec, prepare_py: Path) -> None:
    """A run that prints a valid summary and exits 0 is ok, with the scratch dir set up."""
    started: list[int] = []
    spec = make_spec(GOOD, gpu="3")
    out = await run_experiment(spec, on_start=lambda pid, log: started.append(pid))
    assert out.status == "ok" and out.failure is None and out.ok
    assert out.summary is not None and out.summary.val_bpb == pytest.approx(0.9979)
    assert out.summary.num_steps == 12
    assert out.returncode == 0 and out.message == "val_bpb 0.997900"
    assert out.workdir == spec.workdir and out.log_path == spec.workdir / LOG_NAME
    assert (out.workdir / "train.py").read_text() == spec.train_py
    assert (out.workdir / "prepare.py").read_bytes() == prepare_py.read_bytes()
    assert out.prepare_hash == hashlib.sha256(prepare_py.read_bytes()).hexdigest()
    log_text = out.log_path.read_text()
    assert "warming up" in log_text and "step 00001" in log_text  # stderr and stdout both land
    assert "val_bpb: 0.997900" in out.log_tail
    assert started and started[0] > 0
    env = json.loads((out.workdir / "env.json").read_text())
    assert env["CUDA_VISIBLE_DEVICES"] == "3"
    assert env["AUTORESEARCH_PROFILE"] == "smoke"
    assert 0 < out.wall_s < 10


async def test_child_env_has_no_credentials(make_spec, monkeypatch: pytest.MonkeyPatch) -> None:
    """Credentials never reach the child; basics, AUTORESEARCH_* and spec.env do."""
    for name in ("ENSUE_API_KEY", "OPENAI_API_KEY", "HF_TOKEN", "AWS_SECRET_ACCESS_KEY",
                 "DB_PASSWORD", "AUTORESEARCH_API_KEY", "GITHUB_TOKEN", "RANDOM_UNRELATED"):  # fmt: skip
        monkeypatch.setenv(name, "s3cr3t")
    monkeypatch.setenv("AUTORESEARCH_CACHE", "/tmp/cache-x")
    monkeypatch.setenv("LC_ALL", "C.UTF-8")
    spec = make_spec(GOOD, env={"SPECIAL_TOKEN": "given-on-purpose"})
    out = await run_experiment(spec)
    env = json.loads((out.workdir / "env.json").read_text())
    leaked = [k for k, v in env.items() if v == "s3cr3t"]
    assert leaked == []
    assert env["AUTORESEARCH_CACHE"] == "/tmp/cache-x"
    assert env["LC_ALL"] == "C.UTF-8" and env["PATH"] == os.environ["PATH"]
    assert env["SPECIAL_TOKEN"] == "given-on-purpose"
    assert env["CUDA_VISIBLE_DEVICES"] == ""  # gpu=None: CPU


def test_build_child_env_pins_gpu_over_spec_env(make_spec) -> None:
    """spec.env cannot unpin the GPU; the profile is always passed."""
    spec = make_spec("", gpu="1", env={"CUDA_VISIBLE_DEVICES": "0,1,2"})
    env = build_child_env(spec, base={"PATH": "/bin", "OPENAI_API_KEY": "x", "HOME": "/h"})
    assert env == {
        "PATH": "/bin",
        "HOME": "/h",
        "PYTHONUNBUFFERED": "1",
        "AUTORESEARCH_PROFILE": "smoke",
        "CUDA_VISIBLE_DEVICES": "1",
    }


CASES = {
    "exception": (
        "import prepare\nprint('step 1')\nraise ValueError('bad shape (3, 4)')\n",
        "crash",
        "exception",
        "ValueError: bad shape (3, 4)",
    ),
    "nan": (
        "import sys\nprint('step 5 | loss nan')\nprint('FAIL')\nsys.exit(1)\n",
        "crash",
        "nan",
        "FAIL",
    ),
    "oom": (
        "class OutOfMemoryError(RuntimeError):\n    pass\n"
        "OutOfMemoryError.__module__ = 'torch'\n"
        "raise OutOfMemoryError('CUDA out of memory. Tried to allocate 2.00 GiB')\n",
        "crash",
        "oom",
        "CUDA out of memory",
    ),
    "infra": (
        "raise RuntimeError('CUDA error: unspecified launch failure')\n",
        "crash",
        "infra",
        "unspecified launch failure",
    ),
    "no_summary": (
        "print('trained, but forgot to report')\n",
        "crash",
        "no_summary",
        "exit status 0",
    ),
    "bad_summary": (
        SUMMARY_CODE.replace('("num_steps", "12")', '("num_steps", "twelve")') + "summary()\n",
        "crash",
        "bad_summary",
        "'twelve'",
    ),
    "malformed_line": (
        "print('---')\nprint('val_bpb 0.99')\n",
        "crash",
        "bad_summary",
        "val_bpb 0.99",
    ),
    "nan_summary": (SUMMARY_CODE + "summary(float('nan'))\n", "crash", "nan", "not finite"),
    "signal": (
        "import os, signal\nprint('about to be shot', flush=True)\n"
        "os.kill(os.getpid(), signal.SIGUSR1)\n",
        "crash",
        "signal",
        "SIGUSR1",
    ),
    "sigkill": (
        "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n",
        "crash",
        "signal",
        "OOM killer",
    ),
    "exit_code": ("import sys\nsys.exit(3)\n", "crash", "no_summary", "exit status 3"),
}


@pytest.mark.parametrize("case", sorted(CASES))
async def test_failures_are_classified(make_spec, case: str) -> None:
    """Each kind of failing train.py gets the right status, failure and message."""
    source, status, failure, needle = CASES[case]
    out = await run_experiment(make_spec(source, experiment_id=f"case-{case}"))
    assert (out.status, out.failure) == (status, failure), out.message
    assert needle in out.message or needle in out.log_tail, out.message
    if failure == "exception":
        assert out.message == "ValueError: bad shape (3, 4)"


async def test_chatty_run_does_not_block_and_tail_is_short(make_spec) -> None:
    """Megabytes of output go to the log file (no pipe to fill); the tail keeps ~50 lines."""
    source = (
        "import sys\nfor i in range(40000):\n    print(f'step {i:06d} ' + 'x' * 40)\n"
        + SUMMARY_CODE
        + "summary()\n"
    )
    out = await run_experiment(make_spec(source))
    assert out.status == "ok"
    assert out.log_path.stat().st_size > 1_500_000
    assert len(out.log_tail.splitlines()) == 50
    assert out.log_tail.splitlines()[-1] == "depth: 2"


HANG_POLITE = """
import signal, sys, time
def on_term(signum, frame):
    print("got SIGTERM, exiting", flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, on_term)
print("training forever", flush=True)
while True:
    time.sleep(0.05)
"""

HANG_STUBBORN = """
import signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("ignoring SIGTERM", flush=True)
while True:
    time.sleep(0.05)
"""


async def test_deadline_sigterm_is_enough_for_polite_child(make_spec) -> None:
    """Past 2 x budget + startup the group gets SIGTERM; a polite child exits within grace."""
    spec = make_spec(HANG_POLITE, budget_s=0.4, startup_allowance_s=0.4, kill_grace_s=3)
    assert spec.deadline_s == pytest.approx(1.2)
    out = await run_experiment(spec)
    assert (out.status, out.failure) == ("timeout", "timeout")
    assert "got SIGTERM" in out.log_tail
    assert out.returncode == 0
    assert 1.2 <= out.wall_s < 3.0  # did not wait out the 3 s grace


async def test_deadline_sigkill_for_child_ignoring_sigterm(make_spec) -> None:
    """A child that ignores SIGTERM is SIGKILLed after the grace period and reaped."""
    spec = make_spec(HANG_STUBBORN, budget_s=0.25, startup_allowance_s=0.25, kill_grace_s=0.5)
    out = await run_experiment(spec)
    assert (out.status, out.failure) == ("timeout", "timeout")
    assert out.returncode == -signal.SIGKILL
    assert 1.25 <= out.wall_s < 3.0


GRANDPARENT = """
import subprocess, sys, time, signal
{ignore}
child = subprocess.Popen([sys.executable, "-c", "import signal, time\\n{ignore}\\ntime.sleep(120)"])
open("grandchild.pid", "w").write(str(child.pid))
print("spawned", child.pid, flush=True)
{tail}
"""


async def _wait_for_file(path: Path, needle: str = "", timeout: float = 10.0) -> str:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if path.exists():
            text = path.read_text().strip()
            if text and needle in text:
                return text
        await asyncio.sleep(0.02)
    raise AssertionError(f"{path} never appeared (or never said {needle!r})")


@pytest.mark.parametrize("stubborn", [False, True], ids=["polite", "ignores-sigterm"])
async def test_cancel_kills_whole_process_group(make_spec, alive, reap_leftovers, stubborn) -> None:
    """Cancelling the awaiting task kills train.py and its grandchild before CancelledError."""
    ignore = "signal.signal(signal.SIGTERM, signal.SIG_IGN)" if stubborn else ""
    source = GRANDPARENT.format(ignore=ignore, tail="time.sleep(120)")
    spec = make_spec(source, budget_s=60, kill_grace_s=0.5 if stubborn else 5.0)
    pids: list[int] = []
    task = asyncio.create_task(run_experiment(spec, on_start=lambda pid, _: pids.append(pid)))
    grandchild = int(await _wait_for_file(spec.workdir / "grandchild.pid"))
    reap_leftovers.extend([grandchild, *pids])
    assert alive(grandchild) and alive(pids[0])
    t0 = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    elapsed = time.monotonic() - t0
    assert not alive(pids[0]), "train.py survived the cancel"
    assert not alive(grandchild), "grandchild orphaned"
    assert elapsed < 3.0  # polite: SIGTERM sufficed, the 5 s grace was not waited out
    if stubborn:
        assert elapsed >= 0.5  # SIGKILL only after the grace


async def test_second_cancel_forces_sigkill(make_spec, alive, reap_leftovers) -> None:
    """A second cancel during the grace period skips straight to SIGKILL."""
    spec = make_spec(HANG_STUBBORN, budget_s=60, kill_grace_s=30)
    pids: list[int] = []
    task = asyncio.create_task(run_experiment(spec, on_start=lambda pid, _: pids.append(pid)))
    await _wait_for_file(spec.workdir / LOG_NAME, "ignoring SIGTERM")
    reap_leftovers.extend(pids)
    t0 = time.monotonic()
    task.cancel()
    await asyncio.sleep(0.3)
    assert not task.done()  # waiting out the 30 s grace
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.monotonic() - t0 < 2.0
    assert not alive(pids[0])


async def test_grandchild_left_behind_by_a_finished_run_is_swept(
    make_spec, alive, reap_leftovers
) -> None:
    """A run that exits normally but leaves a background process behind leaves no orphan."""
    source = GRANDPARENT.format(ignore="", tail=SUMMARY_CODE + "summary()")
    spec = make_spec(source)
    out = await run_experiment(spec)
    grandchild = int((spec.workdir / "grandchild.pid").read_text())
    reap_leftovers.append(grandchild)
    assert out.status == "ok"
    await asyncio.sleep(0.1)
    assert not alive(grandchild)


async def test_cancel_from_a_task_group_sibling_failure(make_spec, alive, reap_leftovers) -> None:
    """When a sibling in a TaskGroup fails, the running experiment is killed before the error."""
    spec = make_spec(HANG_POLITE, budget_s=60)
    pids: list[int] = []

    async def boom() -> None:
        await _wait_for_file(spec.workdir / LOG_NAME, "training forever")
        raise RuntimeError("sibling failed")

    with pytest.raises(ExceptionGroup):
        async with asyncio.TaskGroup() as tg:
            tg.create_task(run_experiment(spec, on_start=lambda pid, _: pids.append(pid)))
            tg.create_task(boom())
    reap_leftovers.extend(pids)
    assert pids and not alive(pids[0])


@pytest.mark.parametrize(
    "bad_id", ["", ".", "..", "../escape", "a/b", ".hidden", "x" * 201, "sp ace"]
)
async def test_unsafe_experiment_id_rejected(make_spec, bad_id: str) -> None:
    """experiment_id must be one safe path component."""
    with pytest.raises(RunnerError, match="experiment_id"):
        await run_experiment(make_spec(GOOD, experiment_id=bad_id))


async def test_missing_prepare_or_python_is_a_runner_error(make_spec, tmp_path: Path) -> None:
    """A missing pinned prepare.py or interpreter raises RunnerError naming it."""
    spec = make_spec(GOOD)
    from dataclasses import replace

    with pytest.raises(RunnerError, match=r"prepare\.py"):
        await run_experiment(replace(spec, prepare_py=tmp_path / "nope" / "prepare.py"))
    with pytest.raises(RunnerError, match="no-such-python"):
        await run_experiment(replace(spec, python=str(tmp_path / "no-such-python")))


async def test_rerun_of_same_id_starts_clean(make_spec) -> None:
    """Reusing an experiment id replaces the old scratch dir and log."""
    spec = make_spec(GOOD)
    await run_experiment(spec)
    (spec.workdir / "stale.bin").write_bytes(b"x")
    out = await run_experiment(make_spec("print('second')\n"))
    assert not (spec.workdir / "stale.bin").exists()
    assert "val_bpb" not in out.log_path.read_text()


async def test_parallel_runs_are_independent(make_spec) -> None:
    """Several experiments run at once, each in its own dir with its own GPU pin."""
    specs = [make_spec(GOOD, experiment_id=f"par-{i}", gpu=str(i)) for i in range(4)]
    outs = await asyncio.gather(*(run_experiment(s) for s in specs))
    assert [o.status for o in outs] == ["ok"] * 4
    pins = [json.loads((o.workdir / "env.json").read_text())["CUDA_VISIBLE_DEVICES"] for o in outs]
    assert pins == ["0", "1", "2", "3"]


def test_classify_run_priorities() -> None:
    """Timeout beats everything; ok needs exit 0; infra beats OOM beats traceback."""
    good = "---\n" + "\n".join(
        f"{k}: 1" for k in ("val_bpb", "training_seconds", "total_seconds", "peak_vram_mb",
                            "mfu_percent", "total_tokens_M", "num_steps", "num_params_M", "depth")
    )  # fmt: skip
    assert classify_run(0, good)[:2] == ("ok", None)
    assert classify_run(None, good, timed_out=True, deadline_s=7)[:2] == ("timeout", "timeout")
    assert classify_run(1, good)[:2] == ("crash", "exception")
    both = "Traceback (most recent call last):\nRuntimeError: CUDA error: unspecified launch failure\nCUDA out of memory"
    assert classify_run(1, both)[1] == "infra"
    oom_tb = "Traceback (most recent call last):\n  File 'x'\ntorch.OutOfMemoryError: CUDA out of memory."
    assert classify_run(1, oom_tb)[1] == "oom"
    chained = (
        "Traceback (most recent call last):\n  File 'a'\nKeyError: 'x'\n\nDuring handling...\n\n"
        "Traceback (most recent call last):\n  File 'b'\n    foo()\nTypeError: bad operand\n  more\n"
    )
    assert classify_run(1, chained)[3] == "TypeError: bad operand"
    assert classify_run(-signal.SIGSEGV, "")[1:4:2] == ("signal", "killed by SIGSEGV")
    assert sys.platform.startswith("linux")


async def test_failing_on_start_callback_leaves_no_orphan(make_spec, alive, reap_leftovers) -> None:
    """If the caller's on_start callback raises, the child is still stopped and reaped."""
    spec = make_spec(HANG_POLITE, budget_s=60)
    pids: list[int] = []

    def bad_callback(pid: int, _log: Path) -> None:
        pids.append(pid)
        raise KeyError("status snapshot broke")

    with pytest.raises(KeyError):
        await run_experiment(spec, on_start=bad_callback)
    reap_leftovers.extend(pids)
    assert pids and not alive(pids[0])
