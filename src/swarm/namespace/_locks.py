"""Generation locks: the claim locks of experiments and the short leased mutexes.

A lock is a prefix whose keys are generations ``.../g<N>``; winning it is an atomic
create-if-absent of the lowest free generation above a dead or released holder (see
:mod:`swarm.namespace`). :class:`Locks` wins such locks (:meth:`Locks.acquire`) and holds
short mutexes on them (:meth:`Locks.mutex`).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from functools import partial
from typing import TYPE_CHECKING, Any

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_delay,
    wait_random_exponential,
)

from swarm import keys
from swarm._logging import get_logger
from swarm.beacon import beacon_keeps
from swarm.errors import MemoryStoreError
from swarm.memory import NewMemory
from swarm.namespace._store import create_one, created, get_json
from swarm.records import Claim, encode_record, to_iso

if TYPE_CHECKING:
    from swarm.namespace._facade import SwarmMemory

__all__ = ["Acquired", "Locks"]

log = get_logger(__name__)

_GC_EVERY = 4
"""A mutex release deletes the generations below it every this many generations (and
after a takeover): the listing stays a handful of keys at a quarter of the deletes."""


_NEAR = 3
"""Generations read around a guess of a lock's top (the guess and the two above)."""
_ABOVE = object()
"""The top is above the generations read (the last of them exists)."""


def _near(key_for: Callable[[int], str], start: int) -> list[str]:
    """The keys of generation ``start`` and the ones above it that are read together."""
    return [key_for(start + d) for d in range(_NEAR)]


def _top_near(near: list[str], found: Mapping[str, Any]) -> str | object | None:
    """The top generation among ``near`` as read (generations are created one above the
    other and never deleted, for claim locks), :data:`_ABOVE` when the last one read
    exists (the top may be higher), None when none exists."""
    present = [k for k in near if k in found]
    if near[-1] in found:
        return _ABOVE
    return present[-1] if present else None


class _Busy(Exception):
    """A mutex is held by a live holder (internal: drives the wait loop)."""


@dataclass(frozen=True, slots=True)
class Acquired:
    """Outcome of :meth:`Locks.acquire`: we won ``key`` (``won``) or ``holder`` holds it."""

    won: bool
    key: str
    generation: int
    holder: Claim | None = None
    took_over: bool = False
    #: the companion record was created in the same call as the lock
    companion: bool = False
    #: a companion was created next to a generation that was lost (the caller decides
    #: whether to delete it: the same key may be a racer's of the same agent)
    stray: bool = False


@dataclass(frozen=True, slots=True)
class _LockSpec:
    prefix: str
    key_for: Callable[[int], str]
    payload: Callable[[int, str], dict[str, Any]]
    legacy_ttl_s: float
    verify_top: bool
    reclaim: Callable[[Claim], bool] | None
    companion: Callable[[int, str], NewMemory] | None = None


class Locks:
    """Lock and mutex operations of one :class:`~swarm.namespace.SwarmMemory`."""

    def __init__(self, memory: SwarmMemory) -> None:
        self.memory = memory
        self._warned_non_atomic = False
        #: per mutex prefix, the generation this client released last: found on top of a
        #: listing, it is known free without reading it
        self._released: dict[str, str] = {}

    async def _atomic(self) -> bool:
        mem = self.memory
        probe = getattr(mem.backend, "check_create_atomic", None)
        atomic = bool(await probe()) if probe is not None else mem.claims_are_atomic
        if not atomic and not self._warned_non_atomic:
            self._warned_non_atomic = True
            log.warning(
                "claims_non_atomic_fallback",
                backend=getattr(mem.backend, "name", "?"),
                detail="backend create is not create-if-absent; claims use claim-then-verify",
            )
        return atomic

    async def _generations(self, prefix: str) -> list[int]:
        infos = await self.memory.backend.list_keys(prefix)
        return [g for g in (keys.lock_generation(i.key) for i in infos) if g is not None]

    async def _look(
        self, spec: _LockSpec, after_lost: int | None = None
    ) -> Acquired | tuple[int, bool] | None:
        """List the generations: the live holder, or (target generation, took_over), or
        None when the top vanished since the listing (look again). ``after_lost``: the
        generation just lost to a racer; it and the two above are read in one call instead
        of listing (the top is almost always the racer's), unless the third exists."""
        if after_lost is not None:
            near = _near(spec.key_for, after_lost)
            found = await get_json(self.memory.backend, near)
            at = _top_near(near, found)
            if isinstance(at, str):
                return await self._judge_top(spec, at, found[at])
        gens = await self._generations(spec.prefix)
        if not gens:
            return 1, False
        top = max(gens)
        top_key = spec.key_for(top)
        if self._released.get(spec.prefix) == top_key:
            return top + 1, False
        current = await get_json(self.memory.backend, [top_key])
        if top_key not in current:
            return None
        return await self._judge_top(spec, top_key, current[top_key])

    async def _judge_top(
        self, spec: _LockSpec, top_key: str, record: dict[str, Any]
    ) -> Acquired | tuple[int, bool]:
        """The top generation's holder if it is live or done, else the generation to take."""
        top = keys.lock_generation(top_key) or 1
        holder = Claim.from_json(top_key, record)
        if holder.done:
            return Acquired(False, top_key, top, holder=holder)  # ran and published: for good
        own_stale = spec.reclaim is not None and spec.reclaim(holder)
        if not own_stale and await self.holder_live(top_key, holder, spec.legacy_ttl_s):
            return Acquired(False, top_key, top, holder=holder)
        return top + 1, holder.released_at is None  # dead, not released: a takeover

    async def _create_with(
        self, spec: _LockSpec, target: int, key: str, value: str
    ) -> tuple[bool, bool]:
        """Create the lock and its companion in one call: (lock won, companion created)."""
        assert spec.companion is not None
        backend = self.memory.backend
        extra = spec.companion(target, key)
        lock_res, extra_res = await backend.create(
            [NewMemory(key=key, value=value, description="[autoresearch] lock"), extra]
        )
        return created(key, lock_res), extra_res.ok

    async def _create(self, spec: _LockSpec, target: int, atomic: bool) -> tuple[bool, bool]:
        """Create generation ``target``: (won, companion written); won is False when
        someone else won it."""
        mem = self.memory
        key = spec.key_for(target)
        record = spec.payload(target, key)
        if spec.companion is not None and atomic and not spec.verify_top:
            return await self._create_with(spec, target, key, encode_record(record))
        won = await create_one(
            mem.backend, key, encode_record(record), "[autoresearch] lock", embed=False
        )
        if won and not atomic:
            await mem.sleep(mem.verify_delay_s)
            back = await get_json(mem.backend, [key])
            won = back.get(key, {}).get("nonce") == record["nonce"]
        if won and spec.verify_top:
            # Lower generations of this prefix get deleted, so a create can succeed on a
            # garbage-collected generation after a stale listing. A later generation then
            # already exists: step back (mark ours released) and look again.
            top = max(await self._generations(spec.prefix), default=target)
            if top > target:
                record["status"] = "released"
                record["released_at"] = to_iso(mem.now())
                await mem.backend.update(key, encode_record(record))
                won = False
        return won, False

    async def _last_holder(self, spec: _LockSpec) -> Acquired:
        """Endless contention is not expected; report whoever holds the top now."""
        gens = await self._generations(spec.prefix)
        top = max(gens) if gens else 1
        last: Claim | None = None
        if gens:
            cur = await get_json(self.memory.backend, [spec.key_for(top)])
            if spec.key_for(top) in cur:
                last = Claim.from_json(spec.key_for(top), cur[spec.key_for(top)])
        return Acquired(False, spec.key_for(top), top, last)

    async def acquire(
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
        companion: Callable[[int, str], NewMemory] | None = None,
    ) -> Acquired:
        """Win the lowest free generation of the lock under ``prefix``.

        ``payload(generation, key)`` builds the lock record; it must carry a ``nonce``.
        With ``fast_first`` generation 1 is tried blind first (one round trip for a
        never-claimed lock); this is only sound because generation keys are never
        deleted. ``companion(generation, key)``: a record to create in the same call as the
        lock (on an atomic store; see :attr:`Acquired.companion`). Returns the winner (us)
        or the live holder.
        """
        spec = _LockSpec(prefix, key_for, payload, legacy_ttl_s, verify_top, reclaim, companion)
        atomic = await self._atomic()
        target: int | None = 1 if fast_first and atomic else None
        took_over = stray = False
        lost: int | None = None
        for _ in range(max_rounds):
            if target is None:
                look = await self._look(spec, lost)
                lost = None
                if look is None:
                    continue  # vanished since the listing: list again
                if isinstance(look, Acquired):
                    return replace(look, stray=stray)
                target, took_over = look
            won, with_companion = await self._create(spec, target, atomic)
            if won:
                return Acquired(
                    True, key_for(target), target, took_over=took_over, companion=with_companion
                )
            stray |= with_companion
            lost = target if not spec.verify_top else None
            target = None  # someone else won this generation: look again
        return replace(await self._last_holder(spec), stray=stray)

    async def live_holders(
        self, guesses: Mapping[str, int], legacy_ttl_s: float
    ) -> dict[str, Claim | None]:
        """For many locks at once, each one's live holder or None, in two or three calls
        whatever their number. ``guesses[prefix]`` is the lowest generation the top is
        expected at: it and the two above are read in one batched get, the holders' beacons
        in another; a lock whose top is not among them is looked at alone."""
        near = {p: _near(partial(keys.generation_key, p), g) for p, g in guesses.items()}
        found = await get_json(self.memory.backend, [k for ks in near.values() for k in ks])
        out: dict[str, Claim | None] = {}
        held: list[tuple[str, str, Claim]] = []
        unsure: list[str] = []
        for prefix, g in guesses.items():
            at = _top_near(near[prefix], found)
            if at is _ABOVE or (at is None and g > 1):
                unsure.append(prefix)  # the top may be higher (or lower) than guessed
                continue
            out[prefix] = None
            if isinstance(at, str):
                holder = Claim.from_json(at, found[at])
                if holder.released_at is None and not holder.done:
                    held.append((prefix, at, holder))
        now = self.memory.now()
        fresh = {p for p, _, h in held if h.is_live(now, legacy_ttl_s)}
        kept = await beacon_keeps(
            self.memory.backend, [(k, h) for p, k, h in held if p not in fresh], now
        )
        for prefix, key, holder in held:
            if prefix in fresh or key in kept:
                out[prefix] = holder
        for prefix in unsure:
            out[prefix] = await self.live_holder(prefix, legacy_ttl_s)
        return out

    async def live_holder(self, prefix: str, legacy_ttl_s: float) -> Claim | None:
        """Who holds the lock under ``prefix`` now (a live, unreleased top generation), or
        None: a look without trying to win it (a listing of its few generations and one
        read)."""
        gens = await self._generations(prefix)
        if not gens:
            return None
        top_key = keys.generation_key(prefix, max(gens))
        current = await get_json(self.memory.backend, [top_key])
        if top_key not in current:
            return None
        holder = Claim.from_json(top_key, current[top_key])
        if holder.released_at is not None or holder.done:
            return None
        return holder if await self.holder_live(top_key, holder, legacy_ttl_s) else None

    async def holder_live(self, key: str, holder: Claim, legacy_ttl_s: float) -> bool:
        """Live by its own heartbeat, or kept live by its supervisor's beacon."""
        now = self.memory.now()
        if holder.is_live(now, legacy_ttl_s):
            return True
        return key in await beacon_keeps(self.memory.backend, [(key, holder)], now)

    def _mutex_payload(self, name: str, nonce: str) -> Callable[[int, str], dict[str, Any]]:
        mem = self.memory

        def payload(gen: int, key: str) -> dict[str, Any]:
            now = mem.now()
            return {
                "agent_id": mem.agent_id,
                "host": mem.host,
                "description": f"mutex {name}",
                "claimed_at": to_iso(now),
                "heartbeat_at": to_iso(now),
                "lease_s": mem.mutex_lease_s,
                "nonce": nonce,
                "generation": gen,
                "status": "claimed",
            }

        return payload

    async def _win_mutex(
        self, name: str, payload: Callable[[int, str], dict[str, Any]]
    ) -> Acquired:
        mem = self.memory
        prefix = keys.mutex_lock_prefix(name)
        holder = "?"

        def before_sleep(state: RetryCallState) -> None:
            log.debug("mutex_busy", mutex=name, attempt=state.attempt_number)

        try:
            async for attempt in AsyncRetrying(
                retry=retry_if_exception_type(_Busy),
                wait=wait_random_exponential(multiplier=0.01, max=0.5),
                stop=stop_after_delay(mem.mutex_wait_s),
                sleep=mem.sleep,
                before_sleep=before_sleep,
                reraise=True,
            ):
                with attempt:
                    got = await self.acquire(
                        prefix,
                        lambda g: keys.mutex_lock_key(name, g),
                        payload,
                        fast_first=False,
                        legacy_ttl_s=mem.mutex_lease_s,
                        verify_top=True,
                    )
                    if not got.won:
                        holder = got.holder.agent_id if got.holder else "?"
                        raise _Busy(name)
                    return got
        except _Busy as exc:
            raise MemoryStoreError(
                f"the shared lock {prefix!r} is still held by {holder} after "
                f"{mem.mutex_wait_s:.0f} s; it frees itself {mem.mutex_lease_s:.0f} s after its "
                "holder stops -- try again later"
            ) from exc
        raise AssertionError("unreachable: the retry loop returns or raises")  # pragma: no cover

    @asynccontextmanager
    async def mutex(self, name: str) -> AsyncIterator[str]:
        """A short leased mutex (``name`` from :mod:`swarm.keys`). Yields the lock key."""
        payload = self._mutex_payload(name, uuid.uuid4().hex)
        acquired = await self._win_mutex(name, payload)
        if acquired.took_over:
            log.info("mutex_taken_over", mutex=name, generation=acquired.generation)
        try:
            yield acquired.key
        finally:
            await self._release_mutex(name, acquired, payload)

    async def _release_mutex(
        self, name: str, acquired: Acquired, payload: Callable[[int, str], dict[str, Any]]
    ) -> None:
        done = payload(acquired.generation, acquired.key)
        done["status"] = "released"
        done["released_at"] = to_iso(self.memory.now())
        gen = acquired.generation
        stale: list[str] = []
        if acquired.took_over or gen % _GC_EVERY == 0:
            stale = [keys.mutex_lock_key(name, g) for g in range(max(1, gen - _GC_EVERY), gen)]
        try:
            await self.memory.backend.update(acquired.key, encode_record(done))
            self._released[keys.mutex_lock_prefix(name)] = acquired.key
            if stale:
                await self.memory.backend.delete(
                    stale
                )  # only generations below ours: the top stays
        except MemoryStoreError as exc:
            log.warning("mutex_release_failed", mutex=name, error=str(exc))
