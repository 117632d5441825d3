"""Claims of experiments: win, keep alive, release, list (see :mod:`swarm.namespace`)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Literal

from swarm import keys
from swarm._logging import get_logger
from swarm.beacon import Heartbeat, beacon_beats
from swarm.errors import InvalidRequestError, KeyNotFoundError, MemoryStoreError
from swarm.memory import NewMemory
from swarm.namespace._store import create_one, get_json
from swarm.records import DONE, Claim, ClaimOutcome, encode_record

if TYPE_CHECKING:
    from swarm.namespace._facade import SwarmMemory

__all__ = ["Claims", "Heartbeat"]

log = get_logger(__name__)

_DONE_LOOKBACK = 8
"""Generations under a newly won one that are read for a finished run (one batched get)."""

ClaimKind = Literal["experiment", "confirmation"]


def _lock_json(claim: Claim, kind: str = "experiment") -> dict[str, Any]:
    data = claim.to_json()
    data["generation"] = keys.lock_generation(claim.lock_key)
    data["kind"] = kind
    return data


class Claims:
    """Claim operations of one :class:`~swarm.namespace.SwarmMemory`."""

    def __init__(self, memory: SwarmMemory) -> None:
        self.memory = memory
        #: record keys of the claims this client won and has not released
        self.mine: set[str] = set()

    def _base(
        self,
        *,
        parent_hash: str,
        code_hash: str,
        description: str,
        track: str,
        tier: str | None,
        gpu_name: str,
        kind: ClaimKind = "experiment",
    ) -> Claim:
        mem = self.memory
        claim_key = keys.claim_key(mem.agent_id, description, parent_hash, code_hash, kind)
        return Claim(
            key=claim_key,
            agent_id=mem.agent_id,
            description=description,
            experiment_key=claim_key.removeprefix(keys.CLAIMS),
            parent_hash=parent_hash,
            code_hash=code_hash,
            track=track,
            vram_tier=tier,
            gpu_name=gpu_name,
            host=mem.host,
            lease_s=mem.lease_s,
            nonce=uuid.uuid4().hex,
            extra={"session": mem.session, **({"beacon": mem.beacon.key} if mem.beacon else {})},
        )

    async def try_claim(
        self,
        *,
        parent_hash: str,
        code_hash: str,
        description: str,
        track: str,
        tier: str | None,
        gpu_name: str = "",
        kind: ClaimKind = "experiment",
    ) -> ClaimOutcome:
        """See :meth:`SwarmMemory.try_claim`."""
        if not code_hash:
            raise InvalidRequestError(
                "try_claim needs code_hash (swarm.trainpy.code_hash(train_py))"
            )
        mem = self.memory
        lock_prefix = (
            keys.confirmation_lock_prefix if kind == "confirmation" else keys.experiment_lock_prefix
        )
        prefix = lock_prefix(parent_hash, code_hash, track=track, tier=tier)
        base = self._base(
            parent_hash=parent_hash,
            code_hash=code_hash,
            description=description,
            track=track,
            tier=tier,
            gpu_name=gpu_name,
            kind=kind,
        )
        stamped: dict[int, Claim] = {}

        def payload(gen: int, key: str) -> dict[str, Any]:
            now = mem.now()
            stamped[gen] = c = replace(base, claimed_at=now, heartbeat_at=now, lock_key=key)
            return _lock_json(c, kind) | {"generation": gen}

        def record(gen: int, key: str) -> NewMemory:
            return self._record(stamped[gen])

        got = await mem.locks.acquire(
            prefix,
            lambda g: keys.generation_key(prefix, g),
            payload,
            fast_first=True,
            legacy_ttl_s=mem.lease_s,
            reclaim=self.own_stale,
            companion=record,
        )
        if not got.won:
            if got.stray and (got.holder is None or got.holder.agent_id != mem.agent_id):
                # our record next to a lock another agent holds: nobody of ours needs it
                # (a holder of this agent writes the same key itself)
                await mem.backend.delete([base.key])
            who = got.holder.agent_id if got.holder else "?"
            done = got.holder is not None and got.holder.done
            log.info("claim_lost", experiment=prefix, holder=who, done=done)
            reason = f"done by {who}" if done else f"claimed by {who}"
            return ClaimOutcome(won=False, holder=got.holder, reason=reason)
        claim = stamped[got.generation]
        ran = await self._done_below(prefix, got.generation) if kind == "experiment" else None
        if ran is not None:
            # a generation released without a result sat on top of one that ran: the
            # experiment is done; ours carries that forward so nobody wins it again
            await self.release(claim, result_key=str(ran.extra.get("result_key") or ""))
            log.info("claim_lost", experiment=prefix, holder=ran.agent_id, done=True)
            return ClaimOutcome(won=False, holder=ran, reason=f"done by {ran.agent_id}")
        if mem.beacon is not None and claim.extra.get("beacon") == mem.beacon.key:
            mem.beacon.hold(claim)  # live from now until released, whether it runs or not
        if got.took_over:
            log.warning("claim_taken_over", lock=got.key, generation=got.generation)
        if not got.companion:
            await self._write_record(claim)
        log.info("claim_won", key=claim.key, lock=got.key)
        self.mine.add(claim.key)
        return ClaimOutcome(won=True, claim=claim)

    async def _done_below(self, prefix: str, generation: int) -> Claim | None:
        """A generation under ``generation`` (the last :data:`_DONE_LOOKBACK`, one read)
        whose run finished and was published, or None. Generation 1 needs no read."""
        lower = range(max(1, generation - _DONE_LOOKBACK), generation)
        wanted = [keys.generation_key(prefix, g) for g in lower]
        if not wanted:
            return None
        found = await get_json(self.memory.backend, wanted)
        for key in reversed(wanted):
            if key in found:
                holder = Claim.from_json(key, found[key])
                if holder.done:
                    return holder
        return None

    async def confirming_now(
        self, candidates: Sequence[tuple[str, str, int]], *, track: str, tier: str | None
    ) -> dict[tuple[str, str], Claim | None]:
        """Who confirms each candidate ``(parent_hash, code_hash, runs so far)`` right now
        (the live holder of its confirmation lock), or None; two or three calls in all."""
        prefixes = {
            (p, c): keys.confirmation_lock_prefix(p, c, track=track, tier=tier)
            for p, c, _ in candidates
        }
        # each finished confirmation took one generation: the top is about the runs so far
        guesses = {prefixes[(p, c)]: max(1, runs - 1) for p, c, runs in candidates}
        holders = await self.memory.locks.live_holders(guesses, self.memory.lease_s)
        return {pc: holders[prefix] for pc, prefix in prefixes.items()}

    def _record(self, claim: Claim) -> NewMemory:
        """The human-readable claim record that other clients of the org understand,
        created in the same call as the lock where the store's create is atomic."""
        # Written without an embedding: embedding costs tens of milliseconds on a CPU and
        # the claimer should not wait for it. heartbeating() embeds it right away in the
        # background (embed_claim) so that other clients' semantic checks see it.
        # Under a beacon most claims are taken ahead, while a run trains: the record is
        # embedded at once then, which saves the separate embedding write.
        mem = self.memory
        return NewMemory(
            key=claim.key,
            value=encode_record(claim.to_json()),
            description=f"[autoresearch] Claim: {claim.description}",
            embed=mem.embed_records and mem.beacon is not None,
        )

    async def _write_record(self, claim: Claim) -> None:
        """Write the claim record when it did not go with the lock (it existed already,
        or the store's create is not atomic)."""
        mem = self.memory
        rec = self._record(claim)
        text, desc, embed = rec.value, rec.description, rec.embed
        try:
            if not await create_one(mem.backend, claim.key, text, desc, embed=embed):
                await mem.backend.update(claim.key, text, description=desc, embed=embed or None)
        except MemoryStoreError as exc:
            # The lock is what counts; a missing human-readable record only hides the claim
            # from other clients. Keep the claim and say so.
            log.warning("claim_record_write_failed", key=claim.key, error=str(exc))

    def own_stale(self, holder: Claim) -> bool:
        """A live claim of this agent on this host from another session: a run of ours cut
        short by a crash of the supervisor (a state-dir lock keeps two supervisors of one
        agent and host from running at once), to be re-claimed, not lost to ourselves."""
        mem = self.memory
        other = str(holder.extra.get("session") or "")
        return (
            holder.agent_id == mem.agent_id
            and holder.host == mem.host
            and other != ""
            and other != mem.session
        )

    async def embed_claim(self, claim: Claim) -> None:
        """Ask the store to embed the claim record's description (semantic search by others)."""
        mem = self.memory
        await mem.backend.update(
            claim.key,
            encode_record(replace(claim, heartbeat_at=mem.now()).to_json()),
            description=f"[autoresearch] Claim: {claim.description}",
            embed=True,
            embed_source="description",
        )

    async def still_held(self, claim: Claim) -> bool:
        """True while ``claim`` is still ours: no later generation, not released."""
        gen = keys.lock_generation(claim.lock_key)
        if gen is None:
            raise InvalidRequestError(
                f"claim {claim.key!r} has no lock key of ours ({claim.lock_key!r})"
            )
        nxt = claim.lock_key[: claim.lock_key.rfind("/g") + 1] + f"g{gen + 1:06d}"
        cur = await get_json(self.memory.backend, [claim.lock_key, nxt])
        if nxt in cur:
            return False
        mine = cur.get(claim.lock_key)
        return mine is not None and mine.get("nonce") == claim.nonce and not mine.get("released_at")

    async def heartbeat(self, claim: Claim) -> bool:
        """See :meth:`SwarmMemory.heartbeat`."""
        mem = self.memory
        if not await self.still_held(claim):
            log.warning("heartbeat_lost_claim", key=claim.key, lock=claim.lock_key)
            return False
        fresh = replace(claim, heartbeat_at=mem.now())
        text = encode_record(fresh.to_json())
        results = await asyncio.gather(
            mem.backend.update(claim.lock_key, encode_record(_lock_json(fresh))),
            mem.backend.update(claim.key, text),
            return_exceptions=True,
        )
        if isinstance(results[0], BaseException):
            raise results[0]
        if isinstance(results[1], KeyNotFoundError):
            try:
                await create_one(
                    mem.backend,
                    claim.key,
                    text,
                    f"[autoresearch] Claim: {claim.description}",
                    embed=mem.embed_records,
                )
            except MemoryStoreError as exc:
                log.warning("claim_record_recreate_failed", key=claim.key, error=str(exc))
        elif isinstance(results[1], BaseException):
            log.warning("claim_record_heartbeat_failed", key=claim.key, error=str(results[1]))
        return True

    async def release(self, claim: Claim, *, result_key: str | None = None) -> None:
        """See :meth:`SwarmMemory.release`."""
        mem = self.memory
        now = mem.now()
        done = result_key is not None and not claim.lock_key.startswith(keys.CONFIRM_LOCKS)
        released = replace(
            claim,
            heartbeat_at=now,
            released_at=now,
            status=DONE if done else "released",
            extra={**claim.extra, **({"result_key": result_key} if done else {})},
        )
        try:
            # No check that the lock is still ours: after a takeover the holder is a later
            # generation, and marking our own generation released changes nothing for it.
            await mem.backend.update(claim.lock_key, encode_record(_lock_json(released)))
        except KeyNotFoundError:
            log.warning("claim_lock_missing", key=claim.key, lock=claim.lock_key)
        # (any other failure propagates with the claim still held by the beacon: until a
        # retried release ends it, nobody else may run the experiment again)
        if mem.beacon is not None:
            mem.beacon.drop(claim.lock_key)
        self.mine.discard(claim.key)
        await mem.backend.delete([claim.key])
        log.info("claim_released", key=claim.key)

    def let_go(self, claim: Claim) -> None:
        """Stop keeping ``claim`` live without releasing it (its release failed for good):
        its lease ends it."""
        if self.memory.beacon is not None:
            self.memory.beacon.drop(claim.lock_key)

    async def live_claims(
        self, track: str | None = None, *, others_only: bool = False
    ) -> list[Claim]:
        """See :meth:`SwarmMemory.live_claims`."""
        mem = self.memory
        infos = await mem.backend.list_keys(keys.CLAIMS)
        wanted = [i.key for i in infos if not (others_only and i.key in self.mine)]
        data = await get_json(mem.backend, wanted) if wanted else {}
        now = mem.now()
        found = [(k, Claim.from_json(k, rec)) for k, rec in data.items()]
        found = [
            (k, c)
            for k, c in found
            if c.status != "released" and (track is None or c.track == track)
        ]
        ttl = mem.legacy_claim_ttl_s
        beats = await beacon_beats(
            mem.backend, [(k, c) for k, c in found if not c.is_live(now, ttl)], now
        )
        # a claim kept by its beacon shows the beacon's last beat (its own record is not
        # rewritten per beat), so its heartbeat age does not grow while the run is alive
        out = [
            replace(c, heartbeat_at=max(beats[k], c.heartbeat_at or 0.0)) if k in beats else c
            for k, c in found
            if k in beats or c.is_live(now, ttl)
        ]
        out.sort(key=lambda c: c.claimed_at or 0.0, reverse=True)
        return out

    async def prune_dead_claims(self) -> int:
        """See :meth:`SwarmMemory.prune_dead_claims`."""
        mem = self.memory
        prefix = f"{keys.CLAIMS}{keys.agent_slug(mem.agent_id)}--"
        infos = await mem.backend.list_keys(prefix)
        data = await get_json(mem.backend, [i.key for i in infos])
        now = mem.now()
        dead = [
            k
            for k, rec in data.items()
            if (c := Claim.from_json(k, rec)).agent_id == mem.agent_id
            and not c.is_live(now, mem.legacy_claim_ttl_s)
        ]
        if dead:
            await mem.backend.delete(dead)
        return len(dead)

    async def _beat(self, claim: Claim, handle: Heartbeat, interval: float) -> None:
        """The per-claim heartbeat loop (without a beacon)."""
        mem = self.memory
        if mem.embed_records:
            try:
                await self.embed_claim(claim)
                handle.embedded = True
            except MemoryStoreError as exc:
                log.warning("claim_embed_failed", key=claim.key, error=str(exc))
        while True:
            await mem.sleep(interval)
            try:
                ok = await self.heartbeat(claim)
            except MemoryStoreError as exc:
                handle.failures += 1
                log.warning(
                    "heartbeat_failed", key=claim.key, error=str(exc), failures=handle.failures
                )
                continue
            if not ok:
                handle.lost = True
                return
            handle.beats += 1

    @asynccontextmanager
    async def heartbeating(
        self, claim: Claim, *, interval_s: float | None = None, release_on_exit: bool = False
    ) -> AsyncIterator[Heartbeat]:
        """See :meth:`SwarmMemory.heartbeating`."""
        mem = self.memory
        interval = float(interval_s) if interval_s is not None else mem.heartbeat_s
        handle = Heartbeat(claim)
        if mem.beacon is not None and claim.extra.get("beacon") == mem.beacon.key:
            async with mem.beacon.keeping(claim, handle):
                yield handle
            if release_on_exit and not handle.lost:
                await self.release(claim)
            return
        task = asyncio.create_task(
            self._beat(claim, handle, interval), name=f"heartbeat:{claim.key}"
        )
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
