"""The strict parser of train.py's summary block."""

from __future__ import annotations

import pytest

from swarm.errors import RunnerError
from swarm.summary import REQUIRED_KEYS, Summary, SummaryError, parse_summary


def test_parses_the_reference_block(summary_text: str) -> None:
    """A valid block parses to typed, exact values."""
    s = parse_summary("step 1 loss 3.2\n" + summary_text)
    assert s == Summary(
        val_bpb=0.9979,
        training_seconds=300.1,
        total_seconds=325.9,
        peak_vram_mb=45060.2,
        mfu_percent=39.8,
        total_tokens_M=499.6,
        num_steps=953,
        num_params_M=50.3,
        depth=8,
    )
    assert isinstance(s.num_steps, int) and isinstance(s.depth, int)
    assert s.memory_gb == pytest.approx(44.0041, abs=1e-3)


def test_no_block_is_none() -> None:
    """Output without a '---' line has no summary."""
    assert parse_summary("step 1\nstep 2\nval_bpb: 0.9\n") is None
    assert parse_summary("") is None
    assert parse_summary("----\nval_bpb: 1.0\n") is None  # not exactly three dashes


def test_last_block_wins(summary_text: str) -> None:
    """With several blocks, the last one counts."""
    second = summary_text.replace("0.997900", "0.950000")
    assert parse_summary(summary_text + "more training\n" + second).val_bpb == 0.95


def test_missing_key_is_named(summary_text: str) -> None:
    """A block without a required key raises SummaryError naming it."""
    text = "\n".join(ln for ln in summary_text.splitlines() if not ln.startswith("mfu_percent"))
    with pytest.raises(SummaryError, match="mfu_percent") as info:
        parse_summary(text)
    assert info.value.key == "mfu_percent"
    assert isinstance(info.value, RunnerError)


def test_malformed_line_is_named(summary_text: str) -> None:
    """A line that is not 'key: value' inside the block is named in the error."""
    text = summary_text.replace("num_steps:        953", "num_steps 953")
    with pytest.raises(SummaryError, match="num_steps 953"):
        parse_summary(text)


@pytest.mark.parametrize("bad", ["nan", "inf", "-inf", "NaN"])
def test_non_finite_values_rejected(summary_text: str, bad: str) -> None:
    """NaN or infinite numbers are malformed, and the key is named."""
    with pytest.raises(SummaryError, match="not finite") as info:
        parse_summary(summary_text.replace("0.997900", bad))
    assert info.value.key == "val_bpb"


def test_non_numeric_and_non_integer_rejected(summary_text: str) -> None:
    """Text where a number belongs, or a fraction for an integer key, is rejected."""
    with pytest.raises(SummaryError, match="peak_vram_mb"):
        parse_summary(summary_text.replace("45060.2", "lots"))
    with pytest.raises(SummaryError, match="integer"):
        parse_summary(summary_text.replace("953", "953.5"))
    assert parse_summary(summary_text.replace("953", "953.0")).num_steps == 953


def test_duplicate_key_rejected(summary_text: str) -> None:
    """A key given twice in one block is malformed."""
    with pytest.raises(SummaryError, match="duplicate"):
        parse_summary(summary_text + "val_bpb: 0.5\n")


def test_extra_keys_and_trailing_noise(summary_text: str) -> None:
    """Unknown keys are kept in extra; unrelated output after a complete block is ignored."""
    text = summary_text.replace("depth:", "seed:             7\ndepth:")
    text += "\n[W CudaIPCTypes.cpp] Producer process has been terminated\n"
    s = parse_summary(text)
    assert s is not None and s.extra == {"seed": "7"}
    assert set(s.to_json()) == {*REQUIRED_KEYS, "extra"}


def test_crlf_and_padded_separator(summary_text: str) -> None:
    """Windows line ends and spaces around '---' still parse."""
    text = summary_text.replace("---", "---  ").replace("\n", "\r\n")
    assert parse_summary(text).depth == 8
