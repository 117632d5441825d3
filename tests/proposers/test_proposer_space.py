"""The search space: moves per constant kind and the validity rules of train.py."""

from __future__ import annotations

import pytest

from swarm.proposers.base import TRACK_SHAPES
from swarm.proposers.space import (
    build_space,
    check_values,
    describe_changes,
    model_dims,
    repair_batch,
)
from swarm.trainpy import constants

STD = TRACK_SHAPES["standard"]
SMOKE = TRACK_SHAPES["smoke"]


@pytest.fixture
def values(train_src: str) -> dict:
    return constants(train_src)


def _dim(values: dict, key: str):
    return next(d for d in build_space(values) if d.key == key)


def test_real_train_py_is_valid_on_both_tracks(values: dict) -> None:
    """The shipped train.py passes the validity rules of the standard and smoke tracks."""
    assert check_values(values, STD) is None
    assert check_values(values, SMOKE) is None


def test_space_covers_the_block_but_not_the_seed(values: dict) -> None:
    """Every tunable constant of train.py gets a dim; SEED is never searched."""
    keys = {d.key for d in build_space(values)}
    assert {
        "MATRIX_LR",
        "DEPTH",
        "TOTAL_BATCH_SIZE",
        "ADAM_BETAS[0]",
        "ADAM_BETAS[1]",
        "WINDOW_PATTERN",
        "HEAD_DIM",
        "LOGIT_SOFTCAP",
        "WARMDOWN_RATIO",
    } <= keys
    assert "SEED" not in keys


def test_rates_step_in_log_space(values: dict) -> None:
    """A learning rate moves by a factor (sqrt 2 at level 0, smaller at higher levels)."""
    d = _dim(values, "MATRIX_LR")
    up, down = d.move(0.04, 1, 0), d.move(0.04, -1, 0)
    assert up == pytest.approx(0.0566, rel=1e-3) and down == pytest.approx(0.0283, rel=1e-3)
    assert 0.04 < d.move(0.04, 1, 1) < up  # a finer step


def test_batch_sizes_stay_powers_of_two(values: dict) -> None:
    """TOTAL_BATCH_SIZE doubles or halves; there is no half-size power-of-two step."""
    d = _dim(values, "TOTAL_BATCH_SIZE")
    assert d.move(2**19, 1, 0) == 2**20 and d.move(2**19, -1, 0) == 2**18
    assert d.move(2**19, 1, 1) is None


def test_depth_moves_by_whole_layers(values: dict) -> None:
    """DEPTH moves by 2 then by 1 and is always an int; nothing finer exists."""
    d = _dim(values, "DEPTH")
    assert (d.move(8, 1, 0), d.move(8, 1, 1), d.move(8, 1, 2)) == (10, 9, None)
    assert isinstance(d.move(8, -1, 1), int)


def test_betas_move_one_component_and_stay_below_one(values: dict) -> None:
    """An Adam beta moves in log(1 - beta), the other beta is untouched."""
    d = _dim(values, "ADAM_BETAS[1]")
    new = d.move((0.8, 0.95), 1, 0)
    assert new[0] == 0.8 and 0.95 < new[1] < 1.0


def test_ratios_clamp_into_range(values: dict) -> None:
    """WARMUP_RATIO cannot go below 0."""
    d = _dim(values, "WARMUP_RATIO")
    assert d.move(0.0, -1, 0) is None
    assert d.move(0.0, 1, 0) == pytest.approx(0.05)


def test_unknown_constants_get_a_generic_rule() -> None:
    """Unknown UPPER_CASE constants are searched by type; run-identity ones are not."""
    dims = {
        d.key: d
        for d in build_space(
            {"FOO_LR": 0.01, "N_WIDGETS": 6, "USE_X": True, "EVAL_EVERY": 100, "MY_SEED": 3}
        )
    }
    assert dims["FOO_LR"].kind == "log" and dims["N_WIDGETS"].kind == "int"
    assert dims["USE_X"].move(True, 1, 0) is False
    assert "EVAL_EVERY" not in dims and "MY_SEED" not in dims


def test_batch_not_divisible_is_rejected(values: dict) -> None:
    """The real crash 'batch 131K not divisible by device batch' is caught before running."""
    bad = {**values, "TOTAL_BATCH_SIZE": 131072}
    reason = check_values(bad, STD)
    assert reason and "TOTAL_BATCH_SIZE 131072" in reason and "128 x 2048" in reason
    assert check_values(bad, SMOKE)  # the block is written for 2048 on every track


def test_repair_halves_the_device_batch(values: dict) -> None:
    """A smaller TOTAL_BATCH_SIZE brings a smaller DEVICE_BATCH_SIZE along."""
    fixed = repair_batch(values, {"TOTAL_BATCH_SIZE": 2**17}, STD)
    assert fixed == {"TOTAL_BATCH_SIZE": 2**17, "DEVICE_BATCH_SIZE": 64}
    assert repair_batch(values, {"DEVICE_BATCH_SIZE": 512}, STD) is None


def test_head_dim_must_fit_the_width(values: dict) -> None:
    """A head dim that would more than double the model width is rejected."""
    assert model_dims(values, STD) == (512, 4, 128)
    assert model_dims(values, SMOKE) == (128, 4, 32)
    tiny = {**values, "DEPTH": 1, "ASPECT_RATIO": 64, "HEAD_DIM": 256}
    assert "HEAD_DIM 256" in (check_values(tiny, STD) or "")
    assert "even" in (check_values({**values, "HEAD_DIM": 127}, STD) or "")


def test_sane_ranges(values: dict) -> None:
    """Out-of-range constants and a bad window pattern are rejected, naming the constant."""
    assert "MATRIX_LR" in (check_values({**values, "MATRIX_LR": 5.0}, STD) or "")
    assert "WINDOW_PATTERN" in (check_values({**values, "WINDOW_PATTERN": "SXL"}, STD) or "")
    assert "WARMDOWN_RATIO" in (
        check_values({**values, "WARMUP_RATIO": 0.5, "WARMDOWN_RATIO": 0.7}, STD) or ""
    )


def test_description_style() -> None:
    """Descriptions read `PARAM old → new`, keeping a 2**k style."""
    text = describe_changes(
        {"TOTAL_BATCH_SIZE": (2**19, 2**18), "MATRIX_LR": (0.04, 0.05)},
        {"TOTAL_BATCH_SIZE": "2**19"},
    )
    assert text == "TOTAL_BATCH_SIZE 2**19 → 2**18, MATRIX_LR 0.04 → 0.05"
