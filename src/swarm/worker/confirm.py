"""Confirmation runs: the same code trained again with another seed, before any new
proposal. With verified bests the worker takes open candidates of the swarm from the
memory; without, it schedules its own improvement that stayed below the noise margin."""

from __future__ import annotations

import random

from swarm._logging import get_logger
from swarm.errors import MemoryStoreError
from swarm.proposers import Proposal
from swarm.records import BestDecision, Result
from swarm.verify.candidates import next_confirmation, trust_policy
from swarm.worker.deps import SEED_ENV, Queued, WorkerDeps

__all__ = ["Confirmations"]

log = get_logger(__name__)


class Confirmations:
    """The confirmation runs a worker owes, oldest first, each with its seed."""

    def __init__(self, deps: WorkerDeps, tier: str, rng: random.Random) -> None:
        self._deps = deps
        self._tier = tier
        self._rng = rng
        self._due: list[tuple[Queued, int]] = []
        self._warned_no_seed = False

    def __bool__(self) -> bool:
        return bool(self._due)

    def pop(self) -> tuple[Queued, int]:
        return self._due.pop(0)

    async def take_open(self) -> None:
        """Queue an open candidate of the swarm (or, solo, our own) for confirmation."""
        deps = self._deps
        if self._due or not deps.config.verified_bests:
            return
        try:
            found = await next_confirmation(
                deps.memory.candidates,
                deps.track,
                self._tier,
                trust_policy(deps.config),
                own_only=deps.trusted_only,
                rng=self._rng,
                # the machine's workers share a listing a third of a heartbeat old: a
                # candidate waits for a whole run anyway, and each claim a worker loses
                # sends it back here
                max_age_s=deps.memory.heartbeat_s / 3,
            )
        except MemoryStoreError as exc:
            log.warning("confirmations_unavailable", error=str(exc))
            return
        if found is None:
            return
        cand, seed = found
        r = cand.result
        if r.code_hash in deps.confirming:
            return  # another worker of this machine confirms it now
        proposal = Proposal(
            train_py=r.train_py,
            description=r.description,
            parent_hash=r.parent_hash,
            proposer="confirm",
            rationale=f"confirm {r.agent_id}'s candidate {r.val_bpb}",
        )
        self._due.append((Queued(proposal, r.code_hash, cand.previous_val, True), seed))
        log.info(
            "confirmation_taken",
            candidate=cand.key,
            by=r.agent_id,
            seed=seed,
            suspicious=cand.suspicious,
        )

    def started(self, item: Queued) -> None:
        """This worker won the claim to confirm ``item``: the others of the machine skip it."""
        self._deps.confirming.add(item.code_hash)

    def ended(self, item: Queued) -> None:
        """The confirmation of ``item`` is published (or given up)."""
        self._deps.confirming.discard(item.code_hash)

    def schedule(self, item: Queued, result: Result, decision: BestDecision) -> None:
        """An improvement below the noise margin: confirm it with another seed (same code)
        as this worker's next run, when its train.py reads the seed."""
        if SEED_ENV not in item.proposal.train_py:
            if not self._warned_no_seed:
                self._warned_no_seed = True
                log.warning(
                    "confirmation_unavailable",
                    note=f"train.py does not read {SEED_ENV}: a pending improvement "
                    "can only be confirmed by another agent's run",
                )
            return
        new_seed = (result.seed or 0) + 1 + self._rng.randrange(1000)
        log.info(
            "confirmation_scheduled",
            description=item.proposal.description,
            seed=new_seed,
            reason=decision.reason,
        )
        self._due.append((item, new_seed))
