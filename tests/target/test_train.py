"""train.py on the smoke track, run as a subprocess exactly as the runner runs it."""

from __future__ import annotations

import re
import subprocess
import time
from dataclasses import dataclass
from types import ModuleType

import pytest
from target_helpers import TRAIN_PY, PreparedCache, run_train

from swarm.summary import REQUIRED_KEYS, parse_summary
from swarm.trainpy import apply_changes, constants

# the summary block of DESIGN.md: key, value pattern; the value starts at column 18
SUMMARY_FORMAT = [
    ("val_bpb", r"\d+\.\d{6}"),
    ("training_seconds", r"\d+\.\d"),
    ("total_seconds", r"\d+\.\d"),
    ("peak_vram_mb", r"\d+\.\d"),
    ("mfu_percent", r"\d+\.\d{2}"),
    ("total_tokens_M", r"\d+\.\d(\d\d)?"),  # 3 decimals below 10 M (smoke track)
    ("num_steps", r"\d+"),
    ("num_params_M", r"\d+\.\d"),
    ("depth", r"\d+"),
]
STEP_LINE = re.compile(r"^step (\d{5}) .*\| loss (\d+\.\d+) \|", re.MULTILINE)


@dataclass(frozen=True)
class Run:
    proc: subprocess.CompletedProcess[str]
    wall_s: float


def train(tmp_path_factory, cache: PreparedCache, source: str | None = None, **env: str) -> Run:
    t0 = time.perf_counter()
    proc = run_train(tmp_path_factory.mktemp("train"), cache, source, **env)
    return Run(proc, time.perf_counter() - t0)


def step_losses(stdout: str) -> dict[int, str]:
    return {int(m.group(1)): m.group(2) for m in STEP_LINE.finditer(stdout)}


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory, smoke_cache: PreparedCache) -> Run:
    """One full smoke-track run of the repository's train.py."""
    return train(tmp_path_factory, smoke_cache)


def test_hyperparameter_block_is_editable_by_the_swarm() -> None:
    """swarm.trainpy reads the block (every knob the proposers need) and edits it in place."""
    source = TRAIN_PY.read_text()
    block = constants(source)
    for name in (
        "ASPECT_RATIO",
        "HEAD_DIM",
        "WINDOW_PATTERN",
        "TOTAL_BATCH_SIZE",
        "EMBEDDING_LR",
        "UNEMBEDDING_LR",
        "MATRIX_LR",
        "SCALAR_LR",
        "WEIGHT_DECAY",
        "ADAM_BETAS",
        "WARMUP_RATIO",
        "WARMDOWN_RATIO",
        "FINAL_LR_FRAC",
        "DEPTH",
        "DEVICE_BATCH_SIZE",
        "SEED",
    ):
        assert name in block, name
    assert block["TOTAL_BATCH_SIZE"] % (block["DEVICE_BATCH_SIZE"] * 2048) == 0
    edited = apply_changes(source, {"MATRIX_LR": 0.05, "DEPTH": 9})
    assert constants(edited) == {**block, "MATRIX_LR": 0.05, "DEPTH": 9}
    assert "import swarm" not in source and "from swarm" not in source


@pytest.mark.slow
def test_smoke_run_prints_the_exact_summary_block(smoke_run: Run, prep: ModuleType) -> None:
    """A smoke run exits 0 within budget plus overhead and ends with the DESIGN.md block."""
    proc = smoke_run.proc
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = proc.stdout.rstrip("\n").splitlines()
    assert lines[-10] == "---"
    for line, (key, pattern) in zip(lines[-9:], SUMMARY_FORMAT, strict=True):
        assert line[:18] == f"{key}:".ljust(18), line
        assert re.fullmatch(pattern, line[18:]), line
    summary = parse_summary(proc.stdout)
    assert summary is not None and tuple(k for k, _ in SUMMARY_FORMAT) == REQUIRED_KEYS
    budget = prep.TIME_BUDGET
    assert budget <= summary.training_seconds < budget + 15
    assert summary.training_seconds < summary.total_seconds <= smoke_run.wall_s + 0.5
    assert smoke_run.wall_s < 2 * budget + 60
    assert summary.depth == 8 and summary.peak_vram_mb == 0.0
    assert summary.num_steps > 2 and summary.total_tokens_M > 0
    assert 1.0 < summary.num_params_M < 20.0


@pytest.mark.slow
def test_smoke_run_beats_the_unigram_baseline(smoke_run: Run, prep: ModuleType, tokenizer) -> None:
    """val_bpb is below the unigram bits per byte of the validation targets: it learns."""
    summary = parse_summary(smoke_run.proc.stdout)
    assert summary is not None
    unigram = prep.unigram_bpb(tokenizer, 8)
    print(
        f"smoke: val_bpb {summary.val_bpb:.4f} vs unigram {unigram:.4f}, "
        f"{summary.num_steps} steps, wall {smoke_run.wall_s:.1f}s"
    )
    assert summary.val_bpb < unigram


@pytest.fixture(scope="module")
def absurd_lr_run(tmp_path_factory, smoke_cache: PreparedCache) -> Run:
    """A run whose learning rates are absurd (same SEED as the repository's train.py)."""
    src = apply_changes(
        TRAIN_PY.read_text(), {"MATRIX_LR": 1e6, "EMBEDDING_LR": 1e6, "UNEMBEDDING_LR": 1e6}
    )
    return train(tmp_path_factory, smoke_cache, src)


@pytest.mark.slow
def test_seed_is_honoured(
    tmp_path_factory, smoke_cache: PreparedCache, smoke_run: Run, absurd_lr_run: Run
) -> None:
    """The same SEED gives the same init and first batch (same first loss); another changes it."""
    reference = step_losses(smoke_run.proc.stdout)
    assert step_losses(absurd_lr_run.proc.stdout)[0] == reference[0]  # LR acts after step 0
    other_src = apply_changes(TRAIN_PY.read_text(), {"SEED": 7})
    other = train(tmp_path_factory, smoke_cache, other_src, AUTORESEARCH_TIME_BUDGET="0.5")
    assert other.proc.returncode == 0, other.proc.stderr[-2000:]
    assert step_losses(other.proc.stdout)[0] != reference[0]


@pytest.mark.slow
def test_block_constants_shape_the_smoke_model(
    tmp_path_factory, smoke_cache: PreparedCache
) -> None:
    """Editing DEPTH / ASPECT_RATIO / DEVICE_BATCH_SIZE changes the smoke run accordingly."""
    src = apply_changes(
        TRAIN_PY.read_text(), {"DEPTH": 4, "ASPECT_RATIO": 32, "DEVICE_BATCH_SIZE": 64}
    )
    run = train(tmp_path_factory, smoke_cache, src, AUTORESEARCH_TIME_BUDGET="0.5")
    assert run.proc.returncode == 0, run.proc.stderr[-2000:]
    assert "model: depth 4, width 32," in run.proc.stdout
    assert "= 4 x 1 x 256" in run.proc.stdout  # twice the micro-steps of half the rows
    summary = parse_summary(run.proc.stdout)
    assert summary is not None and summary.depth == 4 and summary.num_params_M < 1.5


def test_syntax_error_exits_nonzero_without_summary(
    tmp_path_factory, smoke_cache: PreparedCache
) -> None:
    """A train.py that does not parse fails with a SyntaxError and prints no summary."""
    run = train(tmp_path_factory, smoke_cache, TRAIN_PY.read_text() + "\ndef broken(:\n")
    assert run.proc.returncode != 0
    assert "SyntaxError" in run.proc.stderr
    assert parse_summary(run.proc.stdout) is None and "---" not in run.proc.stdout


def test_absurd_learning_rate_fails_fast(absurd_lr_run: Run) -> None:
    """Exploding loss prints FAIL and exits 1 within a few steps, without a summary."""
    proc = absurd_lr_run.proc
    assert proc.returncode == 1
    assert proc.stdout.rstrip().splitlines()[-1] == "FAIL"
    assert parse_summary(proc.stdout) is None
    assert max(step_losses(proc.stdout), default=0) < 5  # fast: within a few steps


def test_standard_track_needs_cuda(tmp_path_factory, smoke_cache: PreparedCache) -> None:
    """Without CUDA the standard track refuses to start and points at the smoke track."""
    run = train(
        tmp_path_factory, smoke_cache, AUTORESEARCH_PROFILE="standard", CUDA_VISIBLE_DEVICES=""
    )
    assert run.proc.returncode == 1
    assert "AUTORESEARCH_PROFILE=smoke" in run.proc.stderr
    assert parse_summary(run.proc.stdout) is None


def test_batch_that_does_not_divide_is_rejected(
    tmp_path_factory, smoke_cache: PreparedCache
) -> None:
    """TOTAL_BATCH_SIZE not a multiple of DEVICE_BATCH_SIZE x seq len fails with its names."""
    src = apply_changes(TRAIN_PY.read_text(), {"DEVICE_BATCH_SIZE": 96})
    run = train(tmp_path_factory, smoke_cache, src)
    assert run.proc.returncode == 1
    assert "TOTAL_BATCH_SIZE 524288 must be a multiple of DEVICE_BATCH_SIZE" in run.proc.stderr
    assert parse_summary(run.proc.stdout) is None
