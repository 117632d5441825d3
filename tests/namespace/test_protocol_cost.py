"""What one experiment costs in calls: a claim with its record in one create, one best
mutex for every best a keep moves, no read of a mutex generation this client released,
recent results through the feed, and a claim's heartbeat age under the beacon."""

from __future__ import annotations

import hashlib

import pytest
from ns_support import FakeClock, Swarm, experiment, no_sleep
from spy import CallLog

from swarm import keys
from swarm.beacon import Beacon
from swarm.errors import MemoryStoreError
from swarm.memory import NewMemory
from swarm.namespace import SwarmMemory
from swarm.records import Result, encode_record, to_iso
from swarm.verify.candidates import TrustPolicy

PARENT = hashlib.sha256(b"parent").hexdigest()


def keep(n: int, val: float, agent: str = "ada") -> Result:
    code = hashlib.sha256(f"code-{n}".encode()).hexdigest()
    return Result(
        agent_id=agent,
        status="keep",
        description=f"change {n}",
        train_py=f"X = {n}\n",
        val_bpb=val,
        vram_tier="xl",
        track="standard",
        parent_hash=PARENT,
        code_hash=code,
        seed=n,
    )


def slowpoke_holds(clock: FakeClock) -> dict[str, object]:
    """A live mutex generation of another agent ("slowpoke")."""
    return {
        "agent_id": "slowpoke",
        "heartbeat_at": to_iso(clock.now),
        "lease_s": 30,
        "nonce": "x",
        "status": "claimed",
    }


async def spied(
    swarm: Swarm, agent: str, clock: FakeClock, mutex_wait_s: float = 60.0
) -> tuple[SwarmMemory, CallLog]:
    spy = CallLog(await swarm.backend(agent))
    mem = SwarmMemory(
        spy,
        agent_id=agent,
        host=f"{agent}-host",
        clock=clock,  # type: ignore[arg-type]
        embed_records=False,
        sleep=no_sleep,
        mutex_wait_s=mutex_wait_s,
    )
    return mem, spy


def mutex_creates(spy: CallLog) -> int:
    return sum(
        1
        for op, arg in spy.calls
        if op == "create" and any(i.key.startswith(keys.MUTEX_LOCKS) for i in arg)
    )


async def test_a_claim_and_its_record_are_one_create(swarm: Swarm, clock: FakeClock) -> None:
    """Winning a fresh experiment is one call that creates the lock and the claim record;
    the loser of the same experiment pays three calls and leaves no claim record behind."""
    ada, spy = await spied(swarm, "ada", clock)
    p, c = experiment(1)
    won = await ada.try_claim(
        parent_hash=p, code_hash=c, description="exp 1", track="standard", tier="xl"
    )
    assert won.won and won.claim is not None
    assert [op for op, _ in spy.calls] == ["create"]
    stored = await ada.backend.get([won.claim.key, won.claim.lock_key])
    assert set(stored) == {won.claim.key, won.claim.lock_key}
    bob, bob_spy = await spied(swarm, "bob", clock)
    lost = await bob.try_claim(
        parent_hash=p, code_hash=c, description="exp 1", track="standard", tier="xl"
    )
    assert not lost.won and lost.holder is not None and lost.holder.agent_id == "ada"
    # losing costs the create, one read of the generations near the lost one (no listing)
    # and the delete of the record created next to the lost lock
    assert [op for op, _ in bob_spy.calls] == ["create", "get", "delete"]
    bob_record = keys.claim_key("bob", "exp 1", p, c)
    assert await bob.backend.get([bob_record]) == {}
    assert [cl.agent_id for cl in await bob.live_claims()] == ["ada"]


async def test_a_keep_moving_three_bests_takes_two_mutexes(swarm: Swarm, clock: FakeClock) -> None:
    """A first keep moves the tier's and the track's best under the track's one mutex and
    the agent's under its own; the next keep of the same client does not read the
    generations it released itself."""
    ada, spy = await spied(swarm, "ada", clock)
    d = await ada.propose_best(keep(1, 0.99))
    assert d.tier_moved and d.global_moved and d.agent_moved
    assert mutex_creates(spy) == 2
    spy.reset()
    d = await ada.propose_best(keep(2, 0.98))
    assert d.tier_moved and d.global_moved and d.agent_moved
    assert mutex_creates(spy) == 2
    mutex_reads = [
        arg
        for op, arg in spy.calls
        if op == "get" and any(k.startswith(keys.MUTEX_LOCKS) for k in arg)
    ]
    assert mutex_reads == []
    for best in (
        await ada.get_best("standard", "xl"),
        await ada.get_best("standard"),
        await ada.get_agent_best(),
    ):
        assert best is not None and best.val_bpb == 0.98 and best.previous is not None
        assert best.previous.val_bpb == 0.99


async def test_a_personal_best_does_not_wait_for_the_track_mutex(
    swarm: Swarm, clock: FakeClock
) -> None:
    """While another agent holds the track's best mutex (live), a result that beats only
    its own agent's best still moves that personal best at once."""
    ada, _ = await spied(swarm, "ada", clock, mutex_wait_s=0.2)
    await ada.propose_best(keep(1, 0.95))  # the shared bests: 0.95
    held = slowpoke_holds(clock)
    mallory = await swarm.backend("mallory")
    name = keys.best_mutex_name("standard")
    await mallory.create([NewMemory(key=keys.mutex_lock_key(name, 999), value=encode_record(held))])
    bob, _ = await spied(swarm, "bob", clock, mutex_wait_s=0.2)
    d = await bob.propose_best(keep(2, 0.99, agent="bob"))
    assert d.agent_moved and not d.tier_moved and not d.global_moved
    best = await bob.get_agent_best()
    assert best is not None and best.val_bpb == 0.99
    with pytest.raises(MemoryStoreError, match="slowpoke"):  # shared bests: the track's mutex
        await bob.propose_best(keep(3, 0.94, agent="bob"))


async def test_a_mutex_released_by_someone_else_is_read(swarm: Swarm, clock: FakeClock) -> None:
    """The read of the top generation is skipped only for this client's own release: a
    generation another agent holds (live) on top keeps the mutex busy."""
    ada, _ = await spied(swarm, "ada", clock, mutex_wait_s=0.2)
    await ada.propose_best(keep(1, 0.99))
    name = keys.best_mutex_name("standard")
    gens = [
        keys.lock_generation(i.key)
        for i in await ada.backend.list_keys(keys.mutex_lock_prefix(name))
    ]
    top = max(g for g in gens if g is not None)
    held = slowpoke_holds(clock)
    mallory = await swarm.backend("mallory")
    await mallory.create(
        [NewMemory(key=keys.mutex_lock_key(name, top + 1), value=encode_record(held))]
    )
    with pytest.raises(MemoryStoreError, match="slowpoke"):
        await ada.propose_best(keep(2, 0.98))
    best = await ada.get_best("standard", "xl")
    assert best is not None and best.val_bpb == 0.99


async def test_recent_results_read_the_feed_not_the_history(swarm: Swarm, clock: FakeClock) -> None:
    """recent_results finds what was published since a time through the feed buckets:
    no listing of results/, and results of earlier hours are not read."""
    ada, _ = await spied(swarm, "ada", clock)
    for n in range(5):
        await ada.publish_result(keep(n, 1.0 + n / 100))
    clock.advance(3 * 3600)
    since = clock.now
    clock.advance(120)
    await ada.publish_result(keep(10, 0.97))
    bob, bob_spy = await spied(swarm, "bob", clock)
    found = await bob.recent_results(since, track="standard", tier="xl")
    assert [r.description for r in found] == ["change 10"]
    assert bob_spy.count("list_keys", keys.RESULTS) == 0
    assert bob_spy.count("list_keys") <= 2
    assert await bob.recent_results(since, track="smoke") == []


async def test_solo_check_lists_no_results(swarm: Swarm, clock: FakeClock) -> None:
    """The candidates' solo check sees another host's recent result through the feed, and
    never lists the whole results/ prefix."""
    ada, spy = await spied(swarm, "ada", clock)
    policy = TrustPolicy(solo_after_s=600.0)
    assert await ada.candidates.solo("standard", "xl", policy)
    bob, _ = await spied(swarm, "bob", clock)
    await bob.publish_result(keep(3, 1.01, agent="bob"))
    clock.advance(60)
    spy.reset()
    assert not await ada.candidates.solo("standard", "xl", policy)
    assert spy.count("list_keys", keys.RESULTS) == 0
    clock.advance(700)
    assert await ada.candidates.solo("standard", "xl", policy)


async def test_heartbeat_age_under_the_beacon_does_not_grow(swarm: Swarm, clock: FakeClock) -> None:
    """A claim kept by a beating beacon shows the beacon's last beat as its heartbeat (what
    swarm status prints); a beat stamped in the future (a clock an hour ahead) shows as now."""
    ada = await swarm.memory("ada", clock=clock, lease_s=90.0, heartbeat_s=30.0, sleep=no_sleep)
    ada.beacon = Beacon(ada)
    p, c = experiment(2)
    won = await ada.try_claim(
        parent_hash=p, code_hash=c, description="exp 2", track="standard", tier="xl"
    )
    assert won.claim is not None
    bob = await swarm.memory("bob", clock=clock)
    async with ada.heartbeating(won.claim):
        for _ in range(10):
            clock.advance(30)
            await ada.beacon.beat()
        (seen,) = await bob.live_claims()
        assert seen.heartbeat_at == clock.now and seen.claimed_at == clock.now - 300
        summary = await bob.analyze("standard")
        assert summary.live_claims[0].heartbeat_at == clock.now
        # the beacon's machine has a clock an hour ahead
        rec = {**ada.beacon.record(), "heartbeat_at": to_iso(clock.now + 3600)}
        await ada.backend.update(ada.beacon.key, encode_record(rec))
        (seen,) = await bob.live_claims()
        assert seen.heartbeat_at is not None and seen.heartbeat_at <= clock.now


async def test_racing_workers_of_one_agent_keep_the_winners_record(
    swarm: Swarm, clock: FakeClock
) -> None:
    """Two workers of one supervisor race for a released experiment: one wins, and its claim
    record (shared key of the agent) survives the loser; a loser to another agent leaves
    no record of its own."""
    import asyncio

    ada, _ = await spied(swarm, "ada", clock)
    p, c = experiment(7)

    async def claim(mem: SwarmMemory) -> object:
        return await mem.try_claim(
            parent_hash=p, code_hash=c, description="exp 7", track="standard", tier="xl"
        )

    for _ in range(3):
        first = await claim(ada)
        await ada.release(first.claim)  # type: ignore[attr-defined]
        outcomes = await asyncio.gather(claim(ada), claim(ada))
        winners = [o for o in outcomes if o.won]  # type: ignore[attr-defined]
        assert len(winners) == 1
        mine = winners[0].claim  # type: ignore[attr-defined]
        stored = await ada.get_json([mine.key])
        assert stored[mine.key]["nonce"] == mine.nonce
        assert stored[mine.key]["lock_key"] == mine.lock_key
        await ada.release(mine)
    bob, _ = await spied(swarm, "bob", clock)
    held = await claim(bob)
    assert held.won  # type: ignore[attr-defined]
    lost = await claim(ada)
    assert not lost.won  # type: ignore[attr-defined]
    assert await ada.get_json([keys.claim_key("ada", "exp 7", p, c)]) == {}
