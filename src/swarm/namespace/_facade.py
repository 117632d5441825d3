"""``SwarmMemory``: one object, the swarm's typed operations, delegated to small rooms.

Each room holds one kind of record and reads the facade's settings at call time:
:mod:`._locks` (lock generations, mutexes), :mod:`._claims`, :mod:`._results`,
:mod:`._bests`, :mod:`._pending`, :mod:`._leaderboard`, :mod:`._ideas` and
:mod:`._summary`. Rooms reach each other through the facade's attributes
(``memory.locks``, ``memory.bests``, ...), never through private names.
"""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Literal

from swarm.beacon import Beacon
from swarm.errors import InvalidRequestError
from swarm.memory import MemoryBackend, SearchHit
from swarm.namespace import _store
from swarm.namespace._bests import Bests, Scope
from swarm.namespace._claims import Claims, Heartbeat
from swarm.namespace._ideas import Ideas
from swarm.namespace._leaderboard import Leaderboard
from swarm.namespace._locks import Locks
from swarm.namespace._pending import Pending
from swarm.namespace._results import Results
from swarm.namespace._summary import analyze
from swarm.records import (
    DEFAULT_TRACK,
    Best,
    BestDecision,
    Claim,
    ClaimOutcome,
    Hypothesis,
    Insight,
    LeaderboardEntry,
    Result,
    SwarmSummary,
)

if TYPE_CHECKING:
    from swarm.verify.candidates import CandidateBook

__all__ = ["SwarmMemory"]

Sleep = Callable[[float], Awaitable[None]]


class SwarmMemory:
    """Typed operations of the swarm over one ``MemoryBackend``.

    ``clock`` gives epoch seconds (inject a fake one in tests); ``sleep`` is used for
    waits (mutex back-off, the non-atomic verify delay). ``embed_records`` asks the
    backend to embed descriptions of claims, results, hypotheses and insights (as the
    original clients do, so their semantic searches see ours).
    """

    def __init__(
        self,
        backend: MemoryBackend,
        *,
        agent_id: str,
        host: str | None = None,
        clock: Callable[[], float] = time.time,
        lease_s: float = 90.0,
        heartbeat_s: float = 30.0,
        legacy_claim_ttl_s: float = 900.0,
        mutex_lease_s: float = 30.0,
        mutex_wait_s: float = 60.0,
        verify_delay_s: float = 1.0,
        embed_records: bool = True,
        sleep: Sleep = asyncio.sleep,
        session: str | None = None,
    ) -> None:
        if not agent_id or not agent_id.strip():
            raise InvalidRequestError("agent_id must be a non-empty name (e.g. 'alice-h100-0')")
        if lease_s <= 0 or heartbeat_s <= 0 or heartbeat_s >= lease_s:
            raise InvalidRequestError(
                f"need 0 < heartbeat_s < lease_s, got heartbeat_s={heartbeat_s}, lease_s={lease_s}"
            )
        self.backend = backend
        #: this process's claims carry it; a live claim of the same agent and host with
        #: another session is ours from before a crash, and is taken over (see try_claim)
        self.session = session or uuid.uuid4().hex
        self.agent_id = agent_id
        self.host = host if host is not None else socket.gethostname()
        self.clock = clock
        self.lease_s = float(lease_s)
        self.heartbeat_s = float(heartbeat_s)
        self.legacy_claim_ttl_s = float(legacy_claim_ttl_s)
        self.mutex_lease_s = float(mutex_lease_s)
        self.mutex_wait_s = float(mutex_wait_s)
        self.verify_delay_s = float(verify_delay_s)
        self.embed_records = embed_records
        self.sleep = sleep
        #: one heartbeat for all claims of this session (swarm.beacon); None: a beat per claim
        self.beacon: Beacon | None = None
        self.locks = Locks(self)
        self.claimbook = Claims(self)
        self.resultbook = Results(self)
        self.bests = Bests(self)
        self.pending = Pending(self)
        self.board = Leaderboard(self)
        self.ideas = Ideas(self)
        self._candidates: CandidateBook | None = None

    # ------------------------------------------------------------------ basics

    @property
    def candidates(self) -> CandidateBook:
        """Candidate bests, trust and noise records (:mod:`swarm.verify.candidates`)."""
        if self._candidates is None:
            from swarm.verify.candidates import CandidateBook  # builds on this module

            self._candidates = CandidateBook(self)
        return self._candidates

    @property
    def claims_are_atomic(self) -> bool:
        """False when the backend reported that create is not create-if-absent."""
        return bool(getattr(self.backend, "create_is_atomic", True))

    def now(self) -> float:
        """The clock's epoch seconds."""
        return float(self.clock())

    async def get_json(self, key_list: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Read records as JSON objects in one call (unreadable ones logged and skipped)."""
        return await _store.get_json(self.backend, key_list)

    async def upsert(
        self, key: str, value: str, description: str, *, create_first: bool = False
    ) -> None:
        """Write ``key`` whether or not it exists yet (``create_first``: most likely new)."""
        await _store.upsert(self.backend, key, value, description, create_first=create_first)

    # ------------------------------------------------------------------ claims

    async def try_claim(
        self,
        *,
        parent_hash: str,
        code_hash: str,
        description: str,
        track: str,
        tier: str | None,
        gpu_name: str = "",
        kind: Literal["experiment", "confirmation"] = "experiment",
    ) -> ClaimOutcome:
        """Claim the experiment ``(parent_hash, code_hash)``; exactly one racer wins.

        The loser gets ``won=False`` and ``holder``, the live claim of the winner. ``kind``
        "confirmation" claims the confirming run of a candidate best (its own lock).
        """
        return await self.claimbook.try_claim(
            parent_hash=parent_hash,
            code_hash=code_hash,
            description=description,
            track=track,
            tier=tier,
            gpu_name=gpu_name,
            kind=kind,
        )

    async def embed_claim(self, claim: Claim) -> None:
        """Ask the store to embed the claim record's description (semantic search by others)."""
        await self.claimbook.embed_claim(claim)

    async def still_held(self, claim: Claim) -> bool:
        """True while ``claim`` is still ours: no later generation, not released."""
        return await self.claimbook.still_held(claim)

    async def heartbeat(self, claim: Claim) -> bool:
        """Refresh ``heartbeat_at`` of the lock and the claim record.

        Returns False (and writes nothing) when the claim is no longer ours: the lease ran
        out and another agent took the experiment over, or it was released.
        """
        return await self.claimbook.heartbeat(claim)

    async def release(self, claim: Claim, *, result_key: str | None = None) -> None:
        """Release a claim: lock marked released (or done), claim record deleted.

        The lock's generation key stays so that the generation counter never goes back.
        With ``result_key`` (the run finished and its result is published) an experiment
        lock is marked ``done`` and is never won again: a racer that has not yet seen the
        result loses the claim instead of running the experiment twice. Without it (a run
        that did not finish: stopped, infrastructure failure, a dropped claim ahead) the
        next claim of the same code wins the next generation. Confirmation locks are
        always only released (another agent may still confirm the same candidate).
        """
        await self.claimbook.release(claim, result_key=result_key)

    async def confirming_now(
        self, candidates: Sequence[tuple[str, str, int]], *, track: str, tier: str | None
    ) -> dict[tuple[str, str], Claim | None]:
        """Who confirms each candidate ``(parent_hash, code_hash, runs so far)`` right now:
        the live holder of its confirmation lock, or None. Two or three calls whatever the
        number of candidates and the size of the swarm."""
        return await self.claimbook.confirming_now(candidates, track=track, tier=tier)

    def let_go(self, claim: Claim) -> None:
        """Stop keeping ``claim`` live (its supervisor's beacon lists it until it is released)
        when its release failed for good: its lease ends it."""
        self.claimbook.let_go(claim)

    async def live_claims(
        self, track: str | None = None, *, others_only: bool = False
    ) -> list[Claim]:
        """Claims (ours and other clients') that are live now, newest first. A claim kept
        live by its supervisor's beacon carries the beacon's last beat as ``heartbeat_at``.
        ``others_only``: leave out the claims this client holds (not read back: a lone
        machine pays the listing alone)."""
        return await self.claimbook.live_claims(track, others_only=others_only)

    async def prune_dead_claims(self) -> int:
        """Delete this agent's claim records that are no longer live (after a crash)."""
        return await self.claimbook.prune_dead_claims()

    @asynccontextmanager
    async def heartbeating(
        self, claim: Claim, *, interval_s: float | None = None, release_on_exit: bool = False
    ) -> AsyncIterator[Heartbeat]:
        """Refresh the claim every ``interval_s`` (default ``heartbeat_s``) while the block runs.

        Under this session's beacon the claim is only registered with it. Otherwise, with
        ``embed_records``, the task first has the claim record embedded (kept out of
        ``try_claim`` so that claiming stays fast). The task is owned here and always
        cancelled and awaited on exit; it is a plain task rather than a TaskGroup child so
        that an exception of the block reaches the caller unchanged (not wrapped in an
        ExceptionGroup). Store errors are logged and retried at the next beat; a lost claim
        (taken over after a missed lease) stops the beats and sets ``handle.lost``.
        """
        async with self.claimbook.heartbeating(
            claim, interval_s=interval_s, release_on_exit=release_on_exit
        ) as handle:
            yield handle

    # ------------------------------------------------------------------ results

    async def publish_result(self, result: Result) -> str:
        """Publish a finished experiment (any status) with its full source; returns its key.

        Idempotent: publishing the same run again (same agent, code, seed and
        ``completed_at``) returns the existing key. A keep also updates the leaderboard.
        """
        return await self.resultbook.publish(result)

    async def results(
        self, track: str | None = None, tier: str | None = None, limit: int | None = None
    ) -> list[Result]:
        """Published results, newest first, optionally of one track and tier."""
        return await self.resultbook.results(track, tier, limit)

    async def recent_results(
        self, since: float, *, track: str | None = None, tier: str | None = None
    ) -> list[Result]:
        """Results published since ``since`` (epoch seconds), newest first, from the feed
        buckets since then: the cost follows the recent traffic, not the history."""
        return await self.resultbook.recent(since, track=track, tier=tier)

    async def search(
        self, query: str, *, namespace: str = "results", limit: int = 10
    ) -> list[SearchHit]:
        """Semantic search over one namespace: ``results``, ``claims``, ``hypotheses`` or
        ``insights``."""
        return await self.resultbook.search(query, namespace=namespace, limit=limit)

    # ------------------------------------------------------------------ bests

    async def get_best(self, track: str, tier: str | None = None) -> Best | None:
        """The best of ``track`` in ``tier`` (``None``: over all tiers), or ``None`` if none yet."""
        return await self.bests.read(Scope("tier" if tier else "global", track, tier))

    async def get_agent_best(
        self, agent_id: str | None = None, track: str = DEFAULT_TRACK
    ) -> Best | None:
        """An agent's personal best on ``track`` (default: this agent)."""
        return await self.bests.read(Scope("agent", track, None, agent_id or self.agent_id))

    async def propose_best(self, result: Result, noise_margin: float = 0.0) -> BestDecision:
        """Offer a result as the new best of its track and tier, of its track, and of its agent.

        Sanity bounds first; then a compare-and-set of every best it beats under the
        track's one best mutex (``MemoryStoreError`` when the store fails, or when the
        mutex stays held longer than ``mutex_wait_s``). An improvement smaller than
        ``noise_margin`` is parked (pending) and reported with ``needs_confirmation=True``;
        a later run of the same code with another seed confirms it (this method
        recognises such a run, or call ``confirm_best``).
        """
        return await self.bests.propose(result, noise_margin)

    async def pending_confirmations(
        self, track: str | None = None, tier: str | None = None
    ) -> list[Result]:
        """Improvements waiting for a confirming run (re-run ``train_py`` with another seed)."""
        return await self.pending.confirmations(track, tier)

    async def confirm_best(self, result: Result) -> BestDecision:
        """Record a confirming run (same code, another seed) of a pending improvement."""
        return await self.pending.confirm_best(result)

    async def leaderboard(self, track: str = DEFAULT_TRACK) -> list[LeaderboardEntry]:
        """The leaderboard of ``track``: each agent's best keep per tier, best first."""
        return await self.board.entries(track)

    # ------------------------------------------------------------------ ideas

    async def publish_hypothesis(self, hypothesis: Hypothesis) -> str:
        """Publish an idea for anyone to pick up; returns its key (same idea again: same key)."""
        return await self.ideas.publish_hypothesis(hypothesis)

    async def unclaimed_hypotheses(
        self, track: str | None = None, limit: int | None = None, *, max_age_s: float = 0.0
    ) -> list[Hypothesis]:
        """Hypotheses nobody has taken yet, highest priority first, then newest.
        ``max_age_s``: a listing this client made less than that long ago is good enough
        (proposers of every worker of a machine share it; taking one is still atomic)."""
        return await self.ideas.unclaimed_hypotheses(track, limit, max_age_s)

    async def take_hypothesis(self, hypothesis: Hypothesis | str) -> bool:
        """Mark a hypothesis taken (atomic create); True for exactly one taker."""
        return await self.ideas.take_hypothesis(hypothesis)

    async def publish_insight(self, insight: Insight) -> str:
        """Publish what was learned; returns its key."""
        return await self.ideas.publish_insight(insight)

    async def insights(self, track: str | None = None, limit: int | None = None) -> list[Insight]:
        """Insights, newest first."""
        return await self.ideas.insights(track, limit)

    async def analyze(
        self, track: str | None = None, *, recent: int = 200, active_window_s: float = 3600.0
    ) -> SwarmSummary:
        """The swarm at a glance: active agents, bests per track and tier, live claims,
        recent keeps and failures, unclaimed hypotheses, trend."""
        return await analyze(self, track, recent=recent, active_window_s=active_window_s)
