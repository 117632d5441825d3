"""Key builders: layout compatible with the original clients, locks keyed by code."""

from __future__ import annotations

import re

import pytest

from swarm import keys
from swarm.errors import InvalidRequestError

P = "a1" * 32
C = "b2" * 32


def test_slug() -> None:
    """Descriptions become short lower-case slugs with dashes; empty input still gives a segment."""
    assert keys.slug("MATRIX_LR 0.04 → 0.05") == "matrix-lr-0-04-0-05"
    assert keys.slug("  Increase LR to 0.04!! ") == "increase-lr-to-0-04"
    assert keys.slug("x" * 100) == "x" * 40
    assert keys.slug("a" * 39 + " b") == "a" * 39
    assert keys.slug("→→") == "x"


def test_claim_and_result_keys_are_human_readable() -> None:
    """claims/ and results/ keys are <agent>--<slug>--<hash6>."""
    k = keys.claim_key("Ada GPU0", "MATRIX_LR 0.04 → 0.05", P, C)
    assert re.fullmatch(r"claims/ada-gpu0--matrix-lr-0-04-0-05--[0-9a-f]{6}", k)
    r = keys.result_key("ada", "MATRIX_LR 0.04 → 0.05", P, C, seed=1)
    assert re.fullmatch(r"results/ada--matrix-lr-0-04-0-05--[0-9a-f]{6}", r)
    assert keys.result_key("ada", "d", P, C, seed=2) != keys.result_key("ada", "d", P, C, seed=1)
    assert keys.result_key("ada", "d", P, C, 1, attempt=1) != keys.result_key("ada", "d", P, C, 1)


def test_lock_key_depends_on_code_not_on_agent_or_words() -> None:
    """Two agents describing the same code differently share one lock; other code does not."""
    a = keys.experiment_lock_key(P, C)
    assert a == f"locks/exp/{P[:12]}--{C[:12]}/g000001"
    assert "ada" not in a
    assert keys.claim_key("ada", "LR up", P, C) != keys.claim_key("bob", "raise LR", P, C)
    assert keys.experiment_lock_key(P, "c3" * 32) != a
    assert keys.experiment_lock_key("", C).startswith("locks/exp/root--")
    assert keys.lock_generation(keys.experiment_lock_key(P, C, 12)) == 12
    assert keys.lock_generation("claims/x") is None


def test_lock_key_is_scoped_by_track_and_tier() -> None:
    """The same code on another track or tier is another experiment with its own lock."""
    a = keys.experiment_lock_key(P, C, track="standard", tier="xl")
    assert a == f"locks/exp/standard/xl/{C[:12]}/g000001"
    assert a != keys.experiment_lock_key(P, C, track="standard", tier="large")
    assert a != keys.experiment_lock_key(P, C, track="smoke", tier="xl")
    assert keys.experiment_lock_key(P, C, track="smoke").startswith("locks/exp/smoke/any/")


def test_lock_key_rejects_non_hash() -> None:
    """A code hash that is not hex is refused with a hint."""
    with pytest.raises(InvalidRequestError, match="code_hash"):
        keys.experiment_lock_key(P, "not-a-hash")


def test_best_keys_standard_track_are_the_original_ones() -> None:
    """The standard track uses best/metadata, best/tier/<t>/..., best/agent/<a>, leaderboard."""
    assert keys.best_metadata_key("standard") == "best/metadata"
    assert keys.best_train_py_key("standard") == "best/train_py"
    assert keys.best_metadata_key("standard", "small") == "best/tier/small/metadata"
    assert keys.best_train_py_key("standard", "xl") == "best/tier/xl/train_py"
    assert keys.agent_best_key("gpu0") == "best/agent/gpu0"
    assert keys.leaderboard_key() == "leaderboard"


def test_best_keys_other_tracks_are_separate() -> None:
    """Other tracks live under best/track/<track>/ and never share a key with standard."""
    assert keys.best_metadata_key("smoke") == "best/track/smoke/metadata"
    assert keys.best_metadata_key("smoke", "cpu") == "best/track/smoke/tier/cpu/metadata"
    assert keys.agent_best_key("gpu0", "smoke") == "best/track/smoke/agent/gpu0"
    assert keys.leaderboard_key("smoke") == "leaderboard/smoke"
    assert keys.pending_key("smoke", "cpu", P, C) == f"best/pending/smoke/cpu/{P[:12]}--{C[:12]}"


@pytest.mark.parametrize("bad", ["", "a/b", "../x", "sp ace"])
def test_bad_track_or_tier_names_are_refused(bad: str) -> None:
    """Track, tier and agent names that cannot be a key segment raise InvalidRequestError."""
    with pytest.raises(InvalidRequestError, match="cannot be part of a key"):
        keys.best_metadata_key(bad)
    with pytest.raises(InvalidRequestError, match="tier"):
        keys.best_metadata_key("standard", bad or "x/y")
    with pytest.raises(InvalidRequestError, match="agent_id"):
        keys.agent_best_key(bad)


def test_hypothesis_take_key() -> None:
    """Taking a hypothesis uses locks/hyp/<tail>; other orgs' keys are refused."""
    assert keys.hypothesis_take_key("hypotheses/a--b--123456") == "locks/hyp/a--b--123456"
    with pytest.raises(InvalidRequestError):
        keys.hypothesis_take_key("@other/hypotheses/x")


def test_a_scoped_lock_is_the_code_whatever_the_parent() -> None:
    """The same train.py reached from two parents is one lock (one run of that code)."""
    other_parent = "e7" * 32
    a = keys.experiment_lock_key(P, C, track="standard", tier="xl")
    assert keys.experiment_lock_key(other_parent, C, track="standard", tier="xl") == a
    assert keys.experiment_lock_key("", C, track="standard", tier="xl") == a
