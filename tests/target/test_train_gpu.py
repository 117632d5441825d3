"""train.py on a CUDA GPU (marked gpu: skipped on machines without CUDA).

The standard track needs the climbmix shards, which a test cannot download; these tests run
the CUDA code path (bf16 autocast, torch.compile, the fast attention kernel, MFU) on the
smoke track's local data instead.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from types import ModuleType

import pytest

from swarm.summary import parse_summary

pytestmark = [pytest.mark.gpu, pytest.mark.slow]


def test_cuda_run_reports_gpu_memory_and_mfu(
    smoke_cache: object, scratch_run: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    """On CUDA the run finishes with a summary whose peak VRAM and MFU are measured (non-zero)."""
    proc = scratch_run(smoke_cache, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    summary = parse_summary(proc.stdout)
    assert summary is not None
    assert summary.peak_vram_mb > 0
    assert 0 < summary.mfu_percent < 100
    assert summary.num_steps > 10


def test_cuda_run_without_compile_still_learns(
    smoke_cache: object,
    scratch_run: Callable[..., subprocess.CompletedProcess[str]],
    prep: ModuleType,
    tokenizer: object,
) -> None:
    """With torch.compile off (AUTORESEARCH_COMPILE=0) the CUDA path beats the unigram bpb."""
    proc = scratch_run(smoke_cache, timeout=600, AUTORESEARCH_COMPILE="0")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    summary = parse_summary(proc.stdout)
    assert summary is not None and summary.val_bpb < prep.unigram_bpb(tokenizer, 8)
