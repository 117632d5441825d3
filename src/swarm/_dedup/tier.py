"""One deduplicator per VRAM tier, as the supervisor and its workers use it.

Results of different tiers are different experiments, so each tier has its own
:class:`~swarm.dedup.Deduplicator`; a cheap index of code hashes in front of them answers
the common cases (a known result, a live claim, a proposal queued on this machine, a
claim this machine lost to another agent) without parsing.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from swarm._dedup.deduplicator import Deduplicator
from swarm._dedup.model import Candidate, Verdict
from swarm._logging import get_logger
from swarm.errors import DedupError, TrainPyError
from swarm.trainpy import code_hash

if TYPE_CHECKING:
    from swarm.proposers import Proposal
    from swarm.records import Result

log = get_logger("swarm.supervisor")


class TierDedup:
    """One :class:`~swarm.dedup.Deduplicator` per VRAM tier (results of different tiers
    are different experiments), plus a cheap index of code hashes: known results, live
    claims, and proposals this machine has queued but not yet claimed (reserved, so two
    workers of one machine never prepare the same experiment)."""

    def __init__(self, factory: Callable[[], Deduplicator]) -> None:
        self._factory = factory
        self._dedups: dict[str, Deduplicator] = {}
        self._known: dict[str, dict[str, str]] = {}  # tier -> code hash -> result key
        self._live: dict[str, dict[str, str]] = {}  # tier -> code hash -> claim key
        self._reserved: dict[str, set[str]] = {}  # tier -> code hashes queued here
        #: tier -> code hash -> (lock key, until when on the monotonic clock): claims this
        #: machine lost to another agent
        self._elsewhere: dict[str, dict[str, tuple[str, float]]] = {}
        #: tier -> claims lost to other agents since this machine last won one
        self._lost_streak: dict[str, int] = {}
        self._sources: dict[str, str] = {}  # code hash -> train.py (parents for structure)
        self._lock = threading.Lock()
        self.keys: set[str] = set()

    def _get(self, tier: str) -> Deduplicator:
        with self._lock:
            dd = self._dedups.get(tier)
            if dd is None:
                dd = self._dedups[tier] = self._factory()
            return dd

    async def warm(self, tier: str) -> None:
        """Build the tier's deduplicator off the loop (it may load the embedding model)."""
        if tier not in self._dedups:
            dd = await asyncio.to_thread(self._factory)
            with self._lock:
                self._dedups.setdefault(tier, dd)

    def _taken(self, tier: str, chash: str) -> str | None:
        with self._lock:
            known = self._known.get(tier, {}).get(chash) or self._live.get(tier, {}).get(chash)
            if known:
                return known
            if chash in self._reserved.get(tier, set()):
                return "queued on this machine"
            lost = self._elsewhere.get(tier, {}).get(chash)
            if lost is not None:
                if time.monotonic() < lost[1]:
                    return lost[0]
                del self._elsewhere[tier][chash]
            return None

    def is_duplicate(
        self,
        tier: str,
        description: str,
        train_py: str,
        parent_hash: str | None,
        parent_train_py: str | None,
    ) -> bool:
        """Every layer, synchronously (proposers call it from their threads)."""
        try:
            chash = code_hash(train_py)
        except TrainPyError:
            return False
        if self._taken(tier, chash):
            return True
        cand = self._candidate_raw(description, train_py, parent_hash, parent_train_py)
        try:
            return self._get(tier).check(cand).duplicate
        except DedupError:
            return False

    def _candidate_raw(
        self, description: str, train_py: str, parent_hash: str | None, parent_train_py: str | None
    ) -> Candidate:
        parent_src = parent_train_py
        if parent_hash and parent_hash in self._sources:
            parent_src = self._sources[parent_hash]
        if not parent_hash:
            parent_src = None
        return Candidate(
            description=description,
            train_py=train_py,
            parent_train_py=parent_src,
            parent_hash=parent_hash or None,
        )

    def _candidate(self, proposal: Proposal | Result, parent_train_py: str | None) -> Candidate:
        return self._candidate_raw(
            proposal.description, proposal.train_py, proposal.parent_hash or None, parent_train_py
        )

    async def check(
        self, tier: str, proposal: Proposal, chash: str, *, parent_train_py: str | None
    ) -> Verdict | None:
        """The verdict when ``proposal`` duplicates a known, live or queued experiment
        (None when it is new; it is then reserved until claimed or dropped)."""
        taken = self._taken(tier, chash)
        if taken:
            return Verdict(True, "exact", taken, 1.0, "same code as a known experiment")
        try:
            verdict = await self._get(tier).acheck(self._candidate(proposal, parent_train_py))
        except DedupError as exc:
            log.warning("dedup_unavailable", tier=tier, error=str(exc))
            verdict = None
        if verdict is not None and verdict.duplicate:
            return verdict
        with self._lock:
            reserved = self._reserved.setdefault(tier, set())
            if chash in reserved:
                return Verdict(
                    True, "exact", "queued on this machine", 1.0, "same code as a queued proposal"
                )
            reserved.add(chash)
        return None

    def unreserve(self, tier: str, chash: str) -> None:
        """A queued proposal was claimed, lost or dropped."""
        with self._lock:
            self._reserved.get(tier, set()).discard(chash)

    def taken_elsewhere(self, tier: str, chash: str, key: str, for_s: float | None) -> None:
        """Another agent holds the claim of this code (``key``: its lock): none of this
        machine's workers proposes it again for ``for_s`` seconds (its holder's lease; None:
        for good, the experiment is done). Without this, every worker of a machine loses the
        same claim in turn when their proposers agree on the same next move."""
        until = math.inf if for_s is None else time.monotonic() + for_s
        with self._lock:
            self._elsewhere.setdefault(tier, {})[chash] = (key or "claimed elsewhere", until)
            self._reserved.get(tier, set()).discard(chash)
            self._lost_streak[tier] = self._lost_streak.get(tier, 0) + 1

    def contention(self, tier: str) -> int:
        """Claims this machine lost to other agents lately (in ``tier``): each loss adds one,
        each claim won halves it."""
        return self._lost_streak.get(tier, 0)

    async def add_live(
        self, tier: str, proposal: Proposal, chash: str, key: str, *, parent_train_py: str | None
    ) -> None:
        with self._lock:
            self._live.setdefault(tier, {})[chash] = key
            self._reserved.get(tier, set()).discard(chash)
            # a claim won: halve the count rather than forget it (a machine that loses ten
            # claims for each it wins is still in a crowd)
            self._lost_streak[tier] = self._lost_streak.get(tier, 0) // 2
        with contextlib.suppress(DedupError):
            await self._get(tier).aadd(self._candidate(proposal, parent_train_py), key, live=True)

    def drop_live(self, tier: str, chash: str) -> None:
        with self._lock:
            key = self._live.get(tier, {}).pop(chash, None)
        if key:
            with contextlib.suppress(DedupError):
                self._get(tier).remove(key)

    async def add_known(
        self,
        tier: str,
        item: Proposal | Result,
        chash: str,
        key: str,
        *,
        parent_train_py: str | None = None,
    ) -> None:
        with self._lock:
            if not key or key in self.keys:
                return
            self.keys.add(key)
            self._known.setdefault(tier, {})[chash] = key
            if item.train_py:
                self._sources.setdefault(chash, item.train_py)
        with contextlib.suppress(DedupError):
            await self._get(tier).aadd(self._candidate(item, parent_train_py), key)

    async def load(self, results: list[Result]) -> int:
        """Register the swarm's results (oldest first, so parents are known first)."""
        added = 0
        ordered = sorted(results, key=lambda r: r.completed_at or 0.0)
        with self._lock:
            for r in ordered:
                if r.code_hash and r.train_py:
                    self._sources.setdefault(r.code_hash, r.train_py)
        for r in ordered:
            if not r.key or r.key in self.keys or not r.train_py:
                continue
            chash = r.code_hash
            if not chash:
                try:
                    chash = code_hash(r.train_py)
                except TrainPyError:
                    continue
            await self.add_known(r.vram_tier or "cpu", r, chash, r.key)
            added += 1
        return added
