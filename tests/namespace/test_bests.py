"""Bests: forward only, sanity bounds, compare-and-set, noise-margin confirmation, scopes."""

from __future__ import annotations

import asyncio
import hashlib

import pytest
from ns_support import FakeClock, Swarm

from swarm import keys
from swarm.memory._types import NewMemory
from swarm.namespace import SwarmMemory
from swarm.records import Result, decode_record, encode_record, to_iso

PARENT = hashlib.sha256(b"base").hexdigest()


def result(
    agent: str,
    val: float | None,
    *,
    n: int = 0,
    tier: str = "xl",
    track: str = "standard",
    seed: int = 0,
    status: str = "keep",
    key: str = "",
) -> Result:
    code = hashlib.sha256(f"code-{n}".encode()).hexdigest()
    return Result(
        key=key,
        agent_id=agent,
        status=status,
        description=f"change {n}",
        train_py=f"# code {n}\nX = {n}\n",
        val_bpb=val,
        vram_tier=tier,
        track=track,
        parent_hash=PARENT,
        code_hash=code,
        seed=seed,
        completed_at=1.0e9 + n,
    )


async def test_first_keep_sets_tier_global_and_agent_bests(swarm: Swarm) -> None:
    """The first believable keep becomes the tier, track and agent best, readable by old clients."""
    mem = await swarm.memory("ada")
    d = await mem.propose_best(result("ada", 0.998, n=1))
    assert (
        d.moved and d.tier_moved and d.global_moved and d.agent_moved and not d.needs_confirmation
    )
    assert d.best is not None and d.best.val_bpb == 0.998 and d.best.tier == "xl"
    tier = await mem.get_best("standard", "xl")
    glob = await mem.get_best("standard")
    agent = await mem.get_agent_best("ada")
    assert tier and glob and agent
    assert tier.train_py == glob.train_py == "# code 1\nX = 1\n" and agent.val_bpb == 0.998
    got = await mem.backend.get(
        ["best/metadata", "best/train_py", "best/tier/xl/metadata", "best/agent/ada"]
    )
    assert got["best/train_py"].value == "# code 1\nX = 1\n"  # raw source, as old clients read it
    meta = decode_record("best/metadata", got["best/metadata"].value)
    assert meta["val_bpb"] == 0.998 and meta["agent_id"] == "ada" and meta["achieved_by"] == "ada"
    assert meta["previous_best_val_bpb"] is None


async def test_best_only_moves_forward_and_keeps_previous(swarm: Swarm) -> None:
    """A better keep moves the best (previous kept inside); equal or worse ones do not."""
    mem = await swarm.memory("ada")
    await mem.propose_best(result("ada", 0.998, n=1))
    worse = await mem.propose_best(result("ada", 0.999, n=2))
    same = await mem.propose_best(result("ada", 0.998, n=3))
    assert not worse.moved and not same.moved and "not better" in worse.reason
    better = await mem.propose_best(result("ada", 0.990, n=4))
    assert better.moved and better.previous is not None and better.previous.val_bpb == 0.998
    best = await mem.get_best("standard", "xl")
    assert best is not None and best.val_bpb == 0.990 and best.version == 2
    assert best.previous is not None and best.previous.val_bpb == 0.998
    assert best.previous.train_py == "# code 1\nX = 1\n"  # recoverable
    assert best.improvement_over_previous == pytest.approx(0.008)


@pytest.mark.parametrize(("val", "why"), [(0.5, "sanity"), (0.3, "sanity"), (None, "no metric")])
async def test_sanity_bounds_reject_unbelievable_values(
    local_swarm: Swarm, val: float | None, why: str
) -> None:
    """val_bpb at or below 0.5, or no metric at all, never becomes a best."""
    mem = await local_swarm.memory("ada")
    d = await mem.propose_best(result("ada", val, n=1, status="keep" if val else "crash"))
    assert not d.moved and why in d.reason
    assert await mem.get_best("standard", "xl") is None


async def test_too_large_single_step_is_rejected(local_swarm: Swarm) -> None:
    """An improvement of more than 0.1 in one step is refused as a likely bug."""
    mem = await local_swarm.memory("ada")
    await mem.propose_best(result("ada", 1.00, n=1))
    d = await mem.propose_best(result("ada", 0.89, n=2))
    assert not d.tier_moved and not d.global_moved and "more than 0.1" in d.reason
    best = await mem.get_best("standard", "xl")
    assert best is not None and best.val_bpb == 1.00


async def test_tiers_and_tracks_are_never_compared(local_swarm: Swarm) -> None:
    """A small-tier result does not touch the xl best; a smoke result does not touch standard."""
    mem = await local_swarm.memory("ada")
    await mem.propose_best(result("ada", 0.990, n=1, tier="xl"))
    d = await mem.propose_best(result("ada", 1.020, n=2, tier="small"))
    assert d.tier_moved and not d.global_moved  # first small best; worse than the track's best
    assert (await mem.get_best("standard", "small")).val_bpb == 1.020  # type: ignore[union-attr]
    assert (await mem.get_best("standard", "xl")).val_bpb == 0.990  # type: ignore[union-attr]
    s = await mem.propose_best(result("ada", 1.5, n=3, tier="cpu", track="smoke"))
    assert s.tier_moved and s.global_moved
    assert (await mem.get_best("smoke", "cpu")).val_bpb == 1.5  # type: ignore[union-attr]
    assert (await mem.get_best("standard")).val_bpb == 0.990  # type: ignore[union-attr]
    stored = await mem.backend.list_keys("best/track/smoke/")
    assert {i.key for i in stored} >= {
        "best/track/smoke/metadata",
        "best/track/smoke/tier/cpu/metadata",
        "best/track/smoke/agent/ada",
    }


async def test_agent_bests_are_personal(local_swarm: Swarm) -> None:
    """Each agent's personal best moves with its own results only."""
    ada = await local_swarm.memory("ada")
    bob = await local_swarm.memory("bob", backend=ada.backend)
    await ada.propose_best(result("ada", 0.990, n=1))
    d = await bob.propose_best(result("bob", 0.995, n=2))
    assert not d.moved and d.agent_moved
    assert (await ada.get_agent_best("bob")).val_bpb == 0.995  # type: ignore[union-attr]
    assert (await ada.get_agent_best()).val_bpb == 0.990  # type: ignore[union-attr]


async def test_noise_margin_needs_confirmation_with_another_seed(swarm: Swarm) -> None:
    """A gain below the noise margin waits; the same seed cannot confirm; another seed does."""
    ada = await swarm.memory("ada")
    bob = await swarm.memory("bob")
    await ada.propose_best(result("ada", 1.000, n=1))
    small = result("ada", 0.998, n=2, seed=1, key="results/ada--change-2--aaaaaa")
    d = await ada.propose_best(small, noise_margin=0.005)
    assert d.needs_confirmation and not d.moved
    assert (await ada.get_best("standard", "xl")).val_bpb == 1.000  # type: ignore[union-attr]
    pending = await bob.pending_confirmations("standard", "xl")
    assert [p.code_hash for p in pending] == [small.code_hash] and pending[0].seed == 1
    same_seed = await bob.confirm_best(result("bob", 0.997, n=2, seed=1))
    assert not same_seed.moved and "another seed" in same_seed.reason
    ok = await bob.confirm_best(
        result("bob", 0.996, n=2, seed=2, key="results/bob--change-2--bbbbbb")
    )
    assert ok.moved and ok.tier_moved and ok.global_moved
    best = await ada.get_best("standard", "xl")
    assert best is not None and best.verified and best.val_bpb == pytest.approx(0.997)
    assert {c["seed"] for c in best.confirmations} == {1, 2}
    assert await ada.pending_confirmations("standard") == []


async def test_unconfirmed_improvement_does_not_move(local_swarm: Swarm) -> None:
    """A confirming run that is not better than the best leaves the best alone and clears the wait."""
    mem = await local_swarm.memory("ada")
    await mem.propose_best(result("ada", 1.000, n=1))
    await mem.propose_best(result("ada", 0.999, n=2, seed=1), noise_margin=0.005)
    d = await mem.propose_best(result("ada", 1.002, n=2, seed=5), noise_margin=0.005)  # recognised
    assert not d.moved and "not confirmed" in d.reason
    assert (await mem.get_best("standard", "xl")).val_bpb == 1.000  # type: ignore[union-attr]
    assert await mem.pending_confirmations() == []
    assert not (await mem.confirm_best(result("ada", 0.99, n=9, seed=3))).moved


async def test_concurrent_proposals_end_at_the_minimum(swarm: Swarm) -> None:
    """16 agents proposing at once: the best ends at the lowest value, versions strictly chained."""
    first = await swarm.memory("seed")
    await first.propose_best(result("seed", 1.000, n=0))
    backend = await swarm.backend("proposers")
    mems = [await swarm.memory(f"p{j}", backend) for j in range(16)]
    vals = [0.999 - 0.001 * ((j * 7) % 16) for j in range(16)]
    decisions = await asyncio.gather(
        *(
            m.propose_best(result(m.agent_id, v, n=j + 1))
            for j, (m, v) in enumerate(zip(mems, vals, strict=True))
        )
    )
    best = await first.get_best("standard", "xl")
    assert best is not None and best.val_bpb == pytest.approx(min(vals))
    moved = sum(d.tier_moved for d in decisions)
    assert best.version == 1 + moved
    # every move was a real improvement over the best it replaced
    for d in decisions:
        if d.tier_moved:
            assert d.previous is not None and d.best is not None
            assert d.best.val_bpb < d.previous.val_bpb  # type: ignore[operator]


async def test_original_clients_best_is_respected(local_swarm: Swarm, clock: FakeClock) -> None:
    """A best/metadata written by an original client is read and only beaten by a better result."""
    mem = await local_swarm.memory("ada", clock=clock)
    legacy = {
        "agent_id": "gpu0",
        "val_bpb": 0.9931,
        "status": "keep",
        "description": "old best",
        "train_py": "old = 1\n",
        "best_val_bpb": 0.9931,
        "achieved_by": "gpu0",
        "achieved_at": to_iso(clock.now),
        "previous_best_val_bpb": 0.9979,
    }
    await mem.backend.create([NewMemory(key="best/metadata", value=encode_record(legacy))])
    current = await mem.get_best("standard")
    assert current is not None and current.agent_id == "gpu0" and current.train_py == "old = 1\n"
    assert not (await mem.propose_best(result("ada", 0.995, n=1))).global_moved
    d = await mem.propose_best(result("ada", 0.990, n=2))
    assert d.global_moved
    meta = decode_record("m", (await mem.backend.get(["best/metadata"]))["best/metadata"].value)
    assert meta["previous_best_by"] == "gpu0" and meta["previous_best_val_bpb"] == 0.9931
    assert meta["previous_best"]["train_py"] == "old = 1\n"


async def test_mutex_of_a_dead_proposer_is_taken_over(local_swarm: Swarm, clock: FakeClock) -> None:
    """A best mutex left by a crashed proposer is free again after its lease."""
    mem = await local_swarm.memory("ada", clock=clock, mutex_wait_s=5.0)
    dead = {
        "agent_id": "crashed",
        "heartbeat_at": to_iso(clock.now),
        "lease_s": 30,
        "nonce": "x",
        "status": "claimed",
    }
    name = keys.best_mutex_name("standard")
    await mem.backend.create(
        [NewMemory(key=keys.mutex_lock_key(name, 1), value=encode_record(dead))]
    )
    clock.advance(31)
    d = await mem.propose_best(result("ada", 0.99, n=1))
    assert d.tier_moved
    # the takeover wrote its own lock generation above the dead one, released it, and
    # cleared the dead holder's record; the best it set is ada's
    prefix = keys.mutex_lock_prefix(name)
    locks = await mem.backend.get([k.key for k in await mem.backend.list_keys(prefix)])
    records = {k: decode_record(k, m.value) for k, m in locks.items()}
    assert keys.mutex_lock_key(name, 1) not in records
    assert records and all(
        r["agent_id"] == "ada" and r["status"] == "released" for r in records.values()
    ), records
    assert all((keys.lock_generation(k) or 0) > 1 for k in records)
    best = await mem.get_best("standard", "xl")
    assert best is not None and best.agent_id == "ada" and best.val_bpb == 0.99


def test_swarm_memory_rejects_bad_timing() -> None:
    """heartbeat_s must be below lease_s; agent_id must be given."""
    from swarm.errors import InvalidRequestError

    with pytest.raises(InvalidRequestError, match="heartbeat_s"):
        SwarmMemory(object(), agent_id="a", heartbeat_s=90, lease_s=30)  # type: ignore[arg-type]
    with pytest.raises(InvalidRequestError, match="agent_id"):
        SwarmMemory(object(), agent_id=" ")  # type: ignore[arg-type]


async def test_busy_mutex_gives_a_clear_store_error(local_swarm: Swarm, clock: FakeClock) -> None:
    """A best mutex held by a live holder past mutex_wait_s raises MemoryStoreError naming it."""
    from swarm.errors import MemoryStoreError

    mem = await local_swarm.memory("ada", clock=clock, mutex_wait_s=0.3)
    held = {
        "agent_id": "slowpoke",
        "heartbeat_at": to_iso(clock.now),
        "lease_s": 30,
        "nonce": "x",
        "status": "claimed",
    }
    name = keys.best_mutex_name("standard")
    await mem.backend.create(
        [NewMemory(key=keys.mutex_lock_key(name, 1), value=encode_record(held))]
    )
    with pytest.raises(MemoryStoreError, match="slowpoke"):
        await mem.propose_best(result("ada", 0.99, n=1))


async def test_best_names_the_result_key_published_later(local_swarm: Swarm) -> None:
    """A best proposed before its result is published names the key the result then gets."""
    mem = await local_swarm.memory("ada")
    r = result("ada", 0.99, n=1, seed=3)
    d = await mem.propose_best(r)
    key = await mem.publish_result(r)
    assert d.best is not None and d.best.result.key == key
    meta = decode_record("m", (await mem.backend.get(["best/metadata"]))["best/metadata"].value)
    assert meta["result_key"] == key
