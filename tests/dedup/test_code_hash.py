"""The code identity of section 1 (exact layer): swarm.trainpy.code_hash and swarm.dedup.analyse."""

from __future__ import annotations

import pytest

from swarm.dedup import analyse
from swarm.errors import TrainPyError
from swarm.trainpy import apply_changes, code_hash

BLOCK = '''"""A tiny train.py."""
import math

# =============================================================================
# Hyperparameters (agents edit this block)
# =============================================================================
TOTAL_BATCH_SIZE = {batch}  # tokens per step
MATRIX_LR = {lr}  # Muon learning rate
DEPTH = 8
# =============================================================================
# Model
# =============================================================================


def lr_at(step):
    """Learning rate at a step."""
    return MATRIX_LR * math.exp(-step / 1000)
'''


def src(batch: str = "2**19", lr: str = "0.001") -> str:
    return BLOCK.format(batch=batch, lr=lr)


@pytest.mark.parametrize(
    "batch", ["524288", "524_288", "2 ** 19", "(2**19)", "2**20 // 2", "2**18 * 2"]
)
def test_powers_and_separators_hash_equal(batch: str) -> None:
    """2**19, 524288, 524_288 (and other folded integer forms) give one code hash."""
    assert code_hash(src(batch=batch)) == code_hash(src())


@pytest.mark.parametrize("lr", ["1e-3", "1E-3", "0.0010", ".001", "1e-03", "10e-4"])
def test_float_spellings_hash_equal(lr: str) -> None:
    """1e-3 and 0.001 (and other spellings of the same float) give one code hash."""
    assert code_hash(src(lr=lr)) == code_hash(src())


def test_comments_docstrings_and_layout_ignored() -> None:
    """Comments, docstrings and formatting do not change the code hash."""
    a = src()
    b = (
        a.replace("# tokens per step", "# a different comment")
        .replace('"""A tiny train.py."""', '"""Another module docstring."""')
        .replace('    """Learning rate at a step."""\n', "")
        .replace(
            "return MATRIX_LR * math.exp(-step / 1000)",
            "return MATRIX_LR*math.exp(\n        -step/1000\n    )  # decay",
        )
        .replace("\n\ndef lr_at", "\n\n\n\ndef lr_at")
    )
    assert a != b
    assert code_hash(b) == code_hash(a)


def test_class_and_async_docstrings_ignored() -> None:
    """Docstrings of classes and async functions are not part of the identity."""
    a = "class A:\n    x = 1\n\n\nasync def f():\n    return 1\n"
    b = 'class A:\n    """Doc."""\n    x = 1\n\n\nasync def f():\n    """Doc."""\n    return 1\n'
    assert code_hash(a) == code_hash(b)


def test_real_changes_change_the_hash() -> None:
    """A different value, or a code edit, gives a different hash."""
    base = code_hash(src())
    assert code_hash(src(lr="0.002")) != base
    assert code_hash(src(batch="2**18")) != base
    assert code_hash(src().replace("-step / 1000", "-step / 500")) != base


def test_value_types_are_kept_apart() -> None:
    """An int and a float of equal value are different code (range(2.0) fails); True is not 1."""
    assert code_hash("X = 2\n") != code_hash("X = 2.0\n")
    assert code_hash("X = True\n") != code_hash("X = 1\n")


def test_analyse_matches_trainpy_on_the_real_train_py(train_py: str) -> None:
    """dedup.analyse computes the same code hash as trainpy.code_hash, from one parse."""
    info = analyse(train_py)
    assert info.code_hash == code_hash(train_py)
    edited = apply_changes(train_py, {"MATRIX_LR": 0.05, "TOTAL_BATCH_SIZE": 2**18})
    edited = edited.replace("F.relu(self.c_fc(x)).square()", "F.silu(self.c_fc(x))")
    assert analyse(edited).code_hash == code_hash(edited)
    assert info.constants()["TOTAL_BATCH_SIZE"] == 524288


def test_analyse_separates_constants_from_code(train_py: str) -> None:
    """A constants change keeps the code skeleton; a code edit keeps the constants."""
    base = analyse(train_py)
    const = analyse(apply_changes(train_py, {"DEPTH": 9}))
    code = analyse(train_py.replace("F.relu(self.c_fc(x)).square()", "F.silu(self.c_fc(x))"))
    assert const.skeleton == base.skeleton and const.constants_fp != base.constants_fp
    assert code.skeleton != base.skeleton and code.constants_fp == base.constants_fp
    assert len(code.stmts - base.stmts) == 1  # one top-level statement (class MLP) replaced


def test_analyse_treats_non_literal_constants_as_code() -> None:
    """A block assignment that is not a literal is part of the code, not a constant."""
    s = src().replace("DEPTH = 8", "DEPTH = int(8)")
    info = analyse(s)
    assert "DEPTH" not in info.names
    assert info.code_hash == code_hash(s)


def test_analyse_errors_are_trainpy_errors() -> None:
    """Unparsable sources raise TrainPyError; huge literal arithmetic is analysed unfolded."""
    with pytest.raises(TrainPyError, match="does not parse"):
        analyse("def f(:\n")
    assert analyse("X = (10**100)**50\n").code_hash == code_hash("X = (10**100)**50\n")


def test_constants_only_fast_path_matches_full_analysis(train_py: str) -> None:
    """Children that only change constants are analysed from the parent's template, with
    exactly the result of a full parse (hash, constants, skeleton)."""
    import random

    from swarm import dedup

    rng = random.Random(3)
    analyse(train_py)  # leaves a template for train.py's code outside the block
    checked = 0
    for _ in range(40):
        changes = {
            "MATRIX_LR": round(rng.uniform(0.001, 0.2), 5),
            "TOTAL_BATCH_SIZE": 2 ** rng.randint(14, 21),
            "WINDOW_PATTERN": rng.choice(["SSSL", "SL", "L"]),
            "ADAM_BETAS": (round(rng.uniform(0.7, 0.95), 3), 0.95),
        }
        child = apply_changes(train_py, dict(rng.sample(sorted(changes.items()), 2)))
        fast = analyse(child)
        dedup.clear_analysis_caches()
        full = analyse(child)
        assert fast.code_hash == full.code_hash == code_hash(child)
        assert (fast.names, fast.values, fast.skeleton, fast.stmts, fast.constants_fp) == (
            full.names,
            full.values,
            full.skeleton,
            full.stmts,
            full.constants_fp,
        )
        checked += 1
    # a block line that is not a literal falls back to the full path, still correct
    odd = train_py.replace("DEPTH = 8", "DEPTH = int(8)")
    analyse(train_py)
    assert analyse(odd).code_hash == code_hash(odd) and "DEPTH" not in analyse(odd).names
    assert checked == 40


def test_statement_cache_matches_full_normalisation(train_py: str) -> None:
    """Code edits analysed with cached statement dumps hash exactly like trainpy.code_hash."""
    from swarm import dedup

    edits = [
        ("F.relu(self.c_fc(x)).square()", "F.silu(self.c_fc(x))"),
        ("min(step / 300, 1.0)", "min(step / 200, 1.0)"),
        ("def norm(x):\n", 'def norm(x):\n    """RMS norm."""\n'),
        ("def norm(x):\n", "@torch.no_grad()\ndef norm(x):\n"),
        ("import gc  # noqa: E402\n", "import gc; import re  # noqa: E402\n"),
    ]
    analyse(train_py)
    for old, new in edits:
        assert old in train_py, old
        src = apply_changes(train_py.replace(old, new, 1), {"DEPTH": 9})
        cached = analyse(src)
        dedup.clear_analysis_caches()
        assert cached.code_hash == analyse(src).code_hash == code_hash(src), old


def test_shift_and_power_spellings_hash_alike() -> None:
    """`1 << 19` is the same literal as `2**19`."""
    assert code_hash("TOTAL_BATCH_SIZE = 1 << 19\n") == code_hash("TOTAL_BATCH_SIZE = 2**19\n")


def test_huge_literal_arithmetic_hashes_without_error() -> None:
    """Arithmetic too large to fold is hashed unfolded instead of failing."""
    a = code_hash("X = (10**100)**50\n")
    assert a == code_hash("X = (10 ** 100) ** 50  # same\n")
    assert a != code_hash("X = (10**100)**49\n")


def test_unparseable_source_is_a_trainpy_error_not_a_value_error() -> None:
    """A null byte in train.py is reported as TrainPyError ("does not parse"), like bad syntax."""
    from swarm.trainpy import constants

    with pytest.raises(TrainPyError, match="does not parse: source code string"):
        code_hash("X = 1\x00\n")
    with pytest.raises(TrainPyError, match="does not parse: line 2: invalid syntax"):
        constants("# Hyperparameters\nX = = 1\n")
