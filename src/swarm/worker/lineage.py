"""Which train.py a worker builds on (:class:`Lineage`): the best of its track and tier as
last seen, adopted from the swarm every ``adopt_every`` runs or taken over from its own
kept result. The first run on an empty memory is the baseline (the seed train.py)."""

from __future__ import annotations

import asyncio

from swarm._logging import get_logger
from swarm.errors import MemoryStoreError
from swarm.records import Best
from swarm.trainpy import code_hash, short_hash
from swarm.worker.deps import Queued, WorkerDeps

__all__ = ["Lineage"]

log = get_logger(__name__)


class Lineage:
    """The parent every new proposal of one worker is built on."""

    def __init__(self, deps: WorkerDeps, tier: str) -> None:
        self._deps = deps
        self._tier = tier
        self.train_py = deps.seed_train_py
        self.hash = code_hash(deps.seed_train_py)
        self.val: float | None = None
        self.best_known = False
        self.baseline_pending = True
        self.runs_since_adopt = 0
        #: set whenever the parent moves to other code (queued proposals may be stale)
        self.changed = asyncio.Event()
        self._warned_foreign_best = False

    def take_baseline(self) -> bool:
        """True once, when the next proposal must be the unmodified seed train.py."""
        if self.baseline_pending and not self.best_known:
            self.baseline_pending = False
            return True
        return False

    def is_stale(self, item: Queued) -> bool:
        """Built on a parent that is no longer the one followed (slow proposals, the
        baseline and confirmations never go stale: they are worth their run anyway)."""
        if item.slow or item.proposal.proposer == "baseline":
            return False
        return item.proposal.parent_hash not in ("", self.hash)

    def follow(self, train_py: str, chash: str, val: float | None) -> bool:
        """Build on ``train_py`` from now on; True when that is other code than before."""
        self.best_known = True
        moved = chash != self.hash
        self.train_py, self.hash, self.val = train_py, chash, val
        if moved:
            self.changed.set()
        return moved

    async def adopt_best(self, *, force: bool = False) -> None:
        """Follow the swarm's best for this track and tier when it moved."""
        deps = self._deps
        if not force and self.runs_since_adopt < deps.config.adopt_every:
            return
        self.runs_since_adopt = 0
        best = await self._fetch_best()
        if best is None or not best.train_py or not self._trusted(best):
            return
        self.best_known = True
        bhash = best.code_hash or code_hash(best.train_py)
        if best.val_bpb is not None:
            deps.known_vals.setdefault(bhash, best.val_bpb)
        if bhash == self.hash and best.val_bpb == self.val:
            return
        if self.follow(best.train_py, bhash, best.val_bpb):
            log.info(
                "best_adopted",
                val_bpb=best.val_bpb,
                by=best.agent_id,
                description=best.result.description,
                code=short_hash(bhash),
            )

    async def _fetch_best(self) -> Best | None:
        deps = self._deps
        try:
            if deps.config.verified_bests:
                return await deps.memory.candidates.adoptable(
                    deps.track, self._tier, deps.config.adopt
                )
            return await deps.memory.get_best(deps.track, self._tier)
        except MemoryStoreError as exc:
            log.warning("best_unavailable", error=str(exc))
            return None

    def _trusted(self, best: Best) -> bool:
        """Without a sandbox only this agent's own code runs here."""
        if not self._deps.trusted_only or best.agent_id == self._deps.agent_id:
            return True
        if not self._warned_foreign_best:
            self._warned_foreign_best = True
            log.warning(
                "best_not_adopted",
                by=best.agent_id,
                reason="no sandbox: another agent's code is not run here",
            )
        return False
