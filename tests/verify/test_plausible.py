"""Plausibility rules on their own: wall time, budget, token count, prepare hash, tracks."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from swarm.config import load_config
from swarm.summary import Summary
from swarm.verify import Expectations, base_profile, budget_track, check_plausible

TRAIN_PY = (Path(__file__).resolve().parents[2] / "train.py").read_text(encoding="utf-8")
# smoke track: grad_accum 2**19 // (128 * 2048) = 2, rows 128 // 64 = 2, 256 tokens a row
SMOKE_BATCH = 2 * 2 * 256

GOOD = Summary(
    val_bpb=2.1,
    training_seconds=25.2,
    total_seconds=31.0,
    peak_vram_mb=0.0,
    mfu_percent=0.0,
    total_tokens_M=round(40 * SMOKE_BATCH / 1e6, 3),
    num_steps=40,
    num_params_M=0.8,
    depth=8,
)
EXPECT = Expectations(profile="smoke", budget_s=25.0, prepare_sha256="ab" * 32)


def reasons(
    summary: Summary = GOOD,
    wall_s: float = 33.0,
    prepare_hash: str = "ab" * 32,
    expect: Expectations = EXPECT,
) -> list[str]:
    return check_plausible(
        summary, wall_s=wall_s, prepare_hash=prepare_hash, train_py=TRAIN_PY, expect=expect
    )


def test_a_real_looking_smoke_run_passes() -> None:
    """A summary consistent with the wall time, budget, constants and pinned hash passes."""
    assert reasons() == []


def test_wall_time_must_cover_training() -> None:
    """Claimed training longer than the measured run is refused."""
    assert any("lasted 3.0 s" in r for r in reasons(wall_s=3.0))


def test_token_count_must_match_steps_and_batch() -> None:
    """total_tokens_M that is not num_steps x the constants' batch is refused."""
    found = reasons(replace(GOOD, total_tokens_M=5.0))
    assert any("total_tokens_M 5" in r and f"{SMOKE_BATCH} tokens per step" in r for r in found)


def test_prepare_hash_must_be_the_pinned_one() -> None:
    """A run of another prepare.py than the pinned one is refused."""
    assert any("not the pinned" in r for r in reasons(prepare_hash="cd" * 32))


def test_stub_target_skips_the_training_rules() -> None:
    """Without the real prepare.py (stubs), budget and token rules do not apply."""
    stub = replace(EXPECT, real_target=False)
    assert reasons(replace(GOOD, training_seconds=0.2, total_tokens_M=9.0), expect=stub) == []


def test_other_budget_is_another_track() -> None:
    """--budget other than the profile's names a track of its own; the profile stays readable."""
    assert budget_track("smoke", 25.0, 25.0) == "smoke"
    assert budget_track("smoke", 0.0, 25.0) == "smoke"
    track = budget_track("smoke", 0.001, 25.0)
    assert track == "smoke-budget-0.001" and base_profile(track) == "smoke"
    cfg = load_config(env={}, flags={"budget_s": "2", "profile": "smoke"})
    assert cfg.effective_startup_allowance_s(budget_track("smoke", 2.0, 25.0)) == 60.0
