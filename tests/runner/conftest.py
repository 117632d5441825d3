"""Fixtures of the runner tests: a pinned prepare.py, RunSpec factory, process liveness."""

from __future__ import annotations

import os
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from swarm.runner import RunSpec

SUMMARY = textwrap.dedent(
    """\
    ---
    val_bpb:          0.997900
    training_seconds: 300.1
    total_seconds:    325.9
    peak_vram_mb:     45060.2
    mfu_percent:      39.80
    total_tokens_M:   499.6
    num_steps:        953
    num_params_M:     50.3
    depth:            8
    """
)


@pytest.fixture
def summary_text() -> str:
    """A valid summary block, as train.py prints it."""
    return SUMMARY


@pytest.fixture
def prepare_py(tmp_path: Path) -> Path:
    """A stand-in pinned prepare.py that train.py stand-ins import."""
    path = tmp_path / "pinned" / "prepare.py"
    path.parent.mkdir()
    path.write_text("MAX_SEQ_LEN = 2048\nTIME_BUDGET = 300\n", encoding="utf-8")
    return path


@pytest.fixture
def make_spec(tmp_path: Path, prepare_py: Path) -> Callable[..., RunSpec]:
    """Build a RunSpec for a train.py source with tiny, test-sized time limits."""

    def make(train_py: str, experiment_id: str = "exp-1", **kw: Any) -> RunSpec:
        opts: dict[str, Any] = {
            "gpu": None,
            "profile": "smoke",
            "budget_s": 0.5,
            "startup_allowance_s": 0.5,
            "kill_grace_s": 0.5,
        }
        opts.update(kw)
        return RunSpec(
            train_py=textwrap.dedent(train_py),
            prepare_py=prepare_py,
            work_root=tmp_path / "work",
            experiment_id=experiment_id,
            **opts,
        )

    return make


def pid_alive(pid: int) -> bool:
    """True when ``pid`` runs and is not a zombie (a container's init may not reap)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    state = stat.rsplit(")", 1)[1].split()[0]
    return state not in ("Z", "X")


@pytest.fixture
def alive() -> Callable[[int], bool]:
    """Process liveness check that treats zombies as dead."""
    return pid_alive


@pytest.fixture
def reap_leftovers():
    """Kill (and report) any pid a test registered that is still alive at teardown."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        if pid_alive(pid):
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
