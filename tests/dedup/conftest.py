"""Fixtures of the dedup tests: the project's train.py, the real embedder, the pair tooling."""

from __future__ import annotations

import os
from pathlib import Path
from types import ModuleType

import pytest

# torch's OpenMP threads spin while they wait; on a shared 2-core machine that makes one
# embedding take seconds instead of milliseconds. Must be set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture(scope="session")
def train_py() -> str:
    """The project's own train.py (the file agents edit)."""
    return (ROOT / "train.py").read_text(encoding="utf-8")


@pytest.fixture(scope="session")
def embedder():
    """The real all-MiniLM-L6-v2 embedder (loaded once per session)."""
    from swarm.embedding import get_embedder

    e = get_embedder()
    e.embed(["warm up"])
    return e


@pytest.fixture(scope="session")
def calib() -> ModuleType:
    """benchmarks/dedup_calibration.py (pair loading, rebuilding, scoring, the split)."""
    from benchmarks import dedup_calibration

    return dedup_calibration


@pytest.fixture(scope="session")
def real_descriptions() -> list[str]:
    """The agent-written descriptions of shared/data (a copy in tests/dedup/data)."""
    import csv

    with (DATA / "real_experiment_descriptions.tsv").open(newline="", encoding="utf-8") as fh:
        return [r["description"] for r in csv.DictReader(fh, delimiter="\t")]
