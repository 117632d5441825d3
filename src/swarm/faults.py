"""What a failure means for this machine: the one place that maps an error to a reaction.

Three reactions, decided here and nowhere else:

* ``transient`` -- the shared memory is away for a while (connection refused or reset,
  timeout, HTTP 429 or 5xx): back off and retry, keep training, queue results in the
  durable outbox (:mod:`swarm.outbox`) and replay them when the memory is back;
* ``permanent`` -- retrying cannot help (HTTP 401/403, a request the server calls invalid,
  a namespace the key may not write, a server that does not speak the protocol): the
  supervisor stops within seconds with one line naming the cause and the fix, and exits
  with :data:`EXIT_PERMANENT` (the systemd unit does not restart on it); results already
  produced stay in the outbox, nothing is half-published;
* ``infrastructure`` -- this machine cannot train (no data cache, CUDA init, disk full,
  the training process cannot start): never published as an experiment result, never
  blocks the experiment; the worker pauses (or the machine stops) with a message.

:class:`FaultLatch` carries the first permanent fault of a run from wherever it surfaced
(a worker's claim, a publish, a replay) to the supervisor, which stops on it.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from swarm._logging import get_logger
from swarm.errors import (
    AuthError,
    GpuError,
    InvalidRequestError,
    ProtocolError,
    RunnerError,
    ToolError,
)

__all__ = [
    "EXIT_PERMANENT",
    "Fault",
    "FaultLatch",
    "Reaction",
    "classify",
    "infra_failures",
]

log = get_logger(__name__)

EXIT_PERMANENT = 4
"""Exit status of a supervisor stopped by a permanent fault (not restarted by systemd)."""

#: run failures (``RunOutcome.failure``) that are the machine's fault, not the code's
infra_failures: frozenset[str] = frozenset({"infra", "data"})

_DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO})
_FORBIDDEN_WORDS = ("forbidden", "permission", "not allowed", "unknown org")


class Reaction(StrEnum):
    TRANSIENT = "transient"
    PERMANENT = "permanent"
    INFRASTRUCTURE = "infrastructure"


@dataclass(frozen=True, slots=True)
class Fault:
    """A classified failure: the reaction, a one-line cause and what the user should do."""

    reaction: Reaction
    cause: str
    fix: str

    @property
    def line(self) -> str:
        return f"{self.cause} -- {self.fix}"


def _first_line(exc: BaseException, limit: int = 300) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:limit]


def classify(exc: BaseException, *, memory: str = "the shared memory") -> Fault:
    """The reaction to ``exc`` (raised while talking to ``memory`` or running on this machine)."""
    cause = f"{type(exc).__name__}: {_first_line(exc)}"
    if isinstance(exc, AuthError):
        return Fault(
            Reaction.PERMANENT,
            f"{memory} refused the API key ({cause})",
            "check the key: --ensue-key, the variable named by memory.api_key_env, "
            "ENSUE_API_KEY or the saved key file (`python -m swarm register`); a hub's "
            "admin issues tokens with `python -m swarm hub token add NAME`",
        )
    if isinstance(exc, InvalidRequestError):
        return Fault(
            Reaction.PERMANENT,
            f"{memory} cannot take this request ({cause})",
            "check memory.url and memory.org; this is a bug if they are right: "
            "report it with the log",
        )
    if isinstance(exc, ProtocolError):
        return Fault(
            Reaction.PERMANENT,
            f"{memory} does not speak the Ensue protocol ({cause})",
            "check memory.kind and memory.url (a hub URL ends with the port, e.g. "
            "http://HOST:8765/)",
        )
    if isinstance(exc, ToolError) and any(w in str(exc).lower() for w in _FORBIDDEN_WORDS):
        return Fault(
            Reaction.PERMANENT,
            f"{memory} refused a namespace ({cause})",
            "check memory.org and the key's role (participant or admin)",
        )
    if isinstance(exc, OSError) and exc.errno in _DISK_ERRNOS:
        return Fault(
            Reaction.INFRASTRUCTURE,
            f"the disk refused a write ({cause})",
            "free space in the state dir (or make it writable); nothing was lost",
        )
    if isinstance(exc, (RunnerError, GpuError)):
        return Fault(
            Reaction.INFRASTRUCTURE,
            f"this machine cannot train ({cause})",
            "fix the machine (data cache, GPU driver, sandbox); see the log",
        )
    return Fault(Reaction.TRANSIENT, cause, "retrying with back-off")


class FaultLatch:
    """Holds the first permanent fault of a run; ``on_trip`` (set by the supervisor) stops it."""

    def __init__(
        self, on_trip: Callable[[Fault], None] | None = None, *, label: str = "the shared memory"
    ) -> None:
        self.fault: Fault | None = None
        self.on_trip = on_trip
        self.label = label  # names the memory in causes (the supervisor sets it)

    @property
    def tripped(self) -> bool:
        return self.fault is not None

    def trip(self, fault: Fault, *, where: str) -> None:
        """Record ``fault`` (the first one wins) and tell the supervisor once."""
        if self.fault is not None:
            return
        self.fault = fault
        log.error("permanent_fault", where=where, cause=fault.cause, fix=fault.fix)
        if self.on_trip is not None:
            self.on_trip(fault)

    def check(self, exc: BaseException, *, where: str, memory: str | None = None) -> Fault:
        """Classify ``exc``; trip on a permanent fault. Returns the fault either way."""
        fault = classify(exc, memory=memory or self.label)
        if fault.reaction is Reaction.PERMANENT:
            self.trip(fault, where=where)
        return fault
