"""The issue's two easy cheats, end to end through a supervisor: neither becomes a best."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from swarm.config import load_config
from swarm.memory.local import LocalStore
from swarm.namespace import SwarmMemory
from swarm.supervisor import EXIT_OK, Supervisor
from swarm.testing import FakeNvml

REPO = Path(__file__).resolve().parents[2]

# sleeps 0.1 s, never trains or evaluates, prints a summary with a believable val_bpb
PRINTER = textwrap.dedent(
    """\
    import time

    # =============================================================================
    # Hyperparameters
    # =============================================================================
    DEPTH = 8  # layers
    # =============================================================================
    time.sleep(0.1)
    print("---")
    print("val_bpb:          0.510000")
    print("training_seconds: 25.0")
    print("total_seconds:    25.1")
    print("peak_vram_mb:     0.0")
    print("mfu_percent:      0.00")
    print("total_tokens_M:   0.1")
    print("num_steps:        3")
    print("num_params_M:     1.0")
    print("depth:            8")
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("budget", ["0", "0.001"])
async def test_fake_printer_with_or_without_budget_override_is_never_a_best(
    tmp_path: Path, budget: str
) -> None:
    """The 0.51 printer under the real prepare.py is published as invalid; with --budget
    0.001 it lands on a track of its own; no best exists on either track."""
    train = tmp_path / "train.py"
    train.write_text(PRINTER, encoding="utf-8")
    cfg = load_config(
        env={},
        flags={
            "state_dir": str(tmp_path / "state"),
            "memory.path": str(tmp_path / "m.sqlite"),
            "agent_name": "cheater",
            "train_py": str(train),
            "prepare_py": str(REPO / "prepare.py"),
            "prepare_on_start": "false",
            "start_jitter_s": "0",
            "profile": "smoke",
            "dedup.semantic": "false",
            "max_experiments": "1",
            "budget_s": budget,
            "sandbox": "none",
        },
    )
    sup = Supervisor(cfg, nvml=FakeNvml([]), install_signals=False)
    assert await sup.run() == EXIT_OK, sup.exit_reason
    track = "smoke" if budget == "0" else "smoke-budget-0.001"
    assert sup.track == track
    async with LocalStore(tmp_path / "m.sqlite") as store:
        mem = SwarmMemory(store, agent_id="reader")
        results = await mem.results()
        assert [(r.track, r.status, r.failure, r.val_bpb) for r in results] == [
            (track, "invalid", "metric", None)
        ]
        assert "never reported a value" in results[0].reason
        for name in ("smoke", "smoke-budget-0.001"):
            assert await mem.get_best(name) is None
            assert await mem.get_best(name, "cpu") is None
            assert await mem.candidates.listing(name) == []
