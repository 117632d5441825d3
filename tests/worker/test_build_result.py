"""build_result: the result record of a finished run, with nothing else touched."""

from __future__ import annotations

from pathlib import Path

from worker_support import SOURCE

from swarm.proposers import Proposal
from swarm.runner import RunOutcome
from swarm.summary import Summary
from swarm.trainpy import apply_changes, code_hash
from swarm.worker import ResultOrigin, build_result
from swarm.worker.deps import Queued

ORIGIN = ResultOrigin(agent_id="alice", host="h1", track="smoke", tier="cpu", gpu_name="cpu")


def _outcome(status: str, val: float | None, tmp: Path) -> RunOutcome:
    summary = (
        None
        if val is None
        else Summary(
            val_bpb=val,
            training_seconds=2.0,
            total_seconds=3.0,
            peak_vram_mb=3072.0,
            mfu_percent=4.0,
            total_tokens_M=1.5,
            num_steps=7,
            num_params_M=1.0,
            depth=2,
        )
    )
    return RunOutcome(
        status=status,
        failure=None if status == "ok" else "exception",  # type: ignore[arg-type]
        summary=summary,
        message="",
        log_path=tmp / "run.log",
        log_tail="Traceback ...\nRuntimeError: boom",
        returncode=0,
        wall_s=3.25,
        prepare_hash="ab" * 32,
        workdir=tmp,
    )


def _item(changes: dict[str, object], *, parent_val: float | None = None) -> Queued:
    child = apply_changes(SOURCE, changes)  # type: ignore[arg-type]
    proposal = Proposal(
        train_py=child, description="lr down", parent_hash=code_hash(SOURCE), proposer="search"
    )
    return Queued(proposal, code_hash(child), parent_val, slow=False)


def test_ok_run_with_delta_changes_and_seed(tmp_path: Path) -> None:
    """An ok run: metrics from the summary, delta against the parent, the changes read
    from the sources, the seed from train.py's SEED."""
    item = _item({"MATRIX_LR": 0.03, "SEED": 7})
    result = build_result(
        item,
        _outcome("ok", 1.25, tmp_path),
        "discard",
        origin=ORIGIN,
        parent_train_py=SOURCE,
        parent_val=1.5,
        completed_at=123.0,
    )
    assert result.val_bpb == 1.25 and result.delta == -0.25
    assert result.changes == {"MATRIX_LR": (0.04, 0.03), "SEED": (42, 7)}
    assert result.seed == 7 and result.memory_gb == 3.0 and result.num_steps == 7
    assert (result.agent_id, result.host, result.track, result.vram_tier) == (
        "alice",
        "h1",
        "smoke",
        "cpu",
    )
    assert result.code_hash == item.code_hash and result.status == "discard"
    assert result.log_tail == "" and result.wall_s == 3.25 and result.completed_at == 123.0


def test_crash_keeps_the_log_tail_and_has_no_metric(tmp_path: Path) -> None:
    """A crash without a summary: no val_bpb, no delta, the log tail kept, an explicit
    seed (a confirming run's) wins over train.py's."""
    result = build_result(
        _item({"MATRIX_LR": 0.5}),
        _outcome("crash", None, tmp_path),
        "crash",
        origin=ORIGIN,
        parent_train_py=SOURCE,
        parent_val=1.5,
        completed_at=1.0,
        seed=99,
    )
    assert result.val_bpb is None and result.delta is None and result.memory_gb is None
    assert "RuntimeError: boom" in result.log_tail and result.failure == "exception"
    assert result.seed == 99


def test_no_parent_value_means_no_delta(tmp_path: Path) -> None:
    """Without the parent's val_bpb the delta stays unknown (never invented)."""
    result = build_result(
        _item({"MATRIX_LR": 0.03}),
        _outcome("ok", 1.1, tmp_path),
        "keep",
        origin=ORIGIN,
        parent_train_py=SOURCE,
        parent_val=None,
        completed_at=1.0,
    )
    assert result.delta is None and result.val_bpb == 1.1
