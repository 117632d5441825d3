"""One heartbeat per supervisor for every claim it holds.

A claim used to be kept alive by its own heartbeat: every ``heartbeat_s`` a read of the
lock (was it taken over?) and two writes (lock and claim record), for the running
experiment and for the one claimed ahead -- six calls per beat per GPU, most of a
supervisor's traffic. A :class:`Beacon` replaces them with one record per agent and host,
``locks/beacon/<agent>--<host>``, rewritten once per beat whatever the number of claims::

    {"agent_id", "host", "session", "heartbeat_at", "lease_s", "holding": [lock keys]}

A lock record written under a beacon names it (``"beacon": key``). Whoever finds the lock
past its own lease asks the beacon (:func:`beacon_keeps`): the lock is still live while
the beacon is younger than its lease, belongs to the same session and lists the lock.
The record announces its own lease: the memory's, longer while the store is slow (a beat
plus three times the slowest of the last ten writes, at most 600 s), so that claims do not
look dead to others only because the beats land late. Every ``check_every`` beats one
batched read of all held locks and their next generations finds a claim that was taken
over anyway (after a stall longer than the lease) and marks its
:class:`~swarm.namespace.Heartbeat` lost, as the per-claim heartbeat did.

Claim records (``claims/...``) are no longer rewritten per beat; :meth:`SwarmMemory.live_claims`
asks the beacons of claims past their own lease. Clients of the original fork judge claims
by ``claimed_at`` and are unaffected. Swarm clients older than the beacon see a beaconed
lock as free after ``lease_s``: run one version across a swarm.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from swarm import keys
from swarm._logging import get_logger
from swarm.errors import KeyNotFoundError, MemoryStoreError, ProtocolError
from swarm.memory import MemoryBackend, NewMemory
from swarm.records import Claim, decode_record, encode_record, from_iso, to_iso

if TYPE_CHECKING:
    from swarm.namespace import SwarmMemory

__all__ = ["Beacon", "Heartbeat", "beacon_beats", "beacon_keeps"]

log = get_logger(__name__)


_SLOW_WINDOW = 10
"""Beat writes whose duration sets the announced lease (:attr:`Beacon.lease_s`)."""

_MAX_LEASE_S = 600.0
"""The longest lease a beacon announces (and that :func:`beacon_keeps` believes)."""


def _next_generation(lock_key: str) -> str | None:
    gen = keys.lock_generation(lock_key)
    if gen is None:
        return None
    return f"{lock_key[: lock_key.rfind('/g') + 1]}g{gen + 1:06d}"


class Heartbeat:
    """Handle of a running heartbeat (yielded by ``SwarmMemory.heartbeating``)."""

    __slots__ = ("beats", "claim", "embedded", "failures", "lost")

    def __init__(self, claim: Claim) -> None:
        self.claim = claim
        self.beats = 0
        self.failures = 0
        self.lost = False
        self.embedded = False


class Beacon:
    """The heartbeat of one supervisor session (see the module docstring).

    Attach it with ``memory.beacon = Beacon(memory)`` before claiming and run :meth:`run`
    in the supervisor's task group; ``SwarmMemory.heartbeating`` then registers claims
    here instead of beating each one.
    """

    def __init__(self, memory: SwarmMemory, *, check_every: int = 10) -> None:
        if check_every < 1:
            raise ValueError(f"check_every must be >= 1, got {check_every}")
        self.memory = memory
        self.key = keys.beacon_key(memory.agent_id, memory.host)
        self.check_every = check_every
        self.beats = 0
        self.failures = 0
        #: the longest time between two written beats (seconds; past ``lease_s`` the
        #: claims it keeps looked dead to others in between)
        self.max_gap_s = 0.0
        self._last_beat: float | None = None
        #: how long the last few beat writes took (seconds): a slow store lengthens the
        #: lease the beacon announces (:attr:`lease_s`)
        self._took: deque[float] = deque(maxlen=_SLOW_WINDOW)
        self._held: dict[str, tuple[Claim, Heartbeat]] = {}
        #: lock key -> (when a held claim stopped being worked on, how long it may stay so):
        #: claimed ahead and not yet running (``max_unattached_s``), or ran and not yet
        #: released (``max_publishing_s``); dropped after that
        self._unattached: dict[str, tuple[float, float]] = {}

    @property
    def holding(self) -> list[str]:
        """Lock keys this beacon keeps live, sorted."""
        return sorted(self._held)

    @property
    def lease_s(self) -> float:
        """The lease this beacon announces: the memory's, or longer while the store is slow.
        A beat is stamped when it is sent and seen when the store has written it; the next
        one is sent at most a beat (or the last write's time) later and takes its own time
        to land, so the lease must outlast a beat and two slow writes, with a margin."""
        m = self.memory
        slowest = max(self._took, default=0.0)
        return min(_MAX_LEASE_S, max(m.lease_s, m.heartbeat_s + 3 * slowest))

    def record(self) -> dict[str, Any]:
        m = self.memory
        return {
            "agent_id": m.agent_id,
            "host": m.host,
            "session": m.session,
            "heartbeat_at": to_iso(m.clock()),
            "lease_s": self.lease_s,
            "holding": self.holding,
            "kind": "beacon",
        }

    async def beat(self) -> None:
        """Rewrite the beacon record (one call); every ``check_every`` beats also look for
        claims taken over (one more call)."""
        backend = self.memory.backend
        sent = self.memory.clock()
        text = encode_record(self.record())
        try:
            await backend.update(self.key, text)
        except KeyNotFoundError:
            (res,) = await backend.create(
                [NewMemory(key=self.key, value=text, description="[autoresearch] beacon")]
            )
            if not res.ok and not res.exists:
                raise MemoryStoreError(
                    f"cannot write the beacon {self.key!r}: {res.error}"
                ) from None
        finally:  # a write that failed after a long wait counts as slow too
            self._took.append(self.memory.clock() - sent)
        self.beats += 1
        now = self.memory.clock()
        if self._last_beat is not None:
            self.max_gap_s = max(self.max_gap_s, now - self._last_beat)
        self._last_beat = now
        for _, handle in self._held.values():
            handle.beats += 1
        self._drop_forgotten()
        if self._held and self.beats % self.check_every == 0:
            await self.check_lost()

    async def check_lost(self) -> list[str]:
        """Mark held claims that are no longer ours lost (one batched read); returns their keys."""
        held = dict(self._held)
        wanted: list[str] = []
        for lock_key in held:
            wanted.append(lock_key)
            nxt = _next_generation(lock_key)
            if nxt:
                wanted.append(nxt)
        found = await self.memory.backend.get(wanted)
        lost: list[str] = []
        for lock_key, (claim, handle) in held.items():
            nxt = _next_generation(lock_key)
            mine = found.get(lock_key)
            ours = False
            if mine is not None and (nxt is None or nxt not in found):
                try:
                    data = decode_record(lock_key, mine.value)
                    ours = data.get("nonce") == claim.nonce and not data.get("released_at")
                except ProtocolError:
                    ours = False
            if not ours:
                handle.lost = True
                self.drop(lock_key)
                lost.append(lock_key)
                log.warning("heartbeat_lost_claim", key=claim.key, lock=lock_key)
        return lost

    async def run(self) -> None:
        """Beat every ``heartbeat_s`` until cancelled, counted from the start of one beat to
        the start of the next: a store that answers slowly delays the beat it answers, not
        every later one (a beat plus a full pause could outlast the lease); store errors are
        logged and retried."""
        mem = self.memory
        while True:
            started = mem.clock()
            try:
                await self.beat()
            except MemoryStoreError as exc:
                self.failures += 1
                log.warning("beacon_failed", key=self.key, error=str(exc), failures=self.failures)
            took = mem.clock() - started
            if took > mem.heartbeat_s:
                log.warning("beacon_beat_slow", key=self.key, seconds=round(took, 1))
            await mem.sleep(max(0.0, mem.heartbeat_s - took))

    @property
    def max_unattached_s(self) -> float:
        """How long a claim won but not yet running may be held: two leases (a claim taken
        ahead waits for the current run)."""
        return 2 * self.memory.lease_s

    @property
    def max_publishing_s(self) -> float:
        """How long a claim whose run ended may be held until its release: twelve leases (an
        hour at the default lease). Its result is being judged and published -- behind a
        busy best mutex, or queued in the outbox while the memory is unreachable -- and
        letting the claim go before it ends as *done* would let another agent run the same
        experiment again."""
        return 12 * self.memory.lease_s

    def hold(self, claim: Claim) -> None:
        """Keep ``claim`` live from the moment it is won until :meth:`drop` (its release):
        also while it waits for a GPU and while its result is published."""
        if claim.lock_key not in self._held:
            self._held[claim.lock_key] = (claim, Heartbeat(claim))
            self._unattached[claim.lock_key] = (self.memory.clock(), self.max_unattached_s)

    def drop(self, lock_key: str) -> None:
        """Stop keeping the claim of ``lock_key`` (released, or lost)."""
        self._held.pop(lock_key, None)
        self._unattached.pop(lock_key, None)

    def _drop_forgotten(self) -> None:
        """A claim held past its limit (:attr:`max_unattached_s` before its run,
        :attr:`max_publishing_s` after it) was never released (a
        bug or a lost task): let its lease end rather than keep the experiment forever."""
        now = self.memory.clock()
        for lock_key, (since, limit_s) in list(self._unattached.items()):
            if now - since > limit_s:
                log.warning(
                    "beacon_dropped_unattached_claim", lock=lock_key, idle_s=round(now - since, 1)
                )
                self.drop(lock_key)

    @asynccontextmanager
    async def keeping(self, claim: Claim, handle: Heartbeat) -> AsyncIterator[Heartbeat]:
        """Keep ``claim`` live while the block runs (its record was embedded when it was
        written, see ``SwarmMemory.try_claim``). After the block the claim stays held
        until it is released (a lost claim is dropped at once)."""
        self._held[claim.lock_key] = (claim, handle)
        self._unattached.pop(claim.lock_key, None)
        handle.embedded = self.memory.embed_records
        try:
            yield handle
        finally:
            if handle.lost or claim.lock_key not in self._held:
                self.drop(claim.lock_key)
            else:  # the run ended: held while its result is published, until released
                self._unattached[claim.lock_key] = (self.memory.clock(), self.max_publishing_s)


async def beacon_keeps(
    backend: MemoryBackend,
    holders: Sequence[tuple[str, Claim]],
    now: float,
    *,
    max_lease_s: float = _MAX_LEASE_S,
) -> set[str]:
    """Which of ``holders`` (lock or claim key, record) a live beacon keeps: one read.

    A beacon's own ``lease_s`` counts up to ``max_lease_s``: a record that claims a
    longer lease cannot keep dead locks for ever."""
    return set(await beacon_beats(backend, holders, now, max_lease_s=max_lease_s))


async def beacon_beats(
    backend: MemoryBackend,
    holders: Sequence[tuple[str, Claim]],
    now: float,
    *,
    max_lease_s: float = _MAX_LEASE_S,
) -> dict[str, float]:
    """Like :func:`beacon_keeps`, with the last beat (epoch seconds) of the beacon that
    keeps each kept holder: the heartbeat a claim under a beacon really has."""
    wanted = {str(c.extra.get("beacon")) for _, c in holders if c.extra.get("beacon")}
    if not wanted:
        return {}
    found = await backend.get(sorted(wanted))
    beacons: dict[str, dict[str, Any]] = {}
    for key, mem in found.items():
        try:
            beacons[key] = decode_record(key, mem.value)
        except ProtocolError:
            continue
    kept: dict[str, float] = {}
    for key, c in holders:
        b = beacons.get(str(c.extra.get("beacon")))
        if b is None or c.released_at is not None:
            continue
        beat = from_iso(b.get("heartbeat_at"))
        lease = b.get("lease_s")
        lease_s = float(lease) if isinstance(lease, (int, float)) and lease > 0 else 90.0
        lease_s = min(lease_s, max_lease_s)
        raw = b.get("holding")
        holding: list[Any] = raw if isinstance(raw, list) else []
        if (
            beat is not None
            and now < beat + lease_s
            and b.get("session") == c.extra.get("session")
            and c.lock_key in holding
        ):
            kept[key] = min(beat, now)  # a beat from the future is no fresher than now
    return kept
