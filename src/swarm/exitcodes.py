"""The supervisor's exit statuses, and the one function that picks one when it ends.

0 clean, 1 failure, 3 the grace period ran out, 4 a permanent fault (:mod:`swarm.faults`),
130 forced by a second signal; 2 (bad configuration) is the CLI's. The full table, as
users read it, is in :mod:`swarm.supervisor`'s docstring and ``swarm run --help``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from swarm.faults import EXIT_PERMANENT

if TYPE_CHECKING:
    from swarm.faults import Fault
    from swarm.worker import Slots, StopControl

__all__ = [
    "EXIT_FAILURE",
    "EXIT_FORCED",
    "EXIT_GRACE_EXPIRED",
    "EXIT_OK",
    "EXIT_PERMANENT",
    "ExitStatus",
    "exit_status",
]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_GRACE_EXPIRED = 3
EXIT_FORCED = 130


@dataclass(frozen=True, slots=True)
class ExitStatus:
    """The status a supervisor exits with, and the one line that says why."""

    code: int
    reason: str


def exit_status(
    stop: StopControl, fault: Fault | None, *, failures: int, workers: int, slots: Slots
) -> ExitStatus:
    """How the run ended, in order of precedence: a permanent fault, a forced stop, runs cut
    short by the grace period, every worker failed; otherwise clean (drained, the
    experiment budget reached, or the workers simply finished)."""
    if fault is not None:
        return ExitStatus(EXIT_PERMANENT, fault.line)
    if stop.forced.is_set():
        return ExitStatus(EXIT_FORCED, f"forced ({stop.reason})")
    if stop.aborted_runs:
        return ExitStatus(
            EXIT_GRACE_EXPIRED,
            f"grace period ran out ({stop.reason}); {stop.aborted_runs} run(s) cut short",
        )
    if failures and failures == workers:
        return ExitStatus(EXIT_FAILURE, "every worker failed")
    if stop.reason:
        return ExitStatus(EXIT_OK, f"drained ({stop.reason})")
    if slots.limit and slots.taken >= slots.limit:
        return ExitStatus(EXIT_OK, f"max_experiments ({slots.limit}) reached")
    return ExitStatus(EXIT_OK, "workers finished")
