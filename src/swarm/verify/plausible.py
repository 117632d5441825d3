"""Plausibility of a finished run, judged on the machine that ran it.

The summary block is printed by untrusted code; what the supervisor measured itself (the
run's wall time, the hash of the prepare.py it handed the run, the budget it set) is not.
:func:`check_plausible` returns the reasons a summary cannot be true:

- the supervisor's own wall time must cover ``training_seconds`` and ``total_seconds``;
- on a real target (a prepare.py that reports the metric) a time-budget run must have
  trained for its budget, and ``num_steps`` x the batch of the train.py's constants must be
  the reported ``total_tokens_M``;
- ``prepare_hash`` must be the one pinned at start.

A run with another budget than its profile's is another track (:func:`budget_track`), so
it is never compared with the track's bests.
"""

from __future__ import annotations

from dataclasses import dataclass

from swarm.errors import TrainPyError
from swarm.summary import Summary
from swarm.tracks import REFERENCE_SEQ_LEN, TRACKS
from swarm.trainpy import constants

__all__ = [
    "Expectations",
    "base_profile",
    "budget_track",
    "check_plausible",
    "parse_track",
]

BUDGET_MARK = "-budget-"

#: per profile: (tokens per row, divisor of DEVICE_BATCH_SIZE, reference row length),
#: from the track table
GEOMETRY: dict[str, tuple[int, int, int]] = {
    name: (t.seq_len, t.batch_divisor, REFERENCE_SEQ_LEN) for name, t in TRACKS.items()
}

#: the summary prints seconds with one decimal; wall time also covers interpreter start-up
CLOCK_SLACK_S = 0.5
#: a time-budget run stops at the first step past the budget: it may not stop before it
BUDGET_FRACTION = 0.99


def budget_track(profile: str, budget_s: float, default_s: float) -> str:
    """The track of runs with ``budget_s``: the profile itself, or ``<profile>-budget-<s>``."""
    if budget_s <= 0 or abs(budget_s - default_s) < 1e-9:
        return profile
    return f"{profile}{BUDGET_MARK}{budget_s:g}"


def base_profile(track: str) -> str:
    """The profile a track trains (``smoke-budget-2`` -> ``smoke``)."""
    return track.split(BUDGET_MARK, 1)[0]


def parse_track(value: str) -> str:
    """``value`` if it names a track (``smoke``, ``standard``, ``smoke-budget-2``, ...); else
    :class:`ValueError` naming the accepted forms (argparse turns it into exit 2)."""
    profile, mark, budget = value.partition(BUDGET_MARK)
    ok = profile in GEOMETRY
    if ok and mark:
        try:
            seconds = float(budget)
        except ValueError:
            ok = False
        else:
            ok = seconds > 0 and budget == f"{seconds:g}"
    if not ok:
        names = ", ".join(sorted(GEOMETRY))
        raise ValueError(
            f"unknown track {value!r}: use a profile ({names}) or <profile>{BUDGET_MARK}<seconds> "
            f"as `swarm run --budget` names it (e.g. smoke{BUDGET_MARK}2)"
        )
    return value


@dataclass(frozen=True, slots=True)
class Expectations:
    """What the supervisor knows about a run independently of its output."""

    profile: str
    budget_s: float
    prepare_sha256: str = ""
    #: AUTORESEARCH_MAX_STEPS was set: the run trains a step count, not the budget
    fixed_steps: bool = False
    #: the pinned prepare.py is the real target (it reports the metric); a stub skips the
    #: checks that need real training
    real_target: bool = True


def _batch_tokens(train_py: str, profile: str) -> int | None:
    geometry = GEOMETRY.get(base_profile(profile))
    if geometry is None:
        return None
    seq_len, divisor, reference = geometry
    try:
        values = constants(train_py)
    except (TrainPyError, ValueError):
        return None
    total, device = values.get("TOTAL_BATCH_SIZE"), values.get("DEVICE_BATCH_SIZE")
    if not (isinstance(total, int) and isinstance(device, int)) or device <= 0:
        return None
    if isinstance(total, bool) or isinstance(device, bool):
        return None
    return (total // (device * reference)) * max(1, device // divisor) * seq_len


def check_plausible(
    summary: Summary, *, wall_s: float, prepare_hash: str, train_py: str, expect: Expectations
) -> list[str]:
    """Every reason the summary cannot describe the run the supervisor watched (empty: ok)."""
    reasons: list[str] = []
    s = summary
    if s.training_seconds > wall_s + CLOCK_SLACK_S:
        reasons.append(
            f"the summary claims {s.training_seconds:.1f} s of training but the run "
            f"lasted {wall_s:.1f} s"
        )
    if s.total_seconds > wall_s + CLOCK_SLACK_S:
        reasons.append(
            f"the summary claims {s.total_seconds:.1f} s in total but the run lasted {wall_s:.1f} s"
        )
    if s.training_seconds > s.total_seconds + CLOCK_SLACK_S:
        reasons.append(
            f"training_seconds {s.training_seconds:.1f} exceeds total_seconds {s.total_seconds:.1f}"
        )
    if expect.prepare_sha256 and prepare_hash != expect.prepare_sha256:
        reasons.append(
            f"prepare_hash {prepare_hash[:12]} is not the pinned {expect.prepare_sha256[:12]}"
        )
    if not expect.real_target:
        return reasons
    if not expect.fixed_steps and s.training_seconds < BUDGET_FRACTION * expect.budget_s:
        reasons.append(f"trained {s.training_seconds:.1f} s of a {expect.budget_s:g} s budget")
    if s.num_steps < 1:
        reasons.append(f"num_steps {s.num_steps}: nothing was trained")
    batch = _batch_tokens(train_py, expect.profile)
    if batch is not None:
        expected_m = s.num_steps * batch / 1e6
        rounding = 0.05 if s.total_tokens_M >= 10 else 0.0005
        if abs(expected_m - s.total_tokens_M) > rounding + 1e-9:
            reasons.append(
                f"total_tokens_M {s.total_tokens_M:g} is not num_steps "
                f"{s.num_steps} x {batch} tokens per step ({expected_m:g} M)"
            )
    return reasons
