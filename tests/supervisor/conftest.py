"""Fixtures of the supervisor tests: a scriptable fake trainer and test configs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sup_helpers import FAKE_TRAIN, with_fill

from swarm.config import SwarmConfig, load_config
from swarm.trainpy import apply_changes

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def fake_sources(tmp_path: Path) -> Callable[..., tuple[Path, Path]]:
    """Write the fake train.py (constants overridable) and a stub prepare.py."""

    def make(**consts: Any) -> tuple[Path, Path]:
        src = apply_changes(FAKE_TRAIN, consts) if consts else FAKE_TRAIN
        if consts.get("MODE") == "fill":
            src = with_fill(src)
        folder = tmp_path / "src"
        folder.mkdir(exist_ok=True)
        train = folder / "train.py"
        train.write_text(src, encoding="utf-8")
        prepare = folder / "prepare.py"
        prepare.write_text("# stub: the fake trainer needs no data\n", encoding="utf-8")
        return train, prepare

    return make


@pytest.fixture
def make_config(tmp_path: Path) -> Callable[..., SwarmConfig]:
    """A config for a test: its own state dir and memory file, no jitter, no SWARM_* env."""

    def make(**flags: Any) -> SwarmConfig:
        base = {
            "state_dir": str(tmp_path / "state"),
            "memory.path": str(tmp_path / "memory.sqlite"),
            "start_jitter_s": "0",
            "status_interval_s": "0.2",
            "agent_name": "tester",
            "prepare_on_start": "false",
            # one agent alone: bests move without a confirmation round (tests of
            # swarm.verify.candidates and tests/verify/test_two_agents.py turn it on)
            "verified_bests": "false",
        }
        base.update({k: str(v) for k, v in flags.items()})
        return load_config(env={}, flags=base)

    return make
