"""The namespace layer: claims, results, bests, hypotheses and insights over one backend.

:class:`SwarmMemory` is the only place that knows the layout of the shared memory
(built by :mod:`swarm.keys`) and the JSON form of its records (:mod:`swarm.records`).
Everything above it (worker, proposers, ``swarm status``) works with typed records.

Claims
    An experiment is identified by ``(parent_hash, code_hash)``. Claiming it is an
    atomic create-if-absent of the lock record ``locks/exp/<track>/<tier>/<parent12>--<code12>/g<N>``
    (no agent name in the key, so racing agents collide and exactly one create
    succeeds), followed by the human-readable ``claims/<agent>--<slug>--<hash6>``
    record that other clients of the org understand. The holder refreshes
    ``heartbeat_at`` every ``heartbeat_s``; a lock whose heartbeat is older than
    ``lease_s`` (or that was released) is free, and the next claimer takes it over by
    creating generation ``N+1`` -- again create-if-absent, so of any number of racers
    exactly one wins each generation. Generation keys are never deleted (release marks
    the lock released), so the counter never goes back and an old generation can
    never be re-won. Claims of clients without heartbeats count as live for
    ``legacy_claim_ttl_s`` (15 minutes) after ``claimed_at``.

    When the backend says its create is not atomic (``create_is_atomic = False``,
    a server that accepted two creates of one key), claims fall back to
    claim-then-verify (write, wait ``verify_delay_s``, read back the nonce) and the
    fallback is logged.

Bests
    Per track: the track's best over all tiers, the best of each VRAM tier, and each
    agent's personal best (keys in :mod:`swarm.keys`). ``propose_best`` applies the
    sanity bounds (``val_bpb > 0.5``, no single improvement above 0.1), then a
    compare-and-set under a short leased mutex (re-read the current best while
    holding it, write only if still better); the previous best is kept inside the new
    record. An improvement below ``noise_margin`` is parked as a pending record and
    moves the best only after a second run of the same code with another seed
    confirms it (``confirm_best``, or ``propose_best`` with that run).
"""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_delay,
    wait_random_exponential,
)

from swarm import keys
from swarm._logging import get_logger
from swarm.beacon import Beacon, beacon_keeps
from swarm.errors import (
    InvalidRequestError,
    KeyExistsError,
    KeyNotFoundError,
    MemoryStoreError,
    ProtocolError,
    ToolError,
)
from swarm.memory._types import Memory, MemoryBackend, NewMemory, SearchHit
from swarm.records import (
    DEFAULT_TRACK,
    STATUSES,
    TIERS,
    Best,
    BestDecision,
    BestKind,
    Claim,
    ClaimOutcome,
    Hypothesis,
    Insight,
    LeaderboardEntry,
    Result,
    SwarmSummary,
    decode_record,
    encode_record,
    to_iso,
)
from swarm.sync import feed_entry

__all__ = [
    "BEST_MAX_STEP",
    "BEST_MAX_STEP_BY_TRACK",
    "BEST_MIN_VAL_BPB",
    "Heartbeat",
    "SwarmMemory",
    "best_max_step",
]

if TYPE_CHECKING:
    from swarm.verify.candidates import CandidateBook

log = get_logger(__name__)

BEST_MIN_VAL_BPB = 0.5
"""A val_bpb at or below this is a bug, never a best."""

BEST_MAX_STEP = 0.1
"""No single result may improve a standard-track best by more than this."""

BEST_MAX_STEP_BY_TRACK: dict[str, float] = {"standard": BEST_MAX_STEP, "smoke": 1.0}
"""Per-track step bound: a smoke run's val_bpb starts near 3 and early keeps gain tenths."""


def best_max_step(track: str) -> float:
    """The largest believable single-step improvement of a best on ``track``."""
    return BEST_MAX_STEP_BY_TRACK.get(track, BEST_MAX_STEP)

_RESULT_CACHE = 4096
_LEADERBOARD_SIZE = 100
_PUBLISH_ATTEMPTS = 8

Sleep = Callable[[float], Awaitable[None]]


class _Busy(Exception):
    """A mutex is held by a live holder (internal: drives the wait loop)."""


@dataclass(frozen=True, slots=True)
class _Acquired:
    won: bool
    key: str
    generation: int
    holder: Claim | None = None
    took_over: bool = False


@dataclass(frozen=True, slots=True)
class _Scope:
    kind: BestKind
    track: str
    tier: str | None
    agent_id: str | None = None

    @property
    def meta_key(self) -> str:
        if self.kind == "agent":
            return keys.agent_best_key(self.agent_id or "unknown", self.track)
        return keys.best_metadata_key(self.track, self.tier)

    @property
    def code_key(self) -> str | None:
        if self.kind == "agent":
            return None
        return keys.best_train_py_key(self.track, self.tier)

    @property
    def mutex(self) -> str:
        who = self.tier if self.kind == "tier" else (self.agent_id if self.kind == "agent" else "all")
        return f"best--{self.kind}--{self.track}--{who}"

    def label(self) -> str:
        if self.kind == "tier":
            return f"{self.track}/{self.tier}"
        if self.kind == "agent":
            return f"{self.track}/agent {self.agent_id}"
        return f"{self.track} (all tiers)"


class Heartbeat:
    """Handle of a running heartbeat (yielded by ``SwarmMemory.heartbeating``)."""

    __slots__ = ("beats", "claim", "embedded", "failures", "lost")

    def __init__(self, claim: Claim) -> None:
        self.claim = claim
        self.beats = 0
        self.failures = 0
        self.lost = False
        self.embedded = False


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
        self._sleep = sleep
        self._results_cache: OrderedDict[str, Result] = OrderedDict()
        self._warned_non_atomic = False
        self._candidates: CandidateBook | None = None
        #: one heartbeat for all claims of this session (swarm.beacon); None: a beat per claim
        self.beacon: Beacon | None = None

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

    def _now(self) -> float:
        return float(self.clock())

    async def _get_json(self, key_list: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Batch get; values decoded as JSON objects. Unusable records are logged and skipped."""
        if not key_list:
            return {}
        found = await self.backend.get(list(dict.fromkeys(key_list)))
        out: dict[str, dict[str, Any]] = {}
        for key, mem in found.items():
            try:
                out[key] = decode_record(key, mem.value)
            except ProtocolError as exc:
                log.warning("record_unreadable", key=key, error=str(exc))
        return out

    async def _create_one(self, key: str, value: str, description: str, *, embed: bool) -> bool:
        """Create-if-absent of one key; True when created, False when it already existed."""
        (res,) = await self.backend.create(
            [NewMemory(key=key, value=value, description=description, embed=embed)]
        )
        if res.ok:
            return True
        if res.exists:
            return False
        raise ToolError(f"create of {key!r} failed: {res.error or 'unknown error'}", key=key)

    async def _create_result(self, key: str, value: str, description: str) -> bool:
        """Create-if-absent of a result together with its feed entry (swarm.sync), one call."""
        items = [NewMemory(key=key, value=value, description=description, embed=self.embed_records)]
        if key.startswith(keys.RESULTS):
            items.append(feed_entry(key, self._now()))
        res = await self.backend.create(items)
        if len(res) > 1 and not res[1].ok and not res[1].exists:
            log.warning("feed_entry_failed", key=key, error=res[1].error)
        if res[0].ok:
            return True
        if res[0].exists:
            return False
        raise ToolError(f"create of {key!r} failed: {res[0].error or 'unknown error'}", key=key)

    async def _upsert(self, key: str, value: str, description: str, *, embed: bool = False) -> None:
        """Update ``key``, creating it when absent (and updating again if a racer created it)."""
        for _ in range(3):
            try:
                await self.backend.update(key, value, description=description)
                return
            except KeyNotFoundError:
                pass
            if await self._create_one(key, value, description, embed=embed):
                return
        raise ToolError(f"could not write {key!r}: it kept appearing and disappearing", key=key)

    # ------------------------------------------------------------------ locks

    async def _acquire(
        self,
        prefix: str,
        key_for: Callable[[int], str],
        payload: Callable[[int, str], dict[str, Any]],
        *,
        fast_first: bool,
        legacy_ttl_s: float,
        verify_top: bool = False,
        max_rounds: int = 8,
        reclaim: Callable[[Claim], bool] | None = None,
    ) -> _Acquired:
        """Win the lowest free generation of the lock under ``prefix``.

        ``payload(generation, key)`` builds the lock record; it must carry a ``nonce``.
        With ``fast_first`` generation 1 is tried blind first (one round trip for a
        never-claimed lock); this is only sound because generation keys are never
        deleted. Returns the winner (us) or the live holder.
        """
        probe = getattr(self.backend, "check_create_atomic", None)
        atomic = bool(await probe()) if probe is not None else self.claims_are_atomic
        if not atomic and not self._warned_non_atomic:
            self._warned_non_atomic = True
            log.warning(
                "claims_non_atomic_fallback",
                backend=getattr(self.backend, "name", "?"),
                detail="backend create is not create-if-absent; claims use claim-then-verify",
            )
        target: int | None = 1 if fast_first and atomic else None
        took_over = False
        for _ in range(max_rounds):
            if target is None:
                infos = await self.backend.list_keys(prefix)
                gens = [g for g in (keys.lock_generation(i.key) for i in infos) if g is not None]
                if not gens:
                    target = 1
                else:
                    top = max(gens)
                    top_key = key_for(top)
                    current = await self._get_json([top_key])
                    if top_key not in current:
                        continue  # vanished since the listing: list again
                    else:
                        holder = Claim.from_json(top_key, current[top_key])
                        own_stale = reclaim is not None and reclaim(holder)
                        if not own_stale and await self._holder_live(top_key, holder, legacy_ttl_s):
                            return _Acquired(False, top_key, top, holder=holder)
                        target = top + 1
                        took_over = holder.released_at is None  # dead, not released
            key = key_for(target)
            record = payload(target, key)
            value = encode_record(record)
            created = await self._create_one(key, value, "[autoresearch] lock", embed=False)
            if created and not atomic:
                await self._sleep(self.verify_delay_s)
                back = await self._get_json([key])
                if back.get(key, {}).get("nonce") != record["nonce"]:
                    created = False
            if created and verify_top:
                # Lower generations of this prefix get deleted, so a create can succeed on a
                # garbage-collected generation after a stale listing. A later generation then
                # already exists: step back (mark ours released) and look again.
                infos = await self.backend.list_keys(prefix)
                top = max((g for g in (keys.lock_generation(i.key) for i in infos) if g is not None),
                          default=target)
                if top > target:
                    record["status"] = "released"
                    record["released_at"] = to_iso(self._now())
                    await self.backend.update(key, encode_record(record))
                    created = False
            if created:
                return _Acquired(True, key, target, took_over=took_over)
            target = None  # someone else won this generation: look again
        # Endless contention is not expected; report whoever holds the top now.
        infos = await self.backend.list_keys(prefix)
        gens = [g for g in (keys.lock_generation(i.key) for i in infos) if g is not None]
        last: Claim | None = None
        if gens:
            top_key = key_for(max(gens))
            cur = await self._get_json([top_key])
            if top_key in cur:
                last = Claim.from_json(top_key, cur[top_key])
        return _Acquired(False, key_for(max(gens) if gens else 1), max(gens) if gens else 1, last)

    async def _holder_live(self, key: str, holder: Claim, legacy_ttl_s: float) -> bool:
        """Live by its own heartbeat, or kept live by its supervisor's beacon."""
        now = self._now()
        if holder.is_live(now, legacy_ttl_s):
            return True
        return key in await beacon_keeps(self.backend, [(key, holder)], now)

    @asynccontextmanager
    async def _mutex(self, name: str) -> AsyncIterator[str]:
        """A short leased mutex (best and leaderboard compare-and-set). Yields the lock key."""
        prefix = keys.mutex_lock_prefix(name)
        nonce = uuid.uuid4().hex

        def payload(gen: int, key: str) -> dict[str, Any]:
            now = self._now()
            return {
                "agent_id": self.agent_id,
                "host": self.host,
                "description": f"mutex {name}",
                "claimed_at": to_iso(now),
                "heartbeat_at": to_iso(now),
                "lease_s": self.mutex_lease_s,
                "nonce": nonce,
                "generation": gen,
                "status": "claimed",
            }

        acquired: _Acquired | None = None

        def before_sleep(state: RetryCallState) -> None:
            log.debug("mutex_busy", mutex=name, attempt=state.attempt_number)

        holder = "?"
        try:
            async for attempt in AsyncRetrying(
                retry=retry_if_exception_type(_Busy),
                wait=wait_random_exponential(multiplier=0.01, max=0.5),
                stop=stop_after_delay(self.mutex_wait_s),
                sleep=self._sleep,
                before_sleep=before_sleep,
                reraise=True,
            ):
                with attempt:
                    got = await self._acquire(
                        prefix,
                        lambda g: keys.mutex_lock_key(name, g),
                        payload,
                        fast_first=False,
                        legacy_ttl_s=self.mutex_lease_s,
                        verify_top=True,
                    )
                    if not got.won:
                        holder = got.holder.agent_id if got.holder else "?"
                        raise _Busy(name)
                    acquired = got
        except _Busy as exc:
            raise MemoryStoreError(
                f"the shared lock {prefix!r} is still held by {holder} after "
                f"{self.mutex_wait_s:.0f} s; it frees itself {self.mutex_lease_s:.0f} s after its "
                "holder stops -- try again later"
            ) from exc
        assert acquired is not None
        if acquired.took_over:
            log.info("mutex_taken_over", mutex=name, generation=acquired.generation)
        try:
            yield acquired.key
        finally:
            done = payload(acquired.generation, acquired.key)
            done["status"] = "released"
            done["released_at"] = to_iso(self._now())
            stale = [keys.mutex_lock_key(name, g) for g in range(max(1, acquired.generation - 3), acquired.generation)]
            try:
                await self.backend.update(acquired.key, encode_record(done))
                if stale:
                    await self.backend.delete(stale)  # only generations below ours: the top stays
            except MemoryStoreError as exc:
                log.warning("mutex_release_failed", mutex=name, error=str(exc))

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
        if not code_hash:
            raise InvalidRequestError("try_claim needs code_hash (swarm.trainpy.code_hash(train_py))")
        lock_prefix = (keys.confirmation_lock_prefix if kind == "confirmation"
                       else keys.experiment_lock_prefix)
        prefix = lock_prefix(parent_hash, code_hash, track=track, tier=tier)
        claim_key = keys.claim_key(self.agent_id, description, parent_hash, code_hash)
        nonce = uuid.uuid4().hex
        base = Claim(
            key=claim_key,
            agent_id=self.agent_id,
            description=description,
            experiment_key=claim_key.removeprefix(keys.CLAIMS),
            parent_hash=parent_hash,
            code_hash=code_hash,
            track=track,
            vram_tier=tier,
            gpu_name=gpu_name,
            host=self.host,
            lease_s=self.lease_s,
            nonce=nonce,
            extra={"session": self.session, **({"beacon": self.beacon.key} if self.beacon else {})},
        )
        stamped: dict[int, Claim] = {}

        def payload(gen: int, key: str) -> dict[str, Any]:
            now = self._now()
            c = replace(base, claimed_at=now, heartbeat_at=now, lock_key=key)
            stamped[gen] = c
            data = c.to_json()
            data["generation"] = gen
            data["kind"] = kind
            return data

        got = await self._acquire(
            prefix,
            lambda g: f"{prefix}g{g:06d}",
            payload,
            fast_first=True,
            legacy_ttl_s=self.lease_s,
            reclaim=self._own_stale,
        )
        if not got.won:
            who = got.holder.agent_id if got.holder else "?"
            log.info("claim_lost", experiment=prefix, holder=who)
            return ClaimOutcome(won=False, holder=got.holder, reason=f"claimed by {who}")
        claim = stamped[got.generation]
        if got.took_over:
            log.warning("claim_taken_over", lock=got.key, generation=got.generation)
        text = encode_record(claim.to_json())
        desc = f"[autoresearch] Claim: {description}"
        try:
            # Written without an embedding: embedding costs tens of milliseconds on a CPU and
            # the claimer should not wait for it. heartbeating() embeds it right away in the
            # background (embed_claim) so that other clients' semantic checks see it.
            # Under a beacon most claims are taken ahead, while a run trains: the record is
            # embedded at once then, which saves the separate embedding write.
            embed = self.embed_records and self.beacon is not None
            if not await self._create_one(claim_key, text, desc, embed=embed):
                await self.backend.update(claim_key, text, description=desc, embed=embed or None)
        except MemoryStoreError as exc:
            # The lock is what counts; a missing human-readable record only hides the claim
            # from other clients. Keep the claim and say so.
            log.warning("claim_record_write_failed", key=claim_key, error=str(exc))
        log.info("claim_won", key=claim_key, lock=got.key)
        return ClaimOutcome(won=True, claim=claim)

    def _own_stale(self, holder: Claim) -> bool:
        """A live claim of this agent on this host from another session: a run of ours cut
        short by a crash of the supervisor (a state-dir lock keeps two supervisors of one
        agent and host from running at once), to be re-claimed, not lost to ourselves."""
        other = str(holder.extra.get("session") or "")
        return (holder.agent_id == self.agent_id and holder.host == self.host
                and other != "" and other != self.session)

    async def embed_claim(self, claim: Claim) -> None:
        """Ask the store to embed the claim record's description (semantic search by others)."""
        await self.backend.update(
            claim.key,
            encode_record(replace(claim, heartbeat_at=self._now()).to_json()),
            description=f"[autoresearch] Claim: {claim.description}",
            embed=True,
            embed_source="description",
        )

    async def still_held(self, claim: Claim) -> bool:
        """True while ``claim`` is still ours: no later generation, not released."""
        gen = keys.lock_generation(claim.lock_key)
        if gen is None:
            raise InvalidRequestError(f"claim {claim.key!r} has no lock key of ours ({claim.lock_key!r})")
        nxt = claim.lock_key[: claim.lock_key.rfind("/g") + 1] + f"g{gen + 1:06d}"
        cur = await self._get_json([claim.lock_key, nxt])
        if nxt in cur:
            return False
        mine = cur.get(claim.lock_key)
        return mine is not None and mine.get("nonce") == claim.nonce and not mine.get("released_at")

    async def heartbeat(self, claim: Claim) -> bool:
        """Refresh ``heartbeat_at`` of the lock and the claim record.

        Returns False (and writes nothing) when the claim is no longer ours: the lease ran
        out and another agent took the experiment over, or it was released.
        """
        if not await self.still_held(claim):
            log.warning("heartbeat_lost_claim", key=claim.key, lock=claim.lock_key)
            return False
        fresh = replace(claim, heartbeat_at=self._now())
        lock_data = fresh.to_json()
        gen = keys.lock_generation(claim.lock_key)
        lock_data["generation"] = gen
        lock_data["kind"] = "experiment"
        text = encode_record(fresh.to_json())
        results = await asyncio.gather(
            self.backend.update(claim.lock_key, encode_record(lock_data)),
            self.backend.update(claim.key, text),
            return_exceptions=True,
        )
        if isinstance(results[0], BaseException):
            raise results[0]
        if isinstance(results[1], KeyNotFoundError):
            try:
                await self._create_one(claim.key, text, f"[autoresearch] Claim: {claim.description}",
                                       embed=self.embed_records)
            except MemoryStoreError as exc:
                log.warning("claim_record_recreate_failed", key=claim.key, error=str(exc))
        elif isinstance(results[1], BaseException):
            log.warning("claim_record_heartbeat_failed", key=claim.key, error=str(results[1]))
        return True

    async def release(self, claim: Claim) -> None:
        """Release a finished experiment: lock marked released, claim record deleted.

        The lock's generation key stays (marked ``released``) so that the generation
        counter never goes back; the next claim of the same code wins the next one.
        """
        now = self._now()
        released = replace(claim, heartbeat_at=now, released_at=now, status="released")
        lock_data = released.to_json()
        lock_data["generation"] = keys.lock_generation(claim.lock_key)
        lock_data["kind"] = "experiment"
        try:
            # No check that the lock is still ours: after a takeover the holder is a later
            # generation, and marking our own generation released changes nothing for it.
            await self.backend.update(claim.lock_key, encode_record(lock_data))
        except KeyNotFoundError:
            log.warning("claim_lock_missing", key=claim.key, lock=claim.lock_key)
        finally:
            await self.backend.delete([claim.key])
        log.info("claim_released", key=claim.key)

    async def live_claims(self, track: str | None = None) -> list[Claim]:
        """Claims (ours and other clients') that are live now, newest first."""
        infos = await self.backend.list_keys(keys.CLAIMS)
        data = await self._get_json([i.key for i in infos])
        now = self._now()
        found = [(k, Claim.from_json(k, rec)) for k, rec in data.items()]
        found = [(k, c) for k, c in found if c.status != "released"
                 and (track is None or c.track == track)]
        beaconed = await beacon_keeps(
            self.backend, [(k, c) for k, c in found if not c.is_live(now, self.legacy_claim_ttl_s)],
            now)
        out = [c for k, c in found if k in beaconed or c.is_live(now, self.legacy_claim_ttl_s)]
        out.sort(key=lambda c: c.claimed_at or 0.0, reverse=True)
        return out

    async def prune_dead_claims(self) -> int:
        """Delete this agent's claim records that are no longer live (after a crash)."""
        prefix = f"{keys.CLAIMS}{keys.agent_slug(self.agent_id)}--"
        infos = await self.backend.list_keys(prefix)
        data = await self._get_json([i.key for i in infos])
        now = self._now()
        dead = [
            k for k, rec in data.items()
            if (c := Claim.from_json(k, rec)).agent_id == self.agent_id
            and not c.is_live(now, self.legacy_claim_ttl_s)
        ]
        if dead:
            await self.backend.delete(dead)
        return len(dead)

    @asynccontextmanager
    async def heartbeating(
        self, claim: Claim, *, interval_s: float | None = None, release_on_exit: bool = False
    ) -> AsyncIterator[Heartbeat]:
        """Refresh the claim every ``interval_s`` (default ``heartbeat_s``) while the block runs.

        With ``embed_records`` the task first has the claim record embedded (kept out of
        ``try_claim`` so that claiming stays fast). The task is owned here and always
        cancelled and awaited on exit; it is a
        plain task rather than a TaskGroup child so that an exception of the block reaches
        the caller unchanged (not wrapped in an ExceptionGroup). Store errors are logged
        and retried at the next beat; a lost claim (taken over after a missed lease) stops
        the beats and sets ``handle.lost``.
        """
        interval = float(interval_s) if interval_s is not None else self.heartbeat_s
        handle = Heartbeat(claim)
        if self.beacon is not None and claim.extra.get("beacon") == self.beacon.key:
            async with self.beacon.keeping(claim, handle):
                yield handle
            if release_on_exit and not handle.lost:
                await self.release(claim)
            return

        async def beat() -> None:
            if self.embed_records:
                try:
                    await self.embed_claim(claim)
                    handle.embedded = True
                except MemoryStoreError as exc:
                    log.warning("claim_embed_failed", key=claim.key, error=str(exc))
            while True:
                await self._sleep(interval)
                try:
                    ok = await self.heartbeat(claim)
                except MemoryStoreError as exc:
                    handle.failures += 1
                    log.warning("heartbeat_failed", key=claim.key, error=str(exc),
                                failures=handle.failures)
                    continue
                if not ok:
                    handle.lost = True
                    return
                handle.beats += 1

        task = asyncio.create_task(beat(), name=f"heartbeat:{claim.key}")
        try:
            yield handle
        finally:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                if not task.cancelled():
                    raise
            if release_on_exit and not handle.lost:
                await self.release(claim)

    # ------------------------------------------------------------------ results

    def _remember(self, result: Result) -> None:
        self._results_cache[result.key] = result
        self._results_cache.move_to_end(result.key)
        while len(self._results_cache) > _RESULT_CACHE:
            self._results_cache.popitem(last=False)

    @staticmethod
    def _same_run(a: Result, b: Result) -> bool:
        return (
            a.agent_id == b.agent_id
            and a.code_hash == b.code_hash
            and a.parent_hash == b.parent_hash
            and a.seed == b.seed
            and a.completed_at is not None
            and b.completed_at is not None
            and abs(a.completed_at - b.completed_at) < 1e-3
        )

    async def publish_result(self, result: Result) -> str:
        """Publish a finished experiment (any status) with its full source; returns its key.

        Idempotent: publishing the same run again (same agent, code, seed and
        ``completed_at``) returns the existing key. A keep also updates the leaderboard.
        """
        if result.status not in STATUSES:
            raise InvalidRequestError(
                f"result status {result.status!r} is not one of {', '.join(STATUSES)}"
            )
        if result.status in ("keep", "discard") and result.val_bpb is None:
            raise InvalidRequestError(f"a {result.status} result needs val_bpb")
        filled = replace(
            result,
            agent_id=result.agent_id or self.agent_id,
            host=result.host or self.host,
            completed_at=result.completed_at if result.completed_at is not None else self._now(),
        )
        bpb = f"{filled.val_bpb:.6f}" if filled.val_bpb is not None else "n/a"
        head = f"[{filled.agent_id} {filled.status.upper()}] val_bpb={bpb}"
        if filled.delta is not None:
            head += f" (delta={filled.delta:+.4f})"
        desc = f"[autoresearch] Result: {head} | {filled.description}"
        explicit = bool(result.key)
        for attempt in range(_PUBLISH_ATTEMPTS):
            key = result.key if explicit else keys.result_key(
                filled.agent_id, filled.description, filled.parent_hash, filled.code_hash,
                filled.seed, attempt,
            )
            rec = replace(filled, key=key)
            if await self._create_result(key, encode_record(rec.to_json()), desc):
                break
            existing = await self._get_json([key])
            if key in existing and self._same_run(Result.from_json(key, existing[key]), rec):
                log.info("result_already_published", key=key)
                return key
            if explicit:
                raise KeyExistsError(f"result key {key!r} already holds another result", key=key)
        else:
            raise ToolError(
                f"could not find a free result key for {filled.description!r} after "
                f"{_PUBLISH_ATTEMPTS} attempts", key=key,
            )
        self._remember(rec)
        log.info("result_published", key=key, status=rec.status, val_bpb=rec.val_bpb)
        # a candidate (or a run confirming one) reaches the leaderboard only once verified
        if rec.status == "keep" and rec.val_bpb is not None and not rec.extra.get("candidate"):
            try:
                await self._update_leaderboard(rec)
            except MemoryStoreError as exc:
                log.warning("leaderboard_update_failed", key=key, error=str(exc))
        return key

    async def results(
        self, track: str | None = None, tier: str | None = None, limit: int | None = None
    ) -> list[Result]:
        """Published results, newest first, optionally of one track and tier."""
        infos = await self.backend.list_keys(keys.RESULTS)
        infos.sort(key=lambda i: (i.created_at, i.key), reverse=True)
        out: list[Result] = []
        chunk = 100
        for start in range(0, len(infos), chunk):
            page = [i.key for i in infos[start : start + chunk]]
            missing = [k for k in page if k not in self._results_cache]
            fetched = await self._get_json(missing)
            for k, rec in fetched.items():
                self._remember(Result.from_json(k, rec))
            for k in page:
                r = self._results_cache.get(k)
                if r is None:
                    continue
                if track is not None and r.track != track:
                    continue
                if tier is not None and r.vram_tier != tier:
                    continue
                out.append(r)
                if limit is not None and len(out) >= limit:
                    return out
        return out

    async def search(self, query: str, *, namespace: str = "results", limit: int = 10) -> list[SearchHit]:
        """Semantic search over one namespace (``results``, ``claims``, ``hypotheses``, ``insights``)."""
        return await self.backend.search(query, limit=limit, prefix=f"{namespace.strip('/')}/")

    # ------------------------------------------------------------------ bests

    async def _read_best(self, scope: _Scope) -> Best | None:
        return (await self._read_bests([scope]))[scope.meta_key]

    async def _read_bests(self, scopes: Sequence[_Scope]) -> dict[str, Best | None]:
        """The bests of ``scopes`` by metadata key, in one read."""
        return (await self._read_bests_and(scopes, []))[0]

    async def _read_bests_and(
        self, scopes: Sequence[_Scope], more: Sequence[str]
    ) -> tuple[dict[str, Best | None], dict[str, Memory]]:
        """The bests of ``scopes`` and the items ``more``, in one read."""
        wanted = [k for s in scopes for k in (s.meta_key, s.code_key) if k] + list(more)
        found = await self.backend.get(wanted)
        return {s.meta_key: self._parse_best(s, found) for s in scopes}, found

    def _parse_best(self, scope: _Scope, found: dict[str, Any]) -> Best | None:
        meta = found.get(scope.meta_key)
        if meta is None:
            return None
        try:
            best = Best.from_json(scope.meta_key, decode_record(scope.meta_key, meta.value))
        except ProtocolError as exc:
            log.warning("best_unreadable", key=scope.meta_key, error=str(exc))
            return None
        code = found.get(scope.code_key) if scope.code_key else None
        if not best.train_py and code is not None:
            best = replace(best, result=replace(best.result, train_py=code.value))
        return replace(best, kind=scope.kind, track=scope.track, tier=scope.tier)

    async def get_best(self, track: str, tier: str | None = None) -> Best | None:
        """The best of ``track`` in ``tier`` (``None``: over all tiers), or ``None`` if none yet."""
        return await self._read_best(_Scope("tier" if tier else "global", track, tier))

    async def get_agent_best(self, agent_id: str | None = None, track: str = DEFAULT_TRACK) -> Best | None:
        """An agent's personal best on ``track`` (default: this agent)."""
        return await self._read_best(_Scope("agent", track, None, agent_id or self.agent_id))

    def _with_key(self, result: Result) -> Result:
        """Fill in the agent and the key ``publish_result`` will give the result (a best is
        usually proposed before its result is published, so the best can name it)."""
        agent = result.agent_id or self.agent_id
        if result.key and result.agent_id:
            return result
        key = result.key or keys.result_key(
            agent, result.description, result.parent_hash, result.code_hash, result.seed
        )
        return replace(result, agent_id=agent, key=key)

    def _scopes(self, result: Result) -> list[_Scope]:
        out = []
        if result.vram_tier:
            out.append(_Scope("tier", result.track, result.vram_tier))
        out.append(_Scope("global", result.track, None))
        return out

    @staticmethod
    def _sanity(result: Result) -> str | None:
        if result.status not in ("keep", "discard") or result.val_bpb is None:
            return f"result has no metric (status {result.status})"
        if not result.val_bpb > BEST_MIN_VAL_BPB:
            return f"sanity: val_bpb {result.val_bpb} is not above {BEST_MIN_VAL_BPB} (likely a bug)"
        return None

    async def _cas_best(
        self,
        scope: _Scope,
        result: Result,
        *,
        noise_margin: float,
        confirmations: tuple[Mapping[str, Any], ...] = (),
        must_beat: float | None = None,
        seen: Best | None = None,
    ) -> tuple[str, Best | None, Best | None]:
        """Compare-and-set one best. Returns (outcome, best now, previous) where outcome is
        ``moved``, ``worse``, ``too_big``, ``needs_confirmation`` or ``not_confirmed``.

        ``seen``: the best as read without the mutex (in the same call as the other scopes).
        A result not better than it is judged worse without taking the mutex: the same
        verdict it would have had a moment earlier (a refuted candidate reverting the best
        in between is the one race this accepts)."""
        assert result.val_bpb is not None
        if seen is not None and seen.val_bpb is not None and seen.val_bpb <= result.val_bpb:
            return "worse", seen, seen
        async with self._mutex(scope.mutex):
            current = await self._read_best(scope)
            if current is not None and current.val_bpb is not None:
                improvement = current.val_bpb - result.val_bpb
                if improvement <= 0:
                    return "worse", current, current
                if must_beat is not None and not must_beat < current.val_bpb:
                    return "not_confirmed", current, current
                if improvement > best_max_step(result.track):
                    return "too_big", current, current
                if improvement < noise_margin:
                    return "needs_confirmation", current, current
            new = await self._write_best(scope, result, current, confirmations=confirmations)
            return "moved", new, current

    async def _write_best(
        self, scope: _Scope, result: Result, current: Best | None, *,
        confirmations: tuple[Mapping[str, Any], ...] = (), previous: Best | None = None,
    ) -> Best:
        """Write ``result`` as the best of ``scope`` after ``current`` (hold the scope's mutex).
        ``previous`` (default: ``current``) is what the record names as the best before it."""
        assert result.val_bpb is not None
        before = current if previous is None else previous
        prev = replace(before, previous=None) if before is not None else None
        new = Best(
            key=scope.meta_key,
            kind=scope.kind,
            track=scope.track,
            tier=scope.tier,
            result=result,
            achieved_by=result.agent_id,
            achieved_at=self._now(),
            previous=prev,
            improvement_over_previous=(
                before.val_bpb - result.val_bpb
                if before is not None and before.val_bpb is not None
                else None
            ),
            version=(current.version + 1) if current is not None else 1,
            confirmations=confirmations,
        )
        bpb = f"{result.val_bpb:.6f}"
        if scope.code_key:
            await self._upsert(
                scope.code_key, result.train_py,
                f"[autoresearch] Best train.py for {scope.label()} (val_bpb={bpb})",
            )
        await self._upsert(
            scope.meta_key, encode_record(new.to_json()),
            f"[autoresearch] Best of {scope.label()}: val_bpb={bpb} by {result.agent_id}",
        )
        log.info("best_moved", scope=scope.label(), val_bpb=result.val_bpb,
                 previous=current.val_bpb if current else None)
        return new

    async def propose_best(self, result: Result, noise_margin: float = 0.0) -> BestDecision:
        """Offer a result as the new best of its track and tier, of its track, and of its agent.

        Sanity bounds first; then for each scope a compare-and-set under the scope's
        mutex (``MemoryStoreError`` when the store fails, or when a mutex stays held
        longer than ``mutex_wait_s``). An improvement smaller than ``noise_margin`` is parked (pending) and
        reported with ``needs_confirmation=True``; a later run of the same code with
        another seed confirms it (this method recognises such a run, or call
        ``confirm_best``).
        """
        bad = self._sanity(result)
        if bad:
            return BestDecision(False, bad)
        result = self._with_key(result)
        agent_scope = _Scope("agent", result.track, None, result.agent_id)
        try:
            agent_scopes = [agent_scope] if agent_scope.meta_key else []
        except InvalidRequestError:
            agent_scopes = []  # no personal best for this agent name (see _propose_agent_best)
        pkey = (keys.pending_key(result.track, result.vram_tier, result.parent_hash, result.code_hash)
                if result.vram_tier else None)
        # one read: every best this result could move, and a pending improvement it confirms
        seen, found = await self._read_bests_and([*self._scopes(result), *agent_scopes],
                                                 [pkey] if pkey else [])
        if pkey and pkey in found:
            try:
                pending = self._parse_pending(pkey, decode_record(pkey, found[pkey].value))
            except ProtocolError as exc:
                log.warning("record_unreadable", key=pkey, error=str(exc))
                pending = None
            if pending is not None and pending[0].seed != result.seed:
                return await self._confirm(pending, result)
        reasons: list[str] = []
        tier_moved = global_moved = needs = False
        tier_best: Best | None = None
        previous: Best | None = None
        parked: list[str] = []
        for scope in self._scopes(result):
            outcome, now_best, prev = await self._cas_best(scope, result, noise_margin=noise_margin,
                                                           seen=seen[scope.meta_key])
            if scope.kind == "tier" or (tier_best is None and not result.vram_tier):
                tier_best, previous = now_best, prev
            if outcome == "moved":
                if scope.kind == "tier":
                    tier_moved = True
                else:
                    global_moved = True
                reasons.append(f"new best of {scope.label()}")
            elif outcome == "needs_confirmation":
                needs = True
                parked.append(scope.kind)
                reasons.append(f"improvement over {scope.label()} is below the noise margin {noise_margin}")
            elif outcome == "too_big":
                reasons.append(
                    f"sanity: improvement over {scope.label()} is more than "
                    f"{best_max_step(result.track)} in one step"
                )
            else:
                cur = now_best.val_bpb if now_best else None
                reasons.append(f"not better than the best of {scope.label()} ({cur})")
        agent_moved = await self._propose_agent_best(
            result, seen.get(agent_scope.meta_key) if agent_scopes else None)
        if needs and result.vram_tier:
            await self._write_pending(result, parked, noise_margin)
        return BestDecision(
            moved=tier_moved or global_moved,
            reason="; ".join(reasons),
            needs_confirmation=needs,
            best=tier_best,
            tier_moved=tier_moved,
            global_moved=global_moved,
            agent_moved=agent_moved,
            previous=previous,
        )

    async def _propose_agent_best(self, result: Result, seen: Best | None = None) -> bool:
        try:
            keys.agent_best_key(result.agent_id, result.track)
        except InvalidRequestError:
            return False
        outcome, _, _ = await self._cas_best(
            _Scope("agent", result.track, None, result.agent_id), result, noise_margin=0.0,
            seen=seen,
        )
        return outcome == "moved"

    # pending confirmations ------------------------------------------------

    async def _read_pending(
        self, track: str, tier: str, parent_hash: str, code_hash: str
    ) -> tuple[Result, list[str], str] | None:
        key = keys.pending_key(track, tier, parent_hash, code_hash)
        return self._parse_pending(key, (await self._get_json([key])).get(key))

    @staticmethod
    def _parse_pending(key: str, rec: dict[str, Any] | None) -> tuple[Result, list[str], str] | None:
        if rec is None or rec.get("resolved_at"):
            return None
        scopes = [s for s in rec.get("pending_scopes", []) if s in ("tier", "global")]
        return Result.from_json(str(rec.get("result_key", "")), rec), scopes or ["tier", "global"], key

    async def _write_pending(self, result: Result, scopes: list[str], margin: float) -> None:
        assert result.vram_tier
        key = keys.pending_key(result.track, result.vram_tier, result.parent_hash, result.code_hash)
        data = result.to_json()
        data.update({"result_key": result.key, "pending_scopes": scopes, "noise_margin": margin,
                     "pending_since": to_iso(self._now())})
        await self._upsert(
            key, encode_record(data),
            f"[autoresearch] Pending best (needs a confirming run): {result.description}",
        )
        log.info("best_pending", key=key, val_bpb=result.val_bpb, scopes=scopes)

    async def _resolve_pending(self, key: str, outcome: str) -> None:
        """Close a pending record: marked resolved (anyone may update ``best/``), then deleted
        where this client may delete it (a hub lets participants delete only their own)."""
        await self._upsert(key, encode_record({"resolved_at": to_iso(self._now()), "outcome": outcome,
                                               "resolved_by": self.agent_id}),
                           f"[autoresearch] Pending best resolved: {outcome}")
        (res,) = await self.backend.delete([key])
        if not res.ok:
            log.debug("pending_delete_refused", key=key, error=res.error)

    async def pending_confirmations(self, track: str | None = None, tier: str | None = None) -> list[Result]:
        """Improvements waiting for a confirming run (re-run ``train_py`` with another seed)."""
        prefix = keys.pending_prefix(track, tier) if track else keys.PENDING
        infos = await self.backend.list_keys(prefix)
        data = await self._get_json([i.key for i in infos])
        out = [
            Result.from_json(str(r.get("result_key", "")), r)
            for r in data.values()
            if not r.get("resolved_at")
        ]
        if tier is not None:
            out = [r for r in out if r.vram_tier == tier]
        return out

    async def confirm_best(self, result: Result) -> BestDecision:
        """Record a confirming run (same code, another seed) of a pending improvement."""
        bad = self._sanity(result)
        if bad:
            return BestDecision(False, bad)
        if not result.vram_tier:
            return BestDecision(False, "no pending improvement: the result has no vram_tier")
        pending = await self._read_pending(result.track, result.vram_tier, result.parent_hash, result.code_hash)
        if pending is None:
            return BestDecision(False, "no pending improvement for this code")
        return await self._confirm(pending, self._with_key(result))

    async def _confirm(self, pending: tuple[Result, list[str], str], run: Result) -> BestDecision:
        original, scopes, pkey = pending
        if original.seed is not None and run.seed is not None and original.seed == run.seed:
            return BestDecision(False, f"a confirming run needs another seed (both used {run.seed})")
        assert original.val_bpb is not None and run.val_bpb is not None
        mean = (original.val_bpb + run.val_bpb) / 2.0
        combined = replace(original, val_bpb=mean, verified=True)
        confirmations = tuple(
            {"result_key": r.key, "agent_id": r.agent_id, "seed": r.seed, "val_bpb": r.val_bpb}
            for r in (original, run)
        )
        reasons: list[str] = []
        tier_moved = global_moved = False
        tier_best: Best | None = None
        previous: Best | None = None
        for scope in self._scopes(combined):
            if scope.kind not in scopes:
                continue
            outcome, now_best, prev = await self._cas_best(
                scope, combined, noise_margin=0.0, confirmations=confirmations, must_beat=run.val_bpb
            )
            if scope.kind == "tier":
                tier_best, previous = now_best, prev
            if outcome == "moved":
                tier_moved |= scope.kind == "tier"
                global_moved |= scope.kind == "global"
                reasons.append(f"confirmed: new best of {scope.label()} (mean {mean:.6f} of 2 seeds)")
            else:
                cur = now_best.val_bpb if now_best else None
                reasons.append(f"not confirmed for {scope.label()} (best {cur}, runs "
                               f"{original.val_bpb:.6f} and {run.val_bpb:.6f})")
        if tier_best is None and combined.vram_tier:
            tier_best = await self.get_best(combined.track, combined.vram_tier)
        await self._resolve_pending(pkey, "confirmed" if tier_moved or global_moved else "not confirmed")
        return BestDecision(
            moved=tier_moved or global_moved,
            reason="; ".join(reasons) or "nothing left to confirm",
            needs_confirmation=False,
            best=tier_best,
            tier_moved=tier_moved,
            global_moved=global_moved,
            previous=previous,
        )

    # ------------------------------------------------------------------ leaderboard

    async def _update_leaderboard(self, result: Result) -> None:
        key = keys.leaderboard_key(result.track)
        seen = self._parse_board(key, (await self._get_json([key])).get(key, {}))
        if any(e.agent_id == result.agent_id and e.vram_tier == result.vram_tier
               and e.val_bpb <= (result.val_bpb or 0.0) for e in seen):
            return  # an agent's entry only improves: this result cannot change the board
        async with self._mutex(f"board--{result.track}"):
            data = (await self._get_json([key])).get(key, {})
            entries = self._parse_board(key, data)
            new = LeaderboardEntry.from_result(result)
            slot = [e for e in entries if e.agent_id == new.agent_id and e.vram_tier == new.vram_tier]
            if slot and slot[0].val_bpb <= new.val_bpb:
                return
            entries = [e for e in entries if e not in slot] + [new]
            entries.sort(key=lambda e: e.val_bpb)
            body = dict(data)
            body.update({
                "entries": [e.to_json() for e in entries[:_LEADERBOARD_SIZE]],
                "track": result.track,
                "updated_at": to_iso(self._now()),
            })
            await self._upsert(key, encode_record(body), f"[autoresearch] Leaderboard ({result.track})")

    @staticmethod
    def _parse_board(key: str, data: dict[str, Any]) -> list[LeaderboardEntry]:
        raw = data.get("entries")
        out: list[LeaderboardEntry] = []
        if isinstance(raw, list):
            for item in raw:
                if isinstance(item, dict):
                    e = LeaderboardEntry.from_json(key, item)
                    if e is not None:
                        out.append(e)
        return out

    async def leaderboard(self, track: str = DEFAULT_TRACK) -> list[LeaderboardEntry]:
        """The leaderboard of ``track``: each agent's best keep per tier, best first."""
        key = keys.leaderboard_key(track)
        data = (await self._get_json([key])).get(key, {})
        return sorted(self._parse_board(key, data), key=lambda e: e.val_bpb)

    # ------------------------------------------------------------------ hypotheses, insights

    async def _publish_unique(
        self,
        make_key: Callable[[int], str],
        record: Callable[[str], dict[str, Any]],
        description: str,
        same: Callable[[dict[str, Any]], bool],
    ) -> str:
        for attempt in range(_PUBLISH_ATTEMPTS):
            key = make_key(attempt)
            data = record(key)
            if await self._create_one(key, encode_record(data), description, embed=self.embed_records):
                return key
            existing = (await self._get_json([key])).get(key)
            if existing is not None and same(existing):
                return key
        raise ToolError(f"no free key for {description!r} after {_PUBLISH_ATTEMPTS} attempts")

    async def publish_hypothesis(self, hypothesis: Hypothesis) -> str:
        """Publish an idea for anyone to pick up; returns its key (same idea again: same key)."""
        h = replace(
            hypothesis,
            agent_id=hypothesis.agent_id or self.agent_id,
            created_at=hypothesis.created_at if hypothesis.created_at is not None else self._now(),
        )
        if not h.title.strip():
            raise InvalidRequestError("a hypothesis needs a title")
        return await self._publish_unique(
            lambda a: h.key if h.key and a == 0 else keys.hypothesis_key(h.agent_id, h.title, a),
            lambda k: replace(h, key=k).to_json(),
            f"[autoresearch] Hypothesis: {h.title}",
            lambda d: d.get("title") == h.title and d.get("hypothesis") == h.hypothesis
            and d.get("agent_id") == h.agent_id,
        )

    async def unclaimed_hypotheses(
        self, track: str | None = None, limit: int | None = None
    ) -> list[Hypothesis]:
        """Hypotheses nobody has taken yet, highest priority first, then newest."""
        hyp_infos, taken_infos = await asyncio.gather(
            self.backend.list_keys(keys.HYPOTHESES), self.backend.list_keys(keys.HYPOTHESIS_TAKES)
        )
        taken = {i.key for i in taken_infos}
        free = [i.key for i in hyp_infos if keys.hypothesis_take_key(i.key) not in taken]
        data = await self._get_json(free)
        out = [Hypothesis.from_json(k, v) for k, v in data.items()]
        if track is not None:
            out = [h for h in out if h.track == track]
        out.sort(key=lambda h: (-h.priority, -(h.created_at or 0.0), h.key))
        return out[:limit] if limit is not None else out

    async def take_hypothesis(self, hypothesis: Hypothesis | str) -> bool:
        """Mark a hypothesis taken (atomic create); True for exactly one taker."""
        hkey = hypothesis if isinstance(hypothesis, str) else hypothesis.key
        if not hkey:
            raise InvalidRequestError("take_hypothesis needs a published hypothesis (with its key)")
        take = keys.hypothesis_take_key(hkey)
        body = {"agent_id": self.agent_id, "host": self.host, "hypothesis_key": hkey,
                "taken_at": to_iso(self._now())}
        won = await self._create_one(take, encode_record(body), "[autoresearch] hypothesis taken", embed=False)
        log.info("hypothesis_take", key=hkey, won=won)
        return won

    async def publish_insight(self, insight: Insight) -> str:
        """Publish what was learned; returns its key."""
        i = replace(
            insight,
            agent_id=insight.agent_id or self.agent_id,
            posted_at=insight.posted_at if insight.posted_at is not None else self._now(),
        )
        if not i.insight.strip():
            raise InvalidRequestError("an insight needs text")
        return await self._publish_unique(
            lambda a: i.key if i.key and a == 0 else keys.insight_key(i.agent_id, i.insight, a),
            lambda k: replace(i, key=k).to_json(),
            f"[autoresearch] Insight by {i.agent_id}: {i.insight}",
            lambda d: d.get("insight") == i.insight and d.get("agent_id") == i.agent_id,
        )

    async def insights(self, track: str | None = None, limit: int | None = None) -> list[Insight]:
        """Insights, newest first."""
        infos = await self.backend.list_keys(keys.INSIGHTS)
        data = await self._get_json([i.key for i in infos])
        out = [Insight.from_json(k, v) for k, v in data.items()]
        if track is not None:
            out = [i for i in out if i.track == track]
        out.sort(key=lambda i: (-(i.posted_at or 0.0), i.key))
        return out[:limit] if limit is not None else out

    # ------------------------------------------------------------------ analyze

    async def analyze(
        self, track: str | None = None, *, recent: int = 200, active_window_s: float = 3600.0
    ) -> SwarmSummary:
        """The swarm at a glance: active agents, bests per track and tier, live claims,
        recent keeps and failures, unclaimed hypotheses, trend."""
        recent_results, claims, hyps = await asyncio.gather(
            self.results(track=track, limit=recent),
            self.live_claims(track),
            self.unclaimed_hypotheses(track, limit=20),
        )
        now = self._now()
        tracks = [track] if track else sorted({DEFAULT_TRACK, *(r.track for r in recent_results)})
        scopes = [_Scope("global", t, None) for t in tracks] + [
            _Scope("tier", t, tier) for t in tracks for tier in TIERS
        ]
        found = await self._get_json([s.meta_key for s in scopes])
        bests: dict[tuple[str, str | None], Best] = {}
        for s in scopes:
            if s.meta_key in found:
                b = Best.from_json(s.meta_key, found[s.meta_key])
                bests[(s.track, s.tier)] = replace(b, kind=s.kind, track=s.track, tier=s.tier)
        active = {c.agent_id for c in claims}
        active.update(
            r.agent_id for r in recent_results
            if r.completed_at is not None and now - r.completed_at <= active_window_s
        )
        keeps = [r for r in recent_results if r.status == "keep" and r.val_bpb is not None]
        failures = [r for r in recent_results if r.status in ("crash", "timeout")]
        discards = sum(1 for r in recent_results if r.status == "discard")
        return SwarmSummary(
            track=track,
            generated_at=now,
            active_agents=tuple(sorted(active)),
            bests=bests,
            live_claims=tuple(claims),
            recent_keeps=tuple(keeps[:10]),
            recent_failures=tuple(failures[:10]),
            recent_discards=discards,
            total_results=len(recent_results),
            unclaimed_hypotheses=tuple(hyps),
            trend=_trend(keeps[:20]),
        )


def _trend(keeps_newest_first: Iterable[Result]) -> str:
    """``improving`` when the newer half of recent keeps reached a lower val_bpb than the older."""
    vals = [r.val_bpb for r in keeps_newest_first if r.val_bpb is not None]
    if len(vals) < 4:
        return "unknown"
    half = len(vals) // 2
    newer, older = min(vals[:half]), min(vals[half:])
    if newer < older - 1e-9:
        return "improving"
    if abs(newer - older) <= 1e-9:
        return "plateaued"
    return "regressing"

