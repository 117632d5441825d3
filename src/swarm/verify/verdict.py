"""One verdict on a finished run: believed, or ``invalid`` with the first reason."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from swarm.summary import Summary
from swarm.verify.metric import TrustedMetric, compare_metric
from swarm.verify.plausible import Expectations, check_plausible
from swarm.verify.static import Finding

__all__ = ["Invalid", "InvalidKind", "judge_run", "refuse_code"]

InvalidKind = Literal["static", "metric", "implausible"]


@dataclass(frozen=True, slots=True)
class Invalid:
    """Why a run's result is ``invalid``: the check that refused it and every reason."""

    kind: InvalidKind
    reasons: tuple[str, ...]

    @property
    def message(self) -> str:
        head = {
            "static": "refused before running",
            "metric": "metric mismatch",
            "implausible": "implausible summary",
        }[self.kind]
        return f"invalid ({head}): " + "; ".join(self.reasons)


def refuse_code(findings: list[Finding]) -> Invalid | None:
    """The verdict of the static check (None: the code may run)."""
    if not findings:
        return None
    return Invalid("static", tuple(str(f) for f in findings[:10]))


def judge_run(
    summary: Summary,
    *,
    trusted: TrustedMetric | None,
    wall_s: float,
    prepare_hash: str,
    train_py: str,
    expect: Expectations,
) -> Invalid | None:
    """The verdict on a run that printed a valid summary (``trusted`` None: prepare.py cannot
    report the metric, so only plausibility is judged)."""
    if trusted is not None:
        mismatch = compare_metric(summary.val_bpb, trusted)
        if mismatch is not None:
            return Invalid("metric", (mismatch,))
    reasons = check_plausible(
        summary, wall_s=wall_s, prepare_hash=prepare_hash, train_py=train_py, expect=expect
    )
    return Invalid("implausible", tuple(reasons)) if reasons else None
