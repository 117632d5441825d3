"""``python -m swarm dedup``: the command line for external agents (real subprocesses)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from swarm.trainpy import apply_changes, code_hash

ROOT = Path(__file__).resolve().parents[2]


def swarm(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), OMP_WAIT_POLICY="PASSIVE")
    return subprocess.run(
        [sys.executable, "-m", "swarm", "dedup", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def write_known(tmp_path: Path, train_py: str) -> Path:
    lines = [
        {"key": "results/base", "description": "baseline", "train_py": train_py, "parent_hash": ""},
        {
            "key": "results/lr",
            "description": "MATRIX_LR 0.04 -> 0.05",
            "train_py": apply_changes(train_py, {"MATRIX_LR": 0.05}),
            "parent_hash": code_hash(train_py),
        },
        {
            "key": "claims/other",
            "description": "depth 9",
            "code_hash": code_hash(apply_changes(train_py, {"DEPTH": 9})),
        },
    ]
    path = tmp_path / "results.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n", encoding="utf-8")
    return path


@pytest.mark.slow
def test_check_duplicate_and_new(tmp_path: Path, train_py: str) -> None:
    """A known change exits 1 naming the layer; a new one exits 0 (code layers only)."""
    known = write_known(tmp_path, train_py)
    (tmp_path / "parent.py").write_text(train_py, encoding="utf-8")
    dup = tmp_path / "dup.py"
    dup.write_text(
        apply_changes(train_py, {"MATRIX_LR": 0.05}).replace("MATRIX_LR = 0.05", "MATRIX_LR = 5e-2")
    )
    r = swarm(
        "check",
        "--description",
        "increase matrix LR to 0.05",
        "--train-py",
        str(dup),
        "--parent",
        "parent.py",
        "--known",
        str(known),
        "--json",
        "--no-semantic",
        cwd=tmp_path,
    )
    assert r.returncode == 1, r.stderr
    out = json.loads(r.stdout)
    assert out["duplicate"] and out["layer"] == "exact" and out["match_key"] == "results/lr"
    assert out["known"] == 3 and out["changes"] == [["MATRIX_LR", 0.04, 0.05]]
    new = tmp_path / "new.py"
    new.write_text(apply_changes(train_py, {"MATRIX_LR": 0.045}))
    r = swarm(
        "check",
        "--description",
        "matrix LR 0.04 to 0.045",
        "--train-py",
        str(new),
        "--parent-hash",
        code_hash(train_py),
        "--known",
        str(known),
        "--no-semantic",
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("NEW: new change: MATRIX_LR 0.04 → 0.045")
    claimed = tmp_path / "claimed.py"
    claimed.write_text(apply_changes(train_py, {"DEPTH": 9}))
    r = swarm(
        "check",
        "--description",
        "depth 9",
        "--train-py",
        str(claimed),
        "--known",
        str(known),
        "--no-semantic",
        cwd=tmp_path,
    )
    assert r.returncode == 1 and "claims/other" in r.stdout


@pytest.mark.slow
def test_check_usage_errors(tmp_path: Path, train_py: str) -> None:
    """Missing files, bad JSON lines and bad thresholds exit 2 with a one-line reason."""
    (tmp_path / "t.py").write_text(train_py)
    r = swarm("check", "--description", "x", "--train-py", "missing.py", cwd=tmp_path)
    assert r.returncode == 2 and "cannot read train_py missing.py" in r.stderr
    (tmp_path / "bad.jsonl").write_text("{not json\n")
    r = swarm(
        "check",
        "--description",
        "x",
        "--train-py",
        "t.py",
        "--known",
        "bad.jsonl",
        "--no-semantic",
        cwd=tmp_path,
    )
    assert r.returncode == 2 and "bad.jsonl:1" in r.stderr
    r = swarm(
        "check", "--description", "x", "--train-py", "t.py", "--threshold", "1.5", cwd=tmp_path
    )
    assert r.returncode == 2 and "--threshold" in r.stderr
    (tmp_path / "broken.py").write_text("def f(:\n")
    r = swarm(
        "check", "--description", "x", "--train-py", "broken.py", "--no-semantic", cwd=tmp_path
    )
    assert r.returncode == 2 and "does not parse" in r.stderr
    r = swarm(
        "check",
        "--description",
        "x",
        "--train-py",
        "t.py",
        "--memory",
        "local",
        "--no-semantic",
        cwd=tmp_path,
    )
    assert r.returncode == 2 and "--path" in r.stderr


def test_parse_subcommand(tmp_path: Path) -> None:
    """`dedup parse` prints the changes and, with --train-py, their resolved values."""
    (tmp_path / "train.py").write_text((ROOT / "train.py").read_text())
    r = swarm(
        "parse", "halve batch 524K to 262K (more steps)", "--train-py", "train.py", cwd=tmp_path
    )
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["complete"] and out["resolved"] == {"TOTAL_BATCH_SIZE": 262144}
    assert out["changes"][0]["name"] == "TOTAL_BATCH_SIZE"


@pytest.mark.slow
async def test_check_against_a_local_memory(tmp_path: Path, train_py: str) -> None:
    """`--memory local` reads the results of a real SQLite store and finds the duplicate."""
    import time

    from swarm.memory.factory import open_memory
    from swarm.namespace import SwarmMemory
    from swarm.records import Result

    child = apply_changes(train_py, {"MATRIX_LR": 0.05})
    db = tmp_path / "memory.db"
    async with open_memory("local", path=db) as backend:
        mem = SwarmMemory(backend, agent_id="tester")
        key = await mem.publish_result(
            Result(
                agent_id="tester",
                status="discard",
                description="MATRIX_LR 0.04 -> 0.05",
                train_py=child,
                val_bpb=1.0,
                completed_at=time.time(),
                track="standard",
                parent_hash=code_hash(train_py),
                code_hash=code_hash(child),
            )
        )
    (tmp_path / "cand.py").write_text(child.replace("MATRIX_LR = 0.05", "MATRIX_LR = 5e-2"))
    (tmp_path / "parent.py").write_text(train_py)
    r = swarm(
        "check",
        "--description",
        "increase matrix LR to 0.05",
        "--train-py",
        "cand.py",
        "--parent",
        "parent.py",
        "--memory",
        "local",
        "--path",
        str(db),
        "--no-semantic",
        cwd=tmp_path,
    )
    assert r.returncode == 1, r.stderr
    assert f"as {key}" in r.stdout and "[1 known experiments]" in r.stdout
