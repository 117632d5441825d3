"""One heartbeat per supervisor (swarm.beacon): claims stay held past their own lease while
the beacon beats, are taken over once it stops, a forged beacon keeps nothing, and a
result that beats no best takes no lock."""

from __future__ import annotations

import hashlib

from ns_support import FakeClock, Swarm, experiment, no_sleep
from spy import CallLog

from swarm import keys
from swarm.beacon import Beacon
from swarm.memory import NewMemory
from swarm.namespace import SwarmMemory
from swarm.records import Result, encode_record, to_iso

LEASE = 90.0


async def beaconed(swarm: Swarm, agent: str, clock: FakeClock) -> SwarmMemory:
    mem = await swarm.memory(agent, clock=clock, lease_s=LEASE, heartbeat_s=30.0, sleep=no_sleep)
    mem.beacon = Beacon(mem)
    return mem


async def claim(mem: SwarmMemory, i: int = 1) -> object:
    p, c = experiment(i)
    out = await mem.try_claim(
        parent_hash=p, code_hash=c, description=f"exp {i}", track="standard", tier="xl"
    )
    return out


async def test_a_beating_beacon_keeps_a_claim_past_its_own_lease(
    swarm: Swarm, clock: FakeClock
) -> None:
    """Ten minutes after claiming, with beats only on the beacon, the claim is still held."""
    ada = await beaconed(swarm, "ada", clock)
    bob = await swarm.memory("bob", clock=clock, lease_s=LEASE, heartbeat_s=30.0)
    won = await claim(ada)
    assert won.won  # type: ignore[attr-defined]
    async with ada.heartbeating(won.claim) as handle:  # type: ignore[attr-defined]
        for _ in range(20):
            clock.advance(30)
            await ada.beacon.beat()  # type: ignore[union-attr]
        lost = await claim(bob)
        assert not lost.won and lost.holder.agent_id == "ada"  # type: ignore[attr-defined]
        assert [c.agent_id for c in await bob.live_claims()] == ["ada"]
        assert not handle.lost and handle.beats == 20
        # the beacon went silent (the machine died): after its lease the claim is free
        clock.advance(LEASE + 1)
        taken = await claim(bob)
        assert taken.won  # type: ignore[attr-defined]
        assert await bob.live_claims() != [] and (await bob.live_claims())[0].agent_id == "bob"
        await ada.beacon.check_lost()  # type: ignore[union-attr]
        assert handle.lost


async def test_one_beacon_write_per_beat_for_any_number_of_claims(
    swarm: Swarm, clock: FakeClock
) -> None:
    """Three held claims cost one write per beat, plus one read every check_every beats."""
    spy = CallLog(await swarm.backend("ada"))
    ada = SwarmMemory(
        spy,
        agent_id="ada",
        host="h",
        clock=clock,
        lease_s=LEASE,  # type: ignore[arg-type]
        heartbeat_s=30.0,
        embed_records=False,
        sleep=no_sleep,
    )
    ada.beacon = Beacon(ada, check_every=5)
    claims = [await claim(ada, i) for i in range(3)]
    async with (
        ada.heartbeating(claims[0].claim),
        ada.heartbeating(claims[1].claim),
        ada.heartbeating(claims[2].claim),
    ):  # type: ignore[attr-defined]
        spy.reset()
        for _ in range(10):
            clock.advance(30)
            await ada.beacon.beat()
    assert spy.count("update") == 10 - 1 + spy.count("create")  # the first beat creates it
    assert spy.count("get") == 2


async def test_a_forged_beacon_keeps_nothing(swarm: Swarm, clock: FakeClock) -> None:
    """A beacon of another session, one not listing the lock, or one claiming an endless lease
    does not keep a dead lock."""
    ada = await beaconed(swarm, "ada", clock)
    won = await claim(ada)
    lock = won.claim.lock_key  # type: ignore[attr-defined]
    mallory = await swarm.backend("mallory")
    bob = await swarm.memory("bob", clock=clock, lease_s=LEASE, heartbeat_s=30.0)
    base = {
        "agent_id": "ada",
        "host": "test-host",
        "session": ada.session,
        "lease_s": LEASE,
        "holding": [lock],
        "kind": "beacon",
    }
    clock.advance(LEASE + 1)
    forged = [
        {**base, "session": "not-adas"},
        {**base, "holding": ["locks/exp/other/g000001"]},
        {**base, "holding": "everything"},
    ]
    key = ada.beacon.key  # type: ignore[union-attr]
    for i, rec in enumerate(forged):
        rec["heartbeat_at"] = to_iso(clock())
        if i == 0:
            await mallory.create([NewMemory(key=key, value=encode_record(rec))])
        else:
            await mallory.update(key, encode_record(rec))
        assert await bob.live_claims() == [], rec
    # an endless lease counts as ten minutes at most
    await mallory.update(
        key, encode_record({**base, "lease_s": 1e12, "heartbeat_at": to_iso(clock() - 601)})
    )
    assert await bob.live_claims() == []
    taken = await claim(bob)
    assert taken.won  # type: ignore[attr-defined]


async def test_a_result_that_beats_no_best_takes_no_lock(swarm: Swarm, clock: FakeClock) -> None:
    """propose_best of a worse result is one read: no mutex, no write."""
    ada = await swarm.memory("ada", clock=clock, sleep=no_sleep)
    parent = hashlib.sha256(b"parent").hexdigest()

    def res(n: int, val: float) -> Result:
        code = hashlib.sha256(f"code-{n}".encode()).hexdigest()
        return Result(
            agent_id="ada",
            status="keep",
            description=f"change {n}",
            train_py=f"X = {n}\n",
            val_bpb=val,
            vram_tier="xl",
            track="standard",
            parent_hash=parent,
            code_hash=code,
            seed=n,
        )

    assert (await ada.propose_best(res(1, 0.99))).moved
    spy = CallLog(ada.backend)
    ada.backend = spy  # type: ignore[assignment]
    d = await ada.propose_best(res(2, 0.995))
    assert not d.moved and not d.agent_moved and d.best is not None and d.best.val_bpb == 0.99
    assert d.best.train_py == "X = 1\n"
    assert [op for op, _ in spy.calls] == ["get"]
    assert spy.count("list_keys", keys.MUTEX_LOCKS) == 0


async def test_the_beacon_records_its_longest_gap(swarm: Swarm, clock: FakeClock) -> None:
    """max_gap_s is the longest time between two written beats (a starved beacon shows)."""
    ada = await beaconed(swarm, "ada", clock)
    assert ada.beacon is not None
    for step in (30.0, 30.0, 75.0, 30.0):
        await ada.beacon.beat()
        clock.advance(step)
    await ada.beacon.beat()
    assert ada.beacon.max_gap_s == 75.0


async def test_a_slow_store_delays_one_beat_not_every_later_one(
    swarm: Swarm, clock: FakeClock
) -> None:
    """The beacon beats every heartbeat_s from the start of one beat to the next: a write
    that takes 20 s of a 30 s beat leaves a 10 s pause (beats stay 30 s apart, not 50 s),
    and a write slower than a beat is followed by the next at once."""
    import asyncio

    mem = await swarm.memory("ada", clock=clock, lease_s=LEASE, heartbeat_s=30.0)
    delays = iter([20.0, 45.0, 5.0])
    pauses: list[float] = []

    class Slow(CallLog):
        async def update(self, *args: object, **kwargs: object) -> object:
            clock.advance(next(delays))
            return await self.inner.update(*args, **kwargs)

    async def sleep(seconds: float) -> None:
        pauses.append(seconds)
        clock.advance(seconds)
        if len(pauses) == 3:
            raise asyncio.CancelledError

    mem.backend = Slow(mem.backend)  # type: ignore[assignment]
    mem.sleep = sleep
    beacon = Beacon(mem)
    first = await mem.backend.create([NewMemory(key=beacon.key, value="{}", description="beacon")])
    assert first[0].ok
    try:
        await beacon.run()
    except asyncio.CancelledError:
        pass
    assert pauses == [10.0, 0.0, 25.0]
    assert beacon.beats == 3 and beacon.max_gap_s == 55.0  # written at 20, 75 and 110 s


async def test_a_beacon_on_a_slow_store_announces_a_longer_lease(
    swarm: Swarm, clock: FakeClock
) -> None:
    """Written as the racer: ada's beats take 40 s each to land on an overloaded store, so
    her last beat is 120 s old (past the 90 s lease) while she is alive. Her beacon
    announced a lease of 30 + 3 x 40 = 150 s: bob does not take her claim over at 120 s,
    does at 151 s; a store that answers quickly again brings the lease back to 90 s."""
    ada = await beaconed(swarm, "ada", clock)
    bob = await swarm.memory("bob", clock=clock, lease_s=LEASE, heartbeat_s=30.0)
    won = await claim(ada)
    assert won.won  # type: ignore[attr-defined]
    fast = ada.backend
    slow_s = [40.0]

    class Slow(CallLog):
        async def update(self, *args: object, **kwargs: object) -> object:
            clock.advance(slow_s[0])
            return await self.inner.update(*args, **kwargs)

    ada.backend = Slow(fast)  # type: ignore[assignment]
    beacon = ada.beacon
    assert beacon is not None
    async with ada.heartbeating(won.claim):  # type: ignore[attr-defined]
        await beacon.beat()  # the first slow write: the next record announces it
        assert beacon.lease_s == 150.0
        await beacon.beat()  # stamped when sent, landed 40 s later
        clock.advance(80)  # 120 s after the stamp
        lost = await claim(bob)
        assert not lost.won and lost.holder.agent_id == "ada"  # type: ignore[attr-defined]
        clock.advance(31)  # 151 s: ada is silent past the lease she announced
        assert (await claim(bob)).won  # type: ignore[attr-defined]
    slow_s[0] = 0.0
    for _ in range(10):
        await beacon.beat()
    assert beacon.lease_s == LEASE
