"""Replication against liars, simulated on the synthetic trainer over a real SQLite store."""

from __future__ import annotations

from pathlib import Path

import pytest
from trust_sim import simulate

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("seed", [0, 1])
async def test_no_lie_is_ever_the_verified_best(tmp_path: Path, seed: int) -> None:
    """50 agents, 10 % lying by 0.01-0.3 bpb, 2,000 experiments: every lie that became a
    candidate is refuted, none is ever the verified best, and confirmations stay at most
    10 % of all runs with a verdict one run (5 minutes) after the candidate."""
    report = await simulate(
        tmp_path / "swarm.sqlite", agents=50, experiments=2000, liar_share=0.1, seed=seed
    )
    print("\n" + report.summary())
    assert report.lie_candidates > 5  # the liars did get candidates in
    assert report.lies_verified == 0 and report.lie_best_rounds == 0
    assert report.lies_refuted == report.lie_candidates
    assert report.overhead <= 0.10
    assert report.honest_refuted <= 0.05 * (report.candidates - report.lie_candidates)
    assert max(report.waits_s) <= 2 * 300
