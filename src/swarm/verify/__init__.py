"""Checks that decide whether a run's result may be believed (README, "Trust").

Public surface: :func:`check_train_py` (the static check of a train.py before it runs),
:class:`MetricChannel` and :func:`prepare_reports_metric` (the trusted metric from
prepare.py), :func:`check_plausible` with :class:`Expectations` (the summary against what the
supervisor measured), :func:`judge_run`/:func:`refuse_code` (one verdict, :class:`Invalid`),
and :func:`budget_track`/:func:`base_profile` (another budget is another track).
"""

from swarm.verify.metric import (
    METRIC_FD_ENV,
    MetricChannel,
    TrustedMetric,
    compare_metric,
    prepare_reports_metric,
)
from swarm.verify.plausible import Expectations, base_profile, budget_track, check_plausible
from swarm.verify.static import Finding, check_train_py
from swarm.verify.verdict import Invalid, InvalidKind, judge_run, refuse_code

__all__ = [
    "METRIC_FD_ENV",
    "Expectations",
    "Finding",
    "Invalid",
    "InvalidKind",
    "MetricChannel",
    "TrustedMetric",
    "base_profile",
    "budget_track",
    "check_plausible",
    "check_train_py",
    "compare_metric",
    "judge_run",
    "prepare_reports_metric",
    "refuse_code",
]
