"""Proposals of one worker: the queue of deduplicated proposals (:class:`ProposalQueue`)
and the producer that keeps it filled while the GPU trains (:class:`Producer`).

When the proposer is slow (an LLM, a coding agent) and nothing is queued when a run
ends, the built-in search proposes instead after ``proposer.idle_fallback_s`` so the GPU
does not idle.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from swarm._logging import get_logger
from swarm.errors import ProposerError, TrainPyError
from swarm.proposers import Proposal, ProposalContext, Proposer, is_slow
from swarm.records import Result
from swarm.trainpy import code_hash
from swarm.worker.deps import BASELINE_DESCRIPTION, PendingAware, Queued, WorkerDeps
from swarm.worker.lineage import Lineage
from swarm.worker.state import StatusBox, WorkerIdentity

__all__ = ["Producer", "ProposalQueue"]

log = get_logger(__name__)


class ProposalQueue:
    """Deduplicated proposals ready for the GPU (each reserved in the deduplicator)."""

    def __init__(
        self, deps: WorkerDeps, tier: str, lineage: Lineage, proposer: Proposer, maxsize: int
    ) -> None:
        self._deps = deps
        self._tier = tier
        self._lineage = lineage
        self._proposer = proposer
        self._queue: asyncio.Queue[Queued] = asyncio.Queue(maxsize=max(1, maxsize))

    def qsize(self) -> int:
        return self._queue.qsize()

    async def get(self) -> Queued:
        return await self._queue.get()

    def unreserve(self, item: Queued) -> None:
        """``item`` will not run here (lost, dropped, shut down): free its code hash."""
        self._deps.dedup.unreserve(self._tier, item.code_hash)

    def drop(self, item: Queued) -> None:
        """Drop ``item`` unrun; its proposer may propose that change again."""
        self.unreserve(item)
        if isinstance(self._proposer, PendingAware):
            self._proposer.forget_pending()
        log.debug("proposal_replaced", description=item.proposal.description)

    def _swap_stale(self, item: Queued) -> bool:
        """Replace a stale queued proposal by ``item``; True when one was replaced."""
        queued: list[Queued] = []
        while not self._queue.empty():
            queued.append(self._queue.get_nowait())
        swapped = False
        for i, old in enumerate(queued):
            if self._lineage.is_stale(old):
                self.drop(old)
                queued[i] = item
                swapped = True
                break
        for q in queued:
            self._queue.put_nowait(q)
        return swapped

    async def offer(self, item: Queued) -> None:
        """Queue ``item``. While the queue is full, a change of the best lets a fresh
        proposal replace a stale one; a stale proposal stays queued until then, so the GPU
        always has something to run."""
        stop = self._deps.stop
        changed = self._lineage.changed
        while not stop.stopping.is_set():
            if self._queue.full() and self._swap_stale(item):
                return
            changed.clear()
            put = asyncio.ensure_future(self._queue.put(item))
            woke = asyncio.ensure_future(changed.wait())
            try:
                await stop.wait_for(asyncio.wait({put, woke}, return_when=asyncio.FIRST_COMPLETED))
            finally:
                woke.cancel()
                if not put.done():
                    put.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await put
            if put.done() and not put.cancelled():
                return
            if self._lineage.is_stale(item):
                self.drop(item)  # our own proposal went stale: make a fresh one
                return
        self.unreserve(item)


class Producer:
    """Makes deduplicated proposals from the parent the worker follows."""

    def __init__(
        self,
        deps: WorkerDeps,
        who: WorkerIdentity,
        status: StatusBox,
        lineage: Lineage,
        queue: ProposalQueue,
        proposer: Proposer,
        idle_proposer: Proposer | None,
    ) -> None:
        self._deps = deps
        self._who = who
        self._status = status
        self._lineage = lineage
        self._queue = queue
        self._proposer = proposer
        self._idle_proposer = idle_proposer
        self._waiting_since: float | None = None  # the queue was found empty then

    async def produce(self) -> None:
        """Keep the queue filled with deduplicated proposals (runs while the GPU trains)."""
        failures = 0
        stop = self._deps.stop
        while not stop.stopping.is_set():
            try:
                item = await self.make(self._proposer)
            except ProposerError as exc:
                failures += 1
                log.warning("proposal_failed", error=str(exc)[:300], consecutive=failures)
                await stop.sleep(min(30.0, 0.5 * 2 ** min(failures, 6)))
                continue
            except Exception as exc:  # supervision edge of the producer: log, back off, go on
                failures += 1
                log.exception("producer_iteration_failed", error=repr(exc))
                await stop.sleep(min(30.0, 0.5 * 2 ** min(failures, 6)))
                continue
            if item is None:
                # a duplicate: ask again at once a few times, then back off a little
                failures += 1
                if failures > 3:
                    await stop.sleep(min(2.0, 0.01 * 2 ** min(failures, 8)))
                continue
            failures = 0
            await self._queue.offer(item)

    def _context(self, history: list[Result]) -> ProposalContext:
        deps = self._deps
        lineage = self._lineage
        seed = deps.config.proposer_seed or (hash((deps.agent_id, self._who.index)) & 0x7FFFFFFF)
        tier, parent_hash, parent_src = self._who.tier, lineage.hash, lineage.train_py

        def is_duplicate(description: str, train_py: str) -> bool:
            return deps.dedup.is_duplicate(tier, description, train_py, parent_hash, parent_src)

        return ProposalContext(
            best_train_py=parent_src,
            parent_hash=parent_hash,
            track=deps.track,
            tier=tier,
            agent_id=deps.agent_id,
            worker_index=self._who.index,
            memory=deps.memory,
            history=history,
            is_duplicate=is_duplicate,
            seed=seed + self._status.value.runs,  # varies with the worker's finished runs
            best_val_bpb=lineage.val,
            contention=deps.dedup.contention(tier),
        )

    async def make(self, proposer: Proposer) -> Queued | None:
        """One proposal that passed dedup (and is reserved), or None for a duplicate."""
        deps = self._deps
        slow = is_slow(proposer)
        # in-process proposers are CPU-bound Python: one at a time per machine, so the
        # event loop keeps the GIL often enough and each sees the others' reservations
        guard = contextlib.nullcontext() if slow else deps.propose_lock
        async with guard:
            if self._lineage.take_baseline():
                slow = False
                proposal = Proposal(
                    train_py=deps.seed_train_py,
                    description=BASELINE_DESCRIPTION,
                    parent_hash="",
                    proposer="baseline",
                    rationale="first run of this track and tier: the unmodified train.py",
                )
            else:
                history = await deps.view.history(self._who.tier)
                proposal = await proposer.propose(self._context(list(history)))
            try:
                chash = code_hash(proposal.train_py)
            except TrainPyError as exc:
                raise ProposerError(f"proposal does not parse: {exc}") from exc
            verdict = await deps.dedup.check(
                self._who.tier, proposal, chash, parent_train_py=self._lineage.train_py
            )
        if verdict is not None:
            deps.counters.bump("duplicates_skipped")
            log.info(
                "proposal_duplicate",
                description=proposal.description,
                layer=verdict.layer,
                match=verdict.match_key,
                score=round(float(verdict.score or 0.0), 3),
            )
            return None
        return Queued(proposal, chash, self._lineage.val, slow)

    async def next(self, poll_s: float | None = None) -> Queued | None:
        """The next queued proposal; the idle fallback proposes when the queue stays empty
        for ``proposer.idle_fallback_s``. None on stop, or when nothing came within
        ``poll_s`` seconds (None: no limit; the idle clock runs on across calls)."""
        deps = self._deps
        self._status.set("proposing")
        wait_s = deps.config.proposer_idle_fallback_s
        use_idle = self._idle_proposer is not None and wait_s > 0
        while not deps.stop.stopping.is_set():
            if self._waiting_since is None:
                self._waiting_since = time.monotonic()
            idle_at = self._waiting_since + wait_s
            limits = [max(0.0, idle_at - time.monotonic())] if use_idle else []
            if poll_s is not None:
                limits.append(poll_s)
            item = await deps.stop.wait_for(
                self._queue.get(), limit_s=min(limits) if limits else None
            )
            if item is None and use_idle and time.monotonic() >= idle_at:
                item = await self._idle_fallback()
                self._waiting_since = None  # (none made: wait another idle_fallback_s)
            if item is not None:
                self._waiting_since = None
                return item
            if poll_s is not None:
                return None
        return None

    async def _idle_fallback(self) -> Queued | None:
        """Nothing ready in time from a slow proposer: the built-in search fills in."""
        if self._idle_proposer is None or self._deps.stop.stopping.is_set():
            return None
        try:
            item = await self.make(self._idle_proposer)
        except ProposerError as exc:
            log.warning("idle_fallback_failed", error=str(exc)[:300])
            return None
        if item is not None:
            log.info(
                "idle_fallback_used",
                proposer=self._proposer.name,
                description=item.proposal.description,
            )
        return item
