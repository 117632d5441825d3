"""Who a worker is (:class:`WorkerIdentity`) and what it shows (:class:`StatusBox`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from swarm.proposers import Proposer
from swarm.proposers.fallback import FallbackProposer
from swarm.status import WorkerStatus

__all__ = ["StatusBox", "WorkerIdentity"]


@dataclass(frozen=True, slots=True)
class WorkerIdentity:
    """The GPU (``gpu_index`` None: the CPU) a worker owns and the tier it works in."""

    index: int
    gpu_index: int | None
    gpu_name: str
    tier: str

    def log_fields(self) -> dict[str, Any]:
        """The fields every log line of this worker carries (bound as structlog contextvars)."""
        return {"worker": self.index, "gpu": self.gpu_index, "tier": self.tier}


class StatusBox:
    """The worker's current :class:`WorkerStatus`, changed in one place."""

    def __init__(self, who: WorkerIdentity, proposer: Proposer, clock: Callable[[], float]) -> None:
        self._proposer = proposer
        self._clock = clock
        self.value = WorkerStatus(
            index=who.index,
            gpu_index=who.gpu_index,
            gpu_name=who.gpu_name,
            tier=who.tier,
            state="idle",
            state_since=clock(),
            proposer=proposer.name,
            proposer_active=proposer.name,
        )

    @property
    def state(self) -> str:
        return self.value.state

    def set(self, state: str, **changes: Any) -> None:
        """Enter ``state`` (its start time kept when unchanged); ``detail`` resets."""
        fields: dict[str, Any] = dict(changes)
        if state != self.value.state:
            fields["state_since"] = self._clock()
        fields.setdefault("detail", "")
        if isinstance(self._proposer, FallbackProposer):
            fields["proposer_active"] = self._proposer.active
            fields["fallback_active"] = self._proposer.switched
        self.value = replace(self.value, state=state, **fields)

    def update(self, **changes: Any) -> None:
        """Change fields without a change of state."""
        self.value = replace(self.value, **changes)
