"""Claiming against a memory that is overloaded versus one that is down: an overloaded hub
(503, timeouts) gets the claim retried with back-off, and only a hub that stays overloaded
past the patience, or one that refuses connections, sends the worker training unclaimed."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from worker_support import SOURCE, worker_rig

import swarm.worker.claims as worker_claims
from swarm.errors import MemoryStoreError, MemoryTimeout, ServerError, TransportError
from swarm.proposers import Proposal
from swarm.trainpy import apply_changes, code_hash
from swarm.worker.deps import Queued


class Overloaded:
    """A store whose first ``failures`` creates fail as ``error`` (reads work)."""

    def __init__(self, inner: Any, failures: int, error: MemoryStoreError) -> None:
        self.inner, self.failures, self.error, self.creates = inner, failures, error, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def create(self, items: Sequence[Any], **kw: Any) -> Any:
        self.creates += 1
        if self.failures > 0:
            self.failures -= 1
            raise self.error
        return await self.inner.create(items, **kw)


def _item() -> Queued:
    src = apply_changes(SOURCE, {"MATRIX_LR": 0.03})
    proposal = Proposal(src, "MATRIX_LR 0.04 -> 0.03", code_hash(SOURCE), "test")
    return Queued(proposal, code_hash(src), parent_val=None, slow=False)


async def test_an_overloaded_hub_gets_the_claim_retried(tmp_path: Path) -> None:
    """Two 503s, then the claim is won in the memory (a real lock, not a local claim)."""
    async with worker_rig(tmp_path, []) as rig:
        memory = rig.deps.memory
        busy = Overloaded(memory.backend, 2, ServerError("hub busy", status=503))
        memory.backend = busy  # type: ignore[assignment]
        claim = await rig.worker.claims.claim(_item())
        assert claim is not None and claim.lock_key  # won in the memory
        assert busy.creates >= 3
        assert [c.code_hash for c in await memory.live_claims(rig.deps.track)] == [
            _item().code_hash
        ]


async def test_an_overload_past_the_patience_trains_unclaimed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Timeouts that outlast the patience end in a local claim (the worker keeps training)."""
    monkeypatch.setattr(worker_claims, "OVERLOAD_PATIENCE_S", 0.5)
    async with worker_rig(tmp_path, []) as rig:
        memory = rig.deps.memory
        memory.backend = Overloaded(memory.backend, 10**6, MemoryTimeout("no answer"))  # type: ignore[assignment]
        claim = await rig.worker.claims.claim(_item())
        assert claim is not None and claim.lock_key == ""  # local


async def test_a_refusing_hub_means_training_unclaimed_at_once(tmp_path: Path) -> None:
    """Connection refused (the hub is down) is an outage: one attempt, then a local claim."""
    async with worker_rig(tmp_path, []) as rig:
        memory = rig.deps.memory
        down = Overloaded(memory.backend, 10**6, TransportError("connection refused"))
        memory.backend = down  # type: ignore[assignment]
        claim = await rig.worker.claims.claim(_item())
        assert claim is not None and claim.lock_key == "" and down.creates == 1


async def test_a_stop_ends_the_wait_for_an_overloaded_hub(tmp_path: Path) -> None:
    """A stop during the back-off returns no claim (and trains nothing)."""
    async with worker_rig(tmp_path, []) as rig:
        memory = rig.deps.memory
        memory.backend = Overloaded(memory.backend, 10**6, ServerError("slow down", status=429))  # type: ignore[assignment]
        rig.deps.stop.request_stop("test")
        assert await rig.worker.claims.claim(_item()) is None


async def _rival_claims(rival: Any, track: str, item: Queued, kind: str) -> Any:
    """The racing agent claims ``item`` (on the CPU tier) before the worker does."""
    return await rival.try_claim(
        parent_hash=item.proposal.parent_hash,
        code_hash=item.code_hash,
        description=item.proposal.description,
        track=track,
        tier="cpu",
        kind=kind,
    )


async def test_a_claim_lost_to_another_agent_is_not_proposed_again(tmp_path: Path) -> None:
    """Racing agent "rival" holds the experiment: the worker loses the claim once, and no
    worker of its machine offers that code again while the rival's lease runs; once the
    rival published it (done), never again."""
    async with worker_rig(tmp_path, []) as rig:
        rival = await rig.open_memory("rival")
        item = _item()
        held = await _rival_claims(rival, rig.deps.track, item, "experiment")
        assert held.won and held.claim is not None
        assert await rig.worker.claims.claim(item) is None
        verdict = await rig.deps.dedup.check(
            "cpu", item.proposal, item.code_hash, parent_train_py=SOURCE
        )
        assert verdict is not None and verdict.match_key == held.claim.lock_key
        await rival.release(held.claim, result_key="results/rival--x--abc123")
        rig.deps.dedup.taken_elsewhere("cpu", item.code_hash, "", 0.0)  # the lease ran out
        assert await rig.worker.claims.claim(item) is None  # done: lost for good
        later = await rig.deps.dedup.check(
            "cpu", item.proposal, item.code_hash, parent_train_py=SOURCE
        )
        assert later is not None


async def test_a_lost_confirmation_claim_marks_the_candidate_busy(tmp_path: Path) -> None:
    """Another agent confirms the candidate: the worker loses that claim, and its machine's
    candidate book holds the candidate as busy for a lease (no worker asks again at once)."""
    async with worker_rig(tmp_path, []) as rig:
        rival = await rig.open_memory("rival")
        item = _item()
        held = await _rival_claims(rival, rig.deps.track, item, "confirmation")
        assert held.won
        assert await rig.worker.claims.claim(item, kind="confirmation") is None
        book = rig.deps.memory.candidates
        now = rig.deps.memory.now()
        busy = book.busy_until(item.proposal.parent_hash, item.code_hash)
        assert now < busy <= now + rig.deps.memory.lease_s
        assert rig.deps.dedup.contention("cpu") == 0  # a confirmation is not a lost experiment
