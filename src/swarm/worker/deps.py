"""What the workers of one supervisor share (:class:`WorkerDeps`), the queued-proposal
record, and the interfaces the worker needs from the deduplicator and the proposers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from swarm.faults import FaultLatch
from swarm.proposers import Proposal
from swarm.runner import RunOutcome, RunSpec
from swarm.worker.control import CounterBox, Slots, StopControl
from swarm.worker.view import SwarmView

if TYPE_CHECKING:
    from swarm.config import SwarmConfig
    from swarm.dedup import Verdict
    from swarm.gpu_pool import GpuPool
    from swarm.namespace import SwarmMemory
    from swarm.outbox import Publisher
    from swarm.records import Result
    from swarm.results_log import ResultsLog
    from swarm.sandbox import Sandbox

__all__ = [
    "BASELINE_DESCRIPTION",
    "SEED_ENV",
    "Dedup",
    "PendingAware",
    "Queued",
    "RunFn",
    "WorkerDeps",
]

BASELINE_DESCRIPTION = "baseline"
SEED_ENV = "AUTORESEARCH_SEED"
"""Environment variable a confirming run sets to train the same code with another seed."""
RunFn = Callable[[RunSpec], Awaitable[RunOutcome]]


class Dedup(Protocol):
    """The machine's deduplicator per tier, as a worker uses it (``TierDedup``)."""

    def is_duplicate(
        self,
        tier: str,
        description: str,
        train_py: str,
        parent_hash: str | None,
        parent_train_py: str | None,
    ) -> bool: ...

    async def check(
        self, tier: str, proposal: Proposal, chash: str, *, parent_train_py: str | None
    ) -> Verdict | None: ...

    def unreserve(self, tier: str, chash: str) -> None: ...

    def taken_elsewhere(self, tier: str, chash: str, key: str, for_s: float | None) -> None: ...

    def contention(self, tier: str) -> int: ...

    async def add_live(
        self, tier: str, proposal: Proposal, chash: str, key: str, *, parent_train_py: str | None
    ) -> None: ...

    def drop_live(self, tier: str, chash: str) -> None: ...

    async def add_known(
        self,
        tier: str,
        item: Proposal | Result,
        chash: str,
        key: str,
        *,
        parent_train_py: str | None = None,
    ) -> None: ...


@runtime_checkable
class PendingAware(Protocol):
    """A proposer that remembers its proposals in flight; told when queued ones are dropped
    unrun (so it does not avoid those changes for ever)."""

    def forget_pending(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Queued:
    """A deduplicated proposal waiting for the GPU (reserved in the deduplicator)."""

    proposal: Proposal
    code_hash: str
    parent_val: float | None
    slow: bool  # came from a slow proposer: keep it even when the best moved


@dataclass(slots=True)
class WorkerDeps:
    """What every worker of a supervisor shares (built by the supervisor)."""

    config: SwarmConfig
    agent_id: str
    host: str
    track: str
    memory: SwarmMemory
    results_log: ResultsLog
    dedup: Dedup
    view: SwarmView
    stop: StopControl
    slots: Slots
    counters: CounterBox
    seed_train_py: str
    prepare_py: Path
    work_root: Path
    run_experiment: RunFn
    pool: GpuPool | None = None  # None: CPU mode
    run_env: Mapping[str, str] = field(default_factory=dict)
    publisher: Publisher | None = None  # write-ahead publish, queued releases
    faults: FaultLatch = field(default_factory=FaultLatch)  # permanent faults stop the machine
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep
    clock: Callable[[], float] = time.time
    budget_s: float = 300.0
    startup_allowance_s: float = 120.0
    on_publish: Callable[[Result], None] | None = None
    #: proposals are made one at a time per machine: proposers are mostly CPU-bound Python
    #: (threads share the GIL), and serial proposals see each other's reservations
    propose_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    #: val_bpb of code any worker here saw finish or adopted, by code hash: fills `delta` for
    #: proposals queued before their parent had a result (the first ones after a baseline)
    known_vals: dict[str, float] = field(default_factory=dict)
    #: the isolation of every run (None: bare subprocesses)
    sandbox: Sandbox | None = None
    #: sha256 of the pinned prepare.py every run must get
    prepare_sha256: str = ""
    #: no sandbox works: run only this agent's own code (no other agent's best)
    trusted_only: bool = False
    #: code hashes of the candidates a worker of this machine is confirming now (the
    #: others leave them alone instead of losing their claim again and again)
    confirming: set[str] = field(default_factory=set)
