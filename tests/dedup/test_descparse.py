"""Parsing descriptions into constant changes (section 2), on the forms agents use and real rows."""

from __future__ import annotations

import pytest

from swarm.descparse import canonical_name, description_head, parse_description, parse_value
from swarm.trainpy import constants


def changes(text: str, names=None) -> list[tuple]:
    return [(c.name, c.old, c.new, c.factor) for c in parse_description(text, names).changes]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("MATRIX_LR 0.04 to 0.05", [("MATRIX_LR", 0.04, 0.05, None)]),
        ("MATRIX_LR 0.04->0.05", [("MATRIX_LR", 0.04, 0.05, None)]),
        ("MATRIX_LR 0.04 → 0.05", [("MATRIX_LR", 0.04, 0.05, None)]),
        ("MATRIX_LR=0.05", [("MATRIX_LR", None, 0.05, None)]),
        ("increase MATRIX_LR to 0.05", [("MATRIX_LR", None, 0.05, None)]),
        ("increase matrix learning rate from 0.04 to 0.05", [("MATRIX_LR", 0.04, 0.05, None)]),
        ("halve MATRIX_LR", [("MATRIX_LR", None, None, 0.5)]),
        ("double batch", [("TOTAL_BATCH_SIZE", None, None, 2.0)]),
        ("TOTAL_BATCH_SIZE 2**19 → 2**18", [("TOTAL_BATCH_SIZE", 524288, 262144, None)]),
        ("TOTAL_BATCH_SIZE 2^16→2^17", [("TOTAL_BATCH_SIZE", 65536, 131072, None)]),
        ("halve batch 524K to 262K", [("TOTAL_BATCH_SIZE", 524288, 262144, None)]),
        ("RoPE base frequency 10K to 200K", [("ROPE_BASE", 10000, 200000, None)]),
        (
            "MATRIX_LR 0.04->0.05, WARMDOWN_RATIO 0.5->0.7",
            [("MATRIX_LR", 0.04, 0.05, None), ("WARMDOWN_RATIO", 0.5, 0.7, None)],
        ),
        ("depth 9 aspect_ratio 57", [("DEPTH", None, 9, None), ("ASPECT_RATIO", None, 57, None)]),
        ("warmdown 0.5 to 0.7", [("WARMDOWN_RATIO", 0.5, 0.7, None)]),
        ("add 5% warmup", [("WARMUP_RATIO", None, 0.05, None)]),
        ("Adam beta1 0.8 to 0.85", [("ADAM_BETAS[0]", 0.8, 0.85, None)]),
        ("softcap 15 to 20", [("LOGIT_SOFTCAP", 15, 20, None)]),
        ("SSSSL window pattern", [("WINDOW_PATTERN", None, "SSSSL", None)]),
        ("window SSSL->SSLL", [("WINDOW_PATTERN", "SSSL", "SSLL", None)]),
        ("lower matrix lr to 0.01", [("MATRIX_LR", None, 0.01, None)]),
        ("3x MATRIX_LR 0.04->0.12", [("MATRIX_LR", 0.04, 0.12, None)]),
    ],
)
def test_forms(text: str, expected: list[tuple]) -> None:
    """Every description style of the issue parses to the intended changes."""
    assert changes(text) == expected


def test_rationale_and_results_are_cut_off() -> None:
    """Hypothesis, evidence and val_bpb results after the change are not read as changes."""
    text = (
        "MATRIX_LR 0.03→0.04 (hypothesis: higher Muon LR, evidence: 0.03→0.04 elsewhere): "
        "val_bpb 1.283→1.269 (0.014 improvement). MFU 86→92% and tok/sec 68K→71K"
    )
    p = parse_description(text)
    assert p.head == "MATRIX_LR 0.03→0.04"
    assert changes(text) == [("MATRIX_LR", 0.03, 0.04, None)]
    assert p.complete


def test_explicit_changes_inside_parentheses_are_kept() -> None:
    """A parenthesised NAME a→b or NAME=b is a change; other parenthesised text is commentary."""
    p = parse_description("DEPTH 12→14 at same width (ASPECT_RATIO 64→54, 215M params)")
    assert [c.name for c in p.changes] == ["DEPTH", "ASPECT_RATIO"]
    p = parse_description("add LR warmup (WARMUP_RATIO=0.05)")
    assert [(c.name, c.new) for c in p.changes] == [("WARMUP_RATIO", 0.05)]
    assert changes("halve batch 524K to 262K (more steps in 5 min)") == [
        ("TOTAL_BATCH_SIZE", 524288, 262144, None)
    ]


def test_unknown_parameters_and_code_changes_are_reported() -> None:
    """Names that map to no constant, and words that state no value, make a parse incomplete."""
    p = parse_description("VE gate channels 32 to 48")
    assert not p.parsed and p.unknown
    p = parse_description("SiLU + matrix LR 0.06")
    assert p.parsed and not p.complete and "SiLU" in p.leftover
    assert not parse_description("SwiGLU gated MLP").parsed


def test_names_restrict_identifiers_to_the_train_py(train_py: str) -> None:
    """With train.py's names, snake_case identifiers that are not constants are rejected."""
    names = constants(train_py)
    assert changes("x0_lambda init 0.1 to 0.05") == [("X0_LAMBDA", 0.1, 0.05, None)]
    assert changes("x0_lambda init 0.1 to 0.05", names) == []
    assert changes("aspect_ratio 64 to 72", names) == [("ASPECT_RATIO", 64, 72, None)]


def test_resolve_against_parent_constants(train_py: str) -> None:
    """Factors, tuple elements and types resolve against the parent's constants."""
    consts = constants(train_py)
    assert parse_description("halve batch").resolve(consts) == {"TOTAL_BATCH_SIZE": 262144}
    assert parse_description("double MATRIX_LR").resolve(consts) == {"MATRIX_LR": 0.08}
    assert parse_description("Adam beta1 0.8 to 0.85").resolve(consts) == {
        "ADAM_BETAS": (0.85, 0.95)
    }
    resolved = parse_description("depth 9.0").resolve(consts)
    assert resolved == {"DEPTH": 9} and isinstance(resolved["DEPTH"], int)
    assert parse_description("SEED 42 to 7, FOO_BAR 1 to 2").resolve(consts) == {"SEED": 7}


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("2**19", 524288),
        ("2^17", 131072),
        ("524K", 524288),
        ("10K", 10000),
        ("131K", 131072),
        ("5%", 0.05),
        ("1/8", 0.125),
        ("1e-3", 0.001),
        ("524_288", 524288),
        ("SSSL", "SSSL"),
        ("(0.8, 0.95)", (0.8, 0.95)),
        ("True", True),
        ("'abc'", "abc"),
        ("2x", 2),
    ],
)
def test_parse_value(text: str, value: object) -> None:
    """Value tokens of descriptions become Python values."""
    assert parse_value(text) == value


@pytest.mark.parametrize("text", ["abc", "", "1/0", "2**999"])
def test_parse_value_rejects_junk(text: str) -> None:
    """Text that is not a value raises ValueError."""
    with pytest.raises(ValueError):
        parse_value(text)


def test_aliases() -> None:
    """Free-text names map to the constants of train.py; qualifiers that change the meaning don't."""
    assert canonical_name("matrix LR") == "MATRIX_LR"
    assert canonical_name("warmdown") == "WARMDOWN_RATIO"
    assert canonical_name("batch") == "TOTAL_BATCH_SIZE"
    assert canonical_name("depth") == "DEPTH"
    assert canonical_name("the unembedding LR") == "UNEMBEDDING_LR"
    assert canonical_name("fine-tune MATRIX_LR") == "MATRIX_LR"
    assert canonical_name("VE WD") is None  # not the Muon weight decay
    assert canonical_name("VE LR") is None  # not the matrix LR


REAL_ROWS = [
    ("halve batch 524K to 262K (more steps in 5 min)", {"TOTAL_BATCH_SIZE": 262144}),
    ("warmdown 0.5 to 0.7", {"WARMDOWN_RATIO": 0.7}),
    ("embedding LR 0.6 to 0.8", {"EMBEDDING_LR": 0.8}),
    ("unembedding LR 0.004 to 0.008", {"UNEMBEDDING_LR": 0.008}),
    ("FINAL_LR_FRAC 0.0 to 0.05", {"FINAL_LR_FRAC": 0.05}),
    ("matrix LR 0.04 to 0.045", {"MATRIX_LR": 0.045}),
    ("random seed 42 to 137", {"SEED": 137}),
    ("softcap 15 to 20", {"LOGIT_SOFTCAP": 20}),
    ("weight decay 0.2 to 0.15", {"WEIGHT_DECAY": 0.15}),
    ("Adam beta1 0.8 to 0.85", {"ADAM_BETAS": (0.85, 0.95)}),
    ("reduce Muon weight decay from 0.2 to 0.1", {"WEIGHT_DECAY": 0.1}),
    ("2x MATRIX_LR 0.04->0.08", {"MATRIX_LR": 0.08}),
    ("double total batch size to 2^17", {"TOTAL_BATCH_SIZE": 131072}),
    ("halve batch size to 2^15 (more optimizer steps)", {"TOTAL_BATCH_SIZE": 32768}),
    ("SSSSL window pattern (5:1 short:long)", {"WINDOW_PATTERN": "SSSSL"}),
    ("depth 9 aspect_ratio 57 (extra layer dim ~512)", {"DEPTH": 9, "ASPECT_RATIO": 57}),
    (
        "HEAD_DIM 128→64 (6 heads→12 heads) (hypothesis: more attention heads = more diverse "
        "patterns",
        {"HEAD_DIM": 64},
    ),
    ("set final LR fraction to 0.1", {"FINAL_LR_FRAC": 0.1}),
    ("add 5% warmup", {"WARMUP_RATIO": 0.05}),
]


@pytest.mark.parametrize(("text", "resolved"), REAL_ROWS)
def test_real_rows(text: str, resolved: dict, train_py: str, real_descriptions: list[str]) -> None:
    """Rows of the real data set resolve to the intended changes of the project's train.py."""
    assert any(" ".join(r.split()).startswith(text[:40]) for r in real_descriptions), text
    consts = constants(train_py)
    p = parse_description(text, names=consts)
    assert p.resolve(consts) == resolved


def test_share_of_real_rows_parsed(real_descriptions: list[str]) -> None:
    """On the 522 real descriptions: >= 65 % give a change, >= 55 % parse completely."""
    assert len(real_descriptions) >= 520
    parsed = [parse_description(d) for d in real_descriptions]
    share = sum(p.parsed for p in parsed) / len(parsed)
    complete = sum(p.complete for p in parsed) / len(parsed)
    assert share >= 0.65, share
    assert complete >= 0.55, complete
    # no result figure is ever read as a change
    assert not any(c.name in ("VAL_BPB", "MFU") for p in parsed for c in p.changes)


def test_description_head() -> None:
    """The head ends before the rationale, the results or a dash commentary."""
    assert description_head("MLP 2x->1x — val_bpb improved 1.737->1.710") == "MLP 2x->1x"
    assert description_head("Hypothesis: smaller batch") == ""
    assert description_head("  warmdown   0.5 to 0.7 ") == "warmdown 0.5 to 0.7"
