"""Claims of one worker: win, release and settle them (:class:`Claims`), and claim the next
experiment while the current one trains (:class:`ClaimAhead`), so that between two runs
only the GPU check and the process start remain.

A claim taken ahead is checked when the worker takes it: when the best it was built on is
no longer the one the worker follows (another agent's best was adopted, or this worker
kept a result), it is released and its proposal dropped -- a fresh proposal on the new
parent runs instead of one more variation of a superseded train.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable
from typing import Literal

from swarm._logging import get_logger
from swarm.errors import MemoryStoreError, MemoryTimeout, ServerError, TransportError
from swarm.records import Claim
from swarm.worker.deps import Queued, WorkerDeps
from swarm.worker.lineage import Lineage
from swarm.worker.proposals import ProposalQueue
from swarm.worker.state import StatusBox, WorkerIdentity

__all__ = ["OVERLOAD_PATIENCE_S", "ClaimAhead", "Claims"]

log = get_logger(__name__)

#: seconds an overloaded memory (5xx, 429, timeouts) gets before a worker trains unclaimed
OVERLOAD_PATIENCE_S = 120.0
#: longest pause between two claim attempts against an overloaded memory (seconds)
OVERLOAD_BACKOFF_MAX_S = 15.0


class Claims:
    """Claims in the shared memory for one worker (offline: local claims)."""

    def __init__(
        self, deps: WorkerDeps, who: WorkerIdentity, status: StatusBox, lineage: Lineage
    ) -> None:
        self._deps = deps
        self._who = who
        self._status = status
        self._lineage = lineage

    async def claim(
        self,
        item: Queued,
        *,
        quiet: bool = False,
        kind: Literal["experiment", "confirmation"] = "experiment",
    ) -> Claim | None:
        """Win the experiment's claim; None when another agent holds it (or a stop came).

        A memory that cannot be reached at all (connection refused: an outage) means
        training anyway under a local claim. A memory that answers but is overloaded
        (5xx, 429, timeouts) gets the claim retried with jittered back-off for up to
        :data:`OVERLOAD_PATIENCE_S` first: training unclaimed while others can still
        claim turns a busy hub into duplicate runs."""
        proposal = item.proposal
        if not quiet:
            self._status.set("claiming", description=proposal.description)
        started = self._deps.clock()
        attempt = 0
        while True:
            try:
                return await self._try(item, kind, quiet=quiet)
            except (TransportError, ServerError) as exc:
                attempt += 1
                busy = isinstance(exc, (ServerError, MemoryTimeout))
                if not busy or self._deps.clock() - started >= OVERLOAD_PATIENCE_S:
                    log.warning(
                        "claim_offline",
                        description=proposal.description,
                        error=str(exc),
                        note="memory unreachable: training without a claim",
                    )
                    return self.local(item)
                delay = min(OVERLOAD_BACKOFF_MAX_S, 2.0**attempt) * random.uniform(0.5, 1.0)
                log.warning("claim_retry_busy", error=str(exc), attempt=attempt, delay_s=delay)
                if await self._deps.stop.sleep(delay):
                    return None

    async def _try(
        self, item: Queued, kind: Literal["experiment", "confirmation"], *, quiet: bool
    ) -> Claim | None:
        deps = self._deps
        proposal = item.proposal
        outcome = await deps.memory.try_claim(
            parent_hash=proposal.parent_hash,
            code_hash=item.code_hash,
            description=proposal.description,
            track=deps.track,
            tier=self._who.tier,
            gpu_name=self._who.gpu_name,
            kind=kind,
        )
        if not outcome.won or outcome.claim is None:  # (a stale claim of ours is taken over)
            deps.counters.bump("claims_lost")
            holder = outcome.holder.agent_id if outcome.holder else "?"
            log.info("claim_lost", description=proposal.description, holder=holder)
            if kind == "experiment":
                done = outcome.holder is not None and outcome.holder.done
                lock = outcome.holder.lock_key if outcome.holder else ""
                for_s = None if done else deps.memory.lease_s
                deps.dedup.taken_elsewhere(self._who.tier, item.code_hash, lock, for_s)
            else:  # another agent confirms it: no worker of ours asks again for a lease
                deps.memory.candidates.confirmed_elsewhere(
                    proposal.parent_hash, item.code_hash, deps.memory.lease_s
                )
            if not quiet:
                self._status.set("idle", description=None)
            return None
        return outcome.claim

    async def claim_live(
        self,
        item: Queued,
        *,
        quiet: bool = False,
        kind: Literal["experiment", "confirmation"] = "experiment",
    ) -> Claim | None:
        """:meth:`claim`, and register the won experiment as live in the deduplicator."""
        claim = await self.claim(item, quiet=quiet, kind=kind)
        if claim is not None:
            await self._deps.dedup.add_live(
                self._who.tier,
                item.proposal,
                item.code_hash,
                claim.key or "offline claim",
                parent_train_py=self._lineage.train_py,
            )
        return claim

    def local(self, item: Queued) -> Claim:
        """A claim held only here (no lock in the memory)."""
        deps = self._deps
        return Claim(
            agent_id=deps.agent_id,
            description=item.proposal.description,
            parent_hash=item.proposal.parent_hash,
            code_hash=item.code_hash,
            track=deps.track,
            vram_tier=self._who.tier,
            gpu_name=self._who.gpu_name,
            host=deps.host,
            claimed_at=deps.clock(),
        )

    async def release(self, claim: Claim, *, result_key: str | None = None) -> None:
        """Release ``claim``; with ``result_key`` (published) its experiment is done."""
        if not claim.lock_key:
            return  # a local (offline) claim
        if self._deps.publisher is not None:  # queued for a retry when it fails
            if self._deps.publisher.holds(claim):
                return  # its result waits in the outbox, which releases it as done
            await self._deps.publisher.release(claim, result_key=result_key)
            return
        try:
            await asyncio.wait_for(
                asyncio.shield(self._deps.memory.release(claim, result_key=result_key)),
                timeout=15,
            )
        except (MemoryStoreError, TimeoutError) as exc:
            log.warning("claim_release_failed", claim=claim.key, error=str(exc))
            self._deps.memory.let_go(claim)  # nothing retries it here: its lease ends it

    async def settle(
        self, item: Queued, claim: Claim, *, idle: bool = True, result_key: str | None = None
    ) -> None:
        """The experiment is over for this machine: forget it as live, release the claim
        (done for good when its result was published as ``result_key``)."""
        self._deps.dedup.drop_live(self._who.tier, item.code_hash)
        await self.release(claim, result_key=result_key)
        if idle and self._status.state != "quarantined":
            self._status.set("idle", experiment_key=None, description=None, run_started_at=None)


class ClaimAhead:
    """The next experiment, claimed (and heartbeated) while the current run trains."""

    def __init__(
        self,
        deps: WorkerDeps,
        who: WorkerIdentity,
        claims: Claims,
        queue: ProposalQueue,
        lineage: Lineage,
    ) -> None:
        self._deps = deps
        self._who = who
        self._claims = claims
        self._queue = queue
        self._lineage = lineage
        self._held: tuple[Queued, Claim, contextlib.AsyncExitStack] | None = None
        self._phase = "done"
        self.released_stale = 0  # claims given back because their parent was superseded

    async def run(self, skip: Callable[[], bool]) -> None:
        """While the current run trains: take the next proposal and claim it (heartbeated
        until it runs), unless ``skip()`` says the next run is something else (a
        confirmation). Never raises: a failure only means the next run claims as usual."""
        deps = self._deps
        self._phase = "waiting"
        try:
            await asyncio.sleep(min(1.0, deps.budget_s / 10))  # let the run start first
            if skip() or deps.stop.stopping.is_set() or deps.slots.exhausted:
                return
            item = await self._queue.get()
            self._phase = "claiming"  # from here on, finish rather than cancel
            if deps.stop.stopping.is_set():
                self._queue.unreserve(item)
                return
            claim = await self._claims.claim_live(item, quiet=True)
            if claim is None:
                self._queue.unreserve(item)
                return
            beat = contextlib.AsyncExitStack()
            if claim.lock_key:
                await beat.enter_async_context(deps.memory.heartbeating(claim))
            self._held = (item, claim, beat)
        except Exception as exc:  # supervision edge of claiming ahead: the next run claims
            log.exception("preclaim_failed", error=repr(exc))
        finally:
            self._phase = "done"

    async def end(self, task: asyncio.Task[None]) -> None:
        """At the end of a run: stop a pre-claim still waiting for a proposal; let one that
        is claiming finish (cancelling it then could leave a claim behind)."""
        if task.done():
            return
        if self._phase != "claiming":
            task.cancel()
        await asyncio.wait({task})

    async def take(self) -> tuple[Queued, Claim] | None:
        """The experiment claimed ahead, its heartbeat handed to the caller; None when there
        is none, or when its parent was superseded (then it is released and dropped)."""
        if self._held is None:
            return None
        item, claim, beat = self._held
        self._held = None
        await beat.aclose()  # the run heartbeats it from here on
        if not self._lineage.is_stale(item):
            return item, claim
        self.released_stale += 1
        log.info(
            "preclaim_superseded",
            description=item.proposal.description,
            parent=item.proposal.parent_hash[:8],
            best=self._lineage.hash[:8],
        )
        await self._claims.settle(item, claim, idle=False)
        self._queue.drop(item)
        return None

    async def drop(self) -> None:
        """Shutdown: give back a claim taken ahead."""
        if self._held is None:
            return
        item, claim, beat = self._held
        self._held = None
        await beat.aclose()
        await self._claims.settle(item, claim, idle=False)
        self._queue.unreserve(item)
