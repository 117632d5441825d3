"""The durable outbox: results and claim releases the shared memory has not taken yet.

Every finished run is written here *before* it is published (append + fsync of
``state_dir/outbox.jsonl``), and marked done once the memory holds it. A result the memory
could not take (outage) stays pending and is replayed -- while the supervisor runs, and on
the next start after a ``kill -9`` -- through the same decide/publish path as a live one:
a result judged offline is offered as a best again, then published. Publishing is
idempotent (the key of a run is derived from agent, code, seed and completion time), so a
replay after a crash between "published" and "marked done" finds the record already there
and does not duplicate it: each run is published exactly once.

Claim releases that failed during an outage are queued here too and retried when the
memory is back (the lock would otherwise stay until its lease ends).

The file is a log of operations, one JSON object a line::

    {"op": "add", "id": ..., "kind": "result", "result": {...}, "decided": false, ...}
    {"op": "decided", "id": ..., "status": "keep", "verified": false}
    {"op": "done", "id": ..., "key": "results/..."}

A torn last line (a crash mid-append) is skipped. When nothing is pending the file is
truncated. A write that fails (disk full) is logged and the entry stays pending in memory.
"""

from __future__ import annotations

import asyncio
import os
import threading
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import orjson

from swarm._logging import get_logger
from swarm.errors import InvalidRequestError, MemoryStoreError
from swarm.faults import FaultLatch, Reaction, classify
from swarm.records import Claim, Result

__all__ = ["OUTBOX_NAME", "REJECTED_NAME", "Outbox", "OutboxEntry", "Publisher"]

log = get_logger(__name__)

OUTBOX_NAME = "outbox.jsonl"
REJECTED_NAME = "rejected.jsonl"
_CALL_TIMEOUT_S = 60.0


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """One pending item: a result (``decided``: its keep/discard is final) or a release."""

    id: str
    kind: Literal["result", "release"]
    result: Result | None = None
    claim: Claim | None = None
    #: a release of a published experiment: its lock ends as done
    result_key: str | None = None
    decided: bool = True
    confirming: bool = False
    noise_margin: float = 0.0


def _entry_from(op: dict[str, Any]) -> OutboxEntry | None:
    kind = op.get("kind")
    ident = str(op.get("id") or "")
    if not ident:
        return None
    if kind == "result" and isinstance(op.get("result"), dict):
        claim = op.get("claim")
        return OutboxEntry(
            ident,
            "result",
            result=Result.from_json("", op["result"]),
            claim=Claim.from_json(str(op.get("claim_key") or ""), claim)
            if isinstance(claim, dict)
            else None,
            decided=bool(op.get("decided", True)),
            confirming=bool(op.get("confirming", False)),
            noise_margin=float(op.get("noise_margin") or 0.0),
        )
    if kind == "release" and isinstance(op.get("claim"), dict):
        return OutboxEntry(
            ident,
            "release",
            claim=Claim.from_json(str(op.get("claim_key") or ""), op["claim"]),
            result_key=str(op["result_key"]) if op.get("result_key") else None,
        )
    return None


def _append_line(path: Path, line: bytes) -> None:
    """Append one line and fsync it (the write layer: a full disk raises OSError here)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("ab") as fh:
        fh.write(line)
        fh.flush()
        os.fsync(fh.fileno())


class Outbox:
    """The pending entries of ``path`` (loaded on construction; blocking I/O in threads)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._pending: dict[str, OutboxEntry] = {}
        self.write_failures = 0
        self._load()

    # ---------------------------------------------------------------- file

    def _load(self) -> None:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return
        for lineno, line in enumerate(raw.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                op = orjson.loads(line)
            except orjson.JSONDecodeError:
                log.warning("outbox_torn_line", path=str(self.path), line=lineno)
                continue
            if isinstance(op, dict):
                self._apply(op)
        if self._pending:
            log.info("outbox_loaded", path=str(self.path), pending=len(self._pending))
        self._compact_sync()

    def _apply(self, op: dict[str, Any]) -> None:
        ident = str(op.get("id") or "")
        kind = op.get("op")
        if kind == "add":
            entry = _entry_from(op)
            if entry is not None:
                self._pending[ident] = entry
        elif kind == "decided" and ident in self._pending:
            entry = self._pending[ident]
            if entry.result is not None:
                result = replace(
                    entry.result,
                    status=str(op.get("status") or "discard"),
                    verified=bool(op.get("verified", False)),
                )
                self._pending[ident] = replace(entry, result=result, decided=True)
        elif kind == "done":
            self._pending.pop(ident, None)

    def _write_sync(self, op: dict[str, Any]) -> None:
        line = orjson.dumps(op, default=str) + b"\n"
        with self._lock:
            self._apply(op)
            try:
                _append_line(self.path, line)
            except OSError as exc:
                self.write_failures += 1
                log.error(
                    "outbox_write_failed",
                    path=str(self.path),
                    op=op.get("op"),
                    error=str(exc),
                    note="kept in memory; replayed while this process runs",
                )

    def _compact_sync(self) -> None:
        """Truncate the file when nothing is pending (bounded growth)."""
        with self._lock:
            if self._pending:
                return
            try:
                if self.path.exists() and self.path.stat().st_size:
                    with self.path.open("wb") as fh:
                        os.fsync(fh.fileno())
            except OSError as exc:
                log.warning("outbox_compact_failed", path=str(self.path), error=str(exc))

    async def _write(self, op: dict[str, Any]) -> None:
        await asyncio.to_thread(self._write_sync, op)

    # ---------------------------------------------------------------- API

    def pending(self, kind: str | None = None) -> list[OutboxEntry]:
        with self._lock:
            return [e for e in self._pending.values() if kind is None or e.kind == kind]

    def __len__(self) -> int:
        return len(self.pending("result"))

    async def add_result(
        self,
        result: Result,
        *,
        decided: bool,
        confirming: bool = False,
        noise_margin: float = 0.0,
        claim: Claim | None = None,
    ) -> str:
        """Write ``result`` ahead; ``claim``: the claim its run ran under, released (as done)
        once the result is published."""
        ident = uuid.uuid4().hex
        await self._write(
            {
                "op": "add",
                "id": ident,
                "kind": "result",
                "result": result.to_json(),
                "decided": decided,
                "confirming": confirming,
                "noise_margin": noise_margin,
                **({"claim": claim.to_json(), "claim_key": claim.key} if claim else {}),
            }
        )
        return ident

    async def add_release(self, claim: Claim, result_key: str | None = None) -> str:
        ident = uuid.uuid4().hex
        await self._write(
            {
                "op": "add",
                "id": ident,
                "kind": "release",
                "claim": claim.to_json(),
                "claim_key": claim.key,
                **({"result_key": result_key} if result_key else {}),
            }
        )
        return ident

    async def mark_decided(self, ident: str, result: Result) -> None:
        await self._write(
            {"op": "decided", "id": ident, "status": result.status, "verified": result.verified}
        )

    async def mark_done(self, ident: str, key: str = "") -> None:
        await self._write({"op": "done", "id": ident, "key": key})
        await asyncio.to_thread(self._compact_sync)


Decide = Callable[[Result, bool, float], Awaitable[Result]]
OnPublished = Callable[[Result], Awaitable[None]]


class Publisher:
    """Publishes results through the outbox (write-ahead) and replays what is pending.

    ``memory`` is a :class:`swarm.namespace.SwarmMemory`; ``latch`` receives permanent
    faults; ``on_replayed`` is told of every result a replay published (with its key).
    """

    def __init__(
        self,
        outbox: Outbox,
        memory: Any,
        latch: FaultLatch,
        *,
        label: str = "the shared memory",
        on_replayed: OnPublished | None = None,
    ) -> None:
        self.outbox = outbox
        self.memory = memory
        self.latch = latch
        self.label = label
        self.on_replayed = on_replayed
        self._replay_lock = asyncio.Lock()
        self._in_flight: set[str] = set()
        #: lock keys of claims whose result waits in the outbox: released by the replay
        self._holding: set[str] = set()

    def holds(self, claim: Claim) -> bool:
        """The claim's result waits in the outbox, which releases it (as done) once the
        result is published: its worker must not release it before."""
        return bool(claim.lock_key) and claim.lock_key in self._holding

    def _transient(self, exc: BaseException, *, where: str) -> bool:
        """True for a transient fault (retry later); trips the latch on a permanent one."""
        if isinstance(exc, TimeoutError):
            return True
        return self.latch.check(exc, where=where, memory=self.label).reaction is Reaction.TRANSIENT

    async def publish(
        self,
        result: Result,
        *,
        decided: bool,
        confirming: bool = False,
        noise_margin: float = 0.0,
        claim: Claim | None = None,
    ) -> str:
        """Write ``result`` ahead, publish it, mark it done; its key, or "" when deferred.
        ``claim`` (the run's): when the result is deferred the outbox keeps it and releases
        it as done after the replay published the result (see :meth:`holds`): released
        earlier, its lock could be won and the experiment run again before the result
        arrives."""
        ident = await self.outbox.add_result(
            result,
            decided=decided,
            confirming=confirming,
            noise_margin=noise_margin,
            claim=claim if claim is not None and claim.lock_key else None,
        )
        if self.latch.tripped:
            self._hold(claim)
            return ""
        self._in_flight.add(ident)  # the replay leaves it alone while this call owns it
        try:
            key = str(
                await asyncio.wait_for(self.memory.publish_result(result), timeout=_CALL_TIMEOUT_S)
            )
        except InvalidRequestError as exc:
            await self._set_aside(ident, result, exc)
            return ""
        except (MemoryStoreError, TimeoutError) as exc:
            self._transient(exc, where="publish")
            log.warning(
                "publish_deferred",
                description=result.description,
                error=str(exc),
                queued=str(self.outbox.path),
            )
            self._hold(claim)
            return ""
        finally:
            self._in_flight.discard(ident)
        await self.outbox.mark_done(ident, key)
        return key

    def _hold(self, claim: Claim | None) -> None:
        if claim is not None and claim.lock_key:
            self._holding.add(claim.lock_key)

    async def _set_aside(self, ident: str, result: Result, exc: InvalidRequestError) -> None:
        """A result the memory can never take (e.g. too large): kept in rejected.jsonl next
        to the outbox rather than retried forever (it would block every later start)."""
        path = self.outbox.path.with_name(REJECTED_NAME)
        line = orjson.dumps({"error": str(exc), "result": result.to_json()}, default=str)
        try:
            await asyncio.to_thread(_append_line, path, line + b"\n")
        except OSError as write_exc:
            log.error("rejected_result_not_saved", path=str(path), error=str(write_exc))
            return  # stays in the outbox
        log.error(
            "result_rejected", description=result.description, error=str(exc), saved_to=str(path)
        )
        await self.outbox.mark_done(ident)

    async def release(self, claim: Claim, *, result_key: str | None = None) -> None:
        """Release ``claim`` (done, when ``result_key`` names its published result); queued
        for a retry when the memory is away."""
        try:
            await asyncio.wait_for(
                asyncio.shield(self.memory.release(claim, result_key=result_key)), timeout=15
            )
        except (MemoryStoreError, TimeoutError) as exc:
            self._transient(exc, where="release")
            log.warning("claim_release_deferred", claim=claim.key, error=str(exc))
            await self.outbox.add_release(claim, result_key)

    async def _decide(self, result: Result, confirming: bool, margin: float) -> Result:
        """Judge a result the live path could only judge offline (as the worker does)."""
        if result.status not in ("keep", "discard") or result.val_bpb is None:
            return result
        candidate = replace(result, status="keep")
        decision = (
            await self.memory.confirm_best(candidate)
            if confirming
            else await self.memory.propose_best(candidate, noise_margin=margin)
        )
        status = "keep" if decision.moved else "discard"
        return replace(result, status=status, verified=confirming and status == "keep")

    async def _replay_one(self, entry: OutboxEntry) -> None:
        if entry.kind == "release":
            assert entry.claim is not None
            try:
                await self.memory.release(entry.claim, result_key=entry.result_key)
                log.info("claim_release_replayed", claim=entry.claim.key)
            except MemoryStoreError as exc:
                if classify(exc).reaction is Reaction.TRANSIENT:
                    raise
                # e.g. the key that took the claim was revoked and another one replays:
                # the lock ends with its lease; retrying cannot help
                log.warning("claim_release_dropped", claim=entry.claim.key, error=str(exc))
                self.memory.let_go(entry.claim)
            await self.outbox.mark_done(entry.id)
            return
        assert entry.result is not None
        result = entry.result
        if not entry.decided:
            result = await self._decide(result, entry.confirming, entry.noise_margin)
            await self.outbox.mark_decided(entry.id, result)
        try:
            key = str(await self.memory.publish_result(result))
        except InvalidRequestError as exc:
            await self._set_aside(entry.id, result, exc)
            if entry.claim is not None:  # never published: the experiment is free again
                self._holding.discard(entry.claim.lock_key)
                await self.release(entry.claim)
            return
        await self.outbox.mark_done(entry.id, key)
        log.info("publish_replayed", key=key, status=result.status, description=result.description)
        if entry.claim is not None:  # the run's claim waited for its result: done now
            self._holding.discard(entry.claim.lock_key)
            await self.release(entry.claim, result_key=key)
        if self.on_replayed is not None:
            await self.on_replayed(replace(result, key=key))

    async def replay(self, *, stop: asyncio.Event | None = None) -> int:
        """Replay pending entries oldest first until one fails; how many went through."""
        done = 0
        async with self._replay_lock:
            for entry in self.outbox.pending():
                if self.latch.tripped or (stop is not None and stop.is_set()):
                    break
                if entry.id in self._in_flight:
                    continue
                try:
                    await asyncio.wait_for(self._replay_one(entry), timeout=_CALL_TIMEOUT_S)
                except (MemoryStoreError, TimeoutError) as exc:
                    self._transient(exc, where="replay")
                    log.warning(
                        "replay_deferred", pending=len(self.outbox.pending()), error=str(exc)
                    )
                    break
                done += 1
        return done
