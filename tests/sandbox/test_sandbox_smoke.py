"""The real smoke train.py learns the same inside every sandbox as outside it."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from swarm.runner import RunSpec, run_experiment
from swarm.sandbox import Sandbox

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def smoke_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The smoke track prepared once by the real prepare.py into a temporary cache."""
    root = tmp_path_factory.mktemp("sandbox-cache")
    env = {**os.environ, "AUTORESEARCH_CACHE": str(root)}
    done = subprocess.run(
        [sys.executable, str(REPO / "prepare.py"), "--profile", "smoke"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return root


@pytest.mark.slow
@pytest.mark.timeout(600)
async def test_same_val_bpb_with_and_without_a_sandbox(
    smoke_cache: Path,
    sandboxes: dict[str, Sandbox],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A fixed-step smoke run (same seed) reports the same val_bpb bare, under bwrap and under
    unshare: the sandbox changes where files are, not what is computed."""
    monkeypatch.setenv("AUTORESEARCH_CACHE", str(smoke_cache))
    env = {"AUTORESEARCH_MAX_STEPS": "6", "AUTORESEARCH_SEED": "7", "OMP_NUM_THREADS": "2"}
    base = RunSpec(
        train_py=(REPO / "train.py").read_text(),
        prepare_py=REPO / "prepare.py",
        work_root=tmp_path / "runs",
        experiment_id="bare",
        gpu=None,
        profile="smoke",
        budget_s=25,
        startup_allowance_s=200,
        env=env,
    )
    vals: dict[str, float] = {}
    for name in ("bare", "bwrap", "unshare"):
        spec = replace(base, experiment_id=name)
        if name != "bare":
            spec = replace(spec, sandbox=replace(sandboxes[name], cache_dir=smoke_cache))
        out = await run_experiment(spec)
        assert out.ok, (name, out.message, out.log_tail)
        assert out.summary is not None and out.summary.num_steps == 6
        assert out.sandbox == ("none" if name == "bare" else name)
        vals[name] = out.summary.val_bpb
    assert vals["bwrap"] == vals["bare"] == vals["unshare"], vals
