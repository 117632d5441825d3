"""Results of one worker: the pure :func:`build_result`, the keep/discard decision against
the best of the track and tier, and the publication (through the write-ahead outbox, which
replays what could not be sent) with everything that follows from it: results.tsv/jsonl,
the deduplicator, the proposers, the counters and the lineage. Runs a crashed predecessor
left behind are published here first (:meth:`ResultPublisher.publish_leftovers`).

Every result is published: keep, discard, crash, timeout or invalid.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from swarm._logging import get_logger
from swarm.errors import MemoryStoreError, ProposerError, ServerError, TrainPyError, TransportError
from swarm.proposers import Proposal, Proposer
from swarm.records import BestDecision, Claim, Result
from swarm.recovery import Harvest, mark_finished
from swarm.runner import RunOutcome
from swarm.status import LastResult
from swarm.trainpy import constants, diff_constants
from swarm.verify.candidates import trust_policy
from swarm.worker.claims import Claims
from swarm.worker.confirm import Confirmations
from swarm.worker.deps import Queued, WorkerDeps
from swarm.worker.lineage import Lineage
from swarm.worker.state import StatusBox, WorkerIdentity

__all__ = ["ResultOrigin", "ResultPublisher", "build_result"]

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class ResultOrigin:
    """Where a result was measured: who, on which machine, track, tier and GPU."""

    agent_id: str
    host: str
    track: str
    tier: str
    gpu_name: str


def _seed_of(train_py: str) -> int | None:
    """The ``SEED`` constant of ``train_py`` (None when absent or not an integer)."""
    with contextlib.suppress(TrainPyError, ValueError):
        raw = constants(train_py).get("SEED")
        if isinstance(raw, int) and not isinstance(raw, bool):
            return raw
    return None


def build_result(
    item: Queued,
    outcome: RunOutcome,
    status: str,
    *,
    origin: ResultOrigin,
    parent_train_py: str,
    parent_val: float | None,
    completed_at: float,
    seed: int | None = None,
) -> Result:
    """The result record of a finished run (no I/O, nothing changed).

    ``parent_val`` is the parent's val_bpb (for ``delta``); the changes are read from the
    sources when the proposal did not list them; ``seed`` defaults to train.py's SEED.
    """
    proposal = item.proposal
    s = outcome.summary
    changes: Mapping[str, tuple[Any, Any]] = proposal.changes
    if not changes and proposal.parent_hash:
        with contextlib.suppress(TrainPyError):
            changes = diff_constants(parent_train_py, proposal.train_py)
    val = s.val_bpb if s is not None else None
    delta = (val - parent_val) if (val is not None and parent_val is not None) else None
    return Result(
        agent_id=origin.agent_id,
        status=status,
        description=proposal.description,
        train_py=proposal.train_py,
        val_bpb=val,
        memory_gb=round(s.peak_vram_mb / 1024.0, 2) if s is not None else None,
        completed_at=completed_at,
        vram_tier=origin.tier,
        track=origin.track,
        parent_hash=proposal.parent_hash,
        code_hash=item.code_hash,
        gpu_name=origin.gpu_name,
        host=origin.host,
        seed=seed if seed is not None else _seed_of(proposal.train_py),
        prepare_hash=outcome.prepare_hash,
        num_steps=s.num_steps if s is not None else None,
        total_tokens_M=s.total_tokens_M if s is not None else None,
        mfu_percent=s.mfu_percent if s is not None else None,
        training_seconds=s.training_seconds if s is not None else None,
        peak_vram_mb=s.peak_vram_mb if s is not None else None,
        failure=outcome.failure,
        log_tail="" if outcome.status == "ok" else outcome.log_tail[-4000:],
        changes=dict(changes),
        proposer=proposal.proposer,
        delta=delta,
        sandbox=outcome.sandbox,
        wall_s=round(outcome.wall_s, 3) if outcome.wall_s else None,
    )


class ResultPublisher:
    """Judges and publishes the finished runs of one worker."""

    def __init__(
        self,
        deps: WorkerDeps,
        who: WorkerIdentity,
        status: StatusBox,
        lineage: Lineage,
        claims: Claims,
        confirmations: Confirmations,
        proposers: tuple[Proposer, Proposer | None],
    ) -> None:
        self._deps = deps
        self._who = who
        self._status = status
        self._lineage = lineage
        self._claims = claims
        self._confirmations = confirmations
        self._proposer, self._idle_proposer = proposers
        self._origin = ResultOrigin(deps.agent_id, deps.host, deps.track, who.tier, who.gpu_name)
        self.runs = 0

    def _result(self, item: Queued, outcome: RunOutcome, status: str, seed: int | None) -> Result:
        deps = self._deps
        parent_val = item.parent_val
        if parent_val is None and item.proposal.parent_hash:
            parent_val = deps.known_vals.get(item.proposal.parent_hash)
        result = build_result(
            item,
            outcome,
            status,
            origin=self._origin,
            parent_train_py=self._lineage.train_py,
            parent_val=parent_val,
            completed_at=deps.clock(),
            seed=seed,
        )
        if result.val_bpb is not None and status != "invalid":
            deps.known_vals[item.code_hash] = result.val_bpb
        return result

    async def _decide(
        self, result: Result, *, confirming: bool = False
    ) -> tuple[str, BestDecision | None]:
        """keep when the result becomes the best of its track and tier."""
        deps = self._deps
        try:
            candidate = replace(result, status="keep")
            decision: BestDecision
            if deps.config.verified_bests:  # a candidate until another run agrees
                book, policy = deps.memory.candidates, trust_policy(deps.config)
                if confirming:
                    deps.counters.bump("confirmations")
                decision = await (
                    book.confirm(candidate, policy)
                    if confirming
                    else book.propose(candidate, policy)
                )
            elif confirming:
                decision = await deps.memory.confirm_best(candidate)
            else:
                decision = await deps.memory.propose_best(
                    candidate, noise_margin=deps.config.noise_margin
                )
        except MemoryStoreError as exc:
            # offline: judge against what we know; the best record is not touched (the
            # outbox judges it again when it replays the result)
            deps.faults.check(exc, where="decide")
            log.warning("best_decision_offline", error=str(exc))
            parent_val = self._lineage.val
            better = parent_val is None or (
                result.val_bpb is not None and result.val_bpb < parent_val
            )
            return ("keep" if better else "discard"), None
        return ("keep" if decision.moved or decision.candidate else "discard"), decision

    async def judge(
        self,
        item: Queued,
        outcome: RunOutcome,
        seed: int | None = None,
        *,
        confirming: bool = False,
    ) -> tuple[Result, BestDecision | None]:
        """The published form of a run's outcome, and the best decision (ok runs only)."""
        if outcome.status == "ok" and outcome.summary is not None:
            result = self._result(item, outcome, "discard", seed)
            status, decision = await self._decide(result, confirming=confirming)
            self_only = decision is not None and decision.verification == "self-verified"
            in_trial = bool(
                decision
                and (decision.candidate or (confirming and self._deps.config.verified_bests))
            )
            return replace(
                result,
                status=status,
                verified=confirming and status == "keep" and not self_only,
                extra={**result.extra, "candidate": True} if in_trial else result.extra,
            ), decision
        if outcome.status == "invalid":  # never kept, never a metric: the reason says why
            log.warning("result_invalid", reason=outcome.message)
            return replace(
                self._result(item, outcome, "invalid", seed),
                val_bpb=None,
                delta=None,
                reason=outcome.message[:2000],
            ), None
        status = "timeout" if outcome.status == "timeout" else "crash"
        return self._result(item, outcome, status, seed), None

    async def decide_and_publish(
        self,
        item: Queued,
        claim: Claim,
        outcome: RunOutcome,
        seed: int | None = None,
        confirming: bool = False,
    ) -> str:
        """Judge and publish; returns the result's key ("" while it waits in the outbox)."""
        result, decision = await self.judge(item, outcome, seed, confirming=confirming)
        key = await self._finish(item, claim, outcome, result, decision)
        if (
            confirming
            or decision is None
            or not decision.needs_confirmation
            or self._deps.config.verified_bests
        ):  # candidates: confirmed via the memory
            return key
        self._confirmations.schedule(item, result, decision)
        return key

    async def after_run(
        self, item: Queued, claim: Claim, outcome: RunOutcome, seed: int | None, confirming: bool
    ) -> None:
        """Judge and publish a finished run (runs while the GPU trains the next one); the
        claim of a published experiment ends as done (never run again by anyone)."""
        key = ""
        try:
            key = await self.decide_and_publish(item, claim, outcome, seed, confirming)
        except Exception as exc:  # supervision edge of publishing one result: log, go on
            log.exception(
                "publish_failed",
                description=item.proposal.description,
                error=repr(exc),
                error_type=type(exc).__name__,
            )
        finally:
            await self._claims.settle(item, claim, idle=False, result_key=key or None)
            if confirming:
                self._confirmations.ended(item)

    async def _finish(
        self,
        item: Queued,
        claim: Claim,
        outcome: RunOutcome,
        result: Result,
        decision: BestDecision | None,
    ) -> str:
        """Publish a judged result and update everything that follows from it; its key."""
        deps = self._deps
        # from here the outbox owns the result (written ahead, replayed after a crash): a
        # restart must not harvest the run's scratch dir as well
        await asyncio.to_thread(mark_finished, outcome.workdir, "published")
        key = await self._publish(result, decided=decision is not None, claim=claim)
        result = replace(result, key=key)
        await self._record(item, claim, result)
        if self._who.gpu_index is not None and deps.pool is not None and outcome.status == "ok":
            deps.pool.record_success(self._who.gpu_index)
        log.info(
            "experiment_finished",
            status=result.status,
            val_bpb=result.val_bpb,
            failure=result.failure,
            description=result.description,
            key=key,
            reason=decision.reason if decision else None,
            needs_confirmation=bool(decision and decision.needs_confirmation),
        )
        if deps.on_publish is not None:
            deps.on_publish(result)
        await self._tell_proposers(item.proposal, result)
        if result.status == "keep":
            self._lineage.follow(item.proposal.train_py, item.code_hash, result.val_bpb)
        await self._lineage.adopt_best()
        return key

    async def _record(self, item: Queued, claim: Claim, result: Result) -> None:
        """results.tsv/jsonl, the deduplicator, the view, the counters and the status."""
        deps = self._deps
        try:
            await deps.results_log.append(result)
        except OSError as exc:
            log.error("results_log_failed", error=str(exc))
        await deps.dedup.add_known(
            self._who.tier,
            item.proposal,
            item.code_hash,
            result.key or claim.key,
            parent_train_py=self._lineage.train_py,
        )
        deps.view.add(result)
        deps.counters.add_result(result.status)
        if result.sandbox == "none":
            log.warning(
                "result_unsandboxed",
                key=result.key,
                note="this run was not isolated (sandbox = none)",
            )
        self.runs += 1
        self._lineage.runs_since_adopt += 1
        self._status.update(
            runs=self.runs,
            last_result=LastResult(
                key=result.key,
                status=result.status,
                description=result.description,
                val_bpb=result.val_bpb,
                failure=result.failure,
                finished_at=deps.clock(),
            ),
        )

    async def _tell_proposers(self, proposal: Proposal, result: Result) -> None:
        try:
            await self._proposer.observe(proposal, result)
            if self._idle_proposer is not None and proposal.proposer == "search":
                await self._idle_proposer.observe(proposal, result)
        except ProposerError as exc:
            log.warning("proposer_observe_failed", error=str(exc)[:300])

    async def _publish(
        self, result: Result, *, decided: bool = True, claim: Claim | None = None
    ) -> str:
        deps = self._deps
        if deps.publisher is not None:  # durable: written ahead, replayed when deferred
            return str(
                await deps.publisher.publish(
                    result, decided=decided, noise_margin=deps.config.noise_margin, claim=claim
                )
            )
        try:
            return str(await deps.memory.publish_result(result))
        except (TransportError, ServerError) as exc:
            log.warning("publish_deferred", description=result.description, error=str(exc))
            return ""

    async def publish_leftovers(self, leftovers: list[Harvest]) -> None:
        """Publish, once, runs that finished while no supervisor watched (a crash of the
        previous one); runs cut short are only marked (their claims are re-claimable)."""
        while leftovers:
            left = leftovers.pop(0)
            if left.outcome is None:
                log.info(
                    "leftover_run_abandoned",
                    workdir=str(left.workdir),
                    description=left.meta.description,
                )
                await asyncio.to_thread(mark_finished, left.workdir, "abandoned")
                continue
            proposal = Proposal(
                train_py=left.train_py,
                description=left.meta.description,
                parent_hash=left.meta.parent_hash,
                proposer=left.meta.proposer,
            )
            item = Queued(proposal, left.meta.code_hash, parent_val=None, slow=False)
            claim = await self._claims.claim(item, quiet=True) or self._claims.local(item)
            log.info(
                "leftover_run_harvested",
                workdir=str(left.workdir),
                description=left.meta.description,
            )
            key = ""
            try:
                key = await self.decide_and_publish(item, claim, left.outcome, left.meta.seed)
            finally:
                await self._claims.settle(item, claim, idle=False, result_key=key or None)
                await asyncio.to_thread(mark_finished, left.workdir, "harvested")
