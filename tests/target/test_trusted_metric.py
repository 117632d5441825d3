"""The real train.py and prepare.py under a verifying runner: no false alarm, a lie caught."""

from __future__ import annotations

from pathlib import Path

import pytest
from target_helpers import PREPARE_PY, TRAIN_PY, PreparedCache

from swarm.runner import RunSpec, run_experiment
from swarm.verify import check_train_py

pytestmark = pytest.mark.slow


def _spec(tmp_path: Path, cache: PreparedCache, source: str, name: str, **env: str) -> RunSpec:
    return RunSpec(
        train_py=source,
        prepare_py=PREPARE_PY,
        work_root=tmp_path,
        experiment_id=name,
        gpu=None,
        profile="smoke",
        budget_s=2.0,
        startup_allowance_s=240.0,
        verify=True,
        env={
            "AUTORESEARCH_CACHE": str(cache.root),
            "AUTORESEARCH_TIME_BUDGET": "2",
            "OMP_NUM_THREADS": "1",
            **env,
        },
    )


async def test_honest_smoke_run_passes_every_check(
    tmp_path: Path, smoke_cache: PreparedCache
) -> None:
    """The shipped train.py on the smoke track: the metric matches, the summary is plausible."""
    out = await run_experiment(_spec(tmp_path, smoke_cache, TRAIN_PY.read_text(), "honest"))
    assert out.status == "ok", (out.message, out.log_tail)
    assert out.summary is not None and out.summary.training_seconds >= 2.0


async def test_lowered_val_bpb_is_invalid(tmp_path: Path, smoke_cache: PreparedCache) -> None:
    """A train.py that subtracts 0.05 from the measured val_bpb passes the static check (it is
    plain arithmetic) but is caught by the trusted metric."""
    honest = TRAIN_PY.read_text()
    anchor = "    val_bpb = evaluate_bpb(step_model, tokenizer, eval_batch)\n"
    assert anchor in honest
    cheat = honest.replace(anchor, anchor + "val_bpb -= 0.05\n")
    assert check_train_py(cheat) == []
    out = await run_experiment(
        _spec(tmp_path, smoke_cache, cheat, "cheat", AUTORESEARCH_MAX_STEPS="2")
    )
    assert (out.status, out.failure) == ("invalid", "metric"), (out.message, out.log_tail)
    assert "prepare.evaluate_bpb measured" in out.message
