"""An experiment is run once: a published experiment's lock is done for good, a claim stays
held by its supervisor's beacon from claim to release (also while it waits for a GPU and
while its result is published), and a confirmation claim never shares the original's record.
Written as the racer that has not yet seen the result would try it."""

from __future__ import annotations

import pytest
from ns_support import FakeClock, Swarm, experiment, no_sleep

from swarm import keys
from swarm.beacon import Beacon
from swarm.errors import TransportError
from swarm.namespace import SwarmMemory
from swarm.records import DONE, Claim, decode_record

LEASE = 90.0
SCOPE = {"track": "standard", "tier": "xl"}


async def claim(mem: SwarmMemory, i: int, **kw: object):  # type: ignore[no-untyped-def]
    p, c = experiment(i)
    return await mem.try_claim(
        parent_hash=p, code_hash=c, description=f"experiment {i}", **SCOPE, **kw
    )  # type: ignore[arg-type]


async def beaconed(swarm: Swarm, agent: str, clock: FakeClock) -> SwarmMemory:
    mem = await swarm.memory(agent, clock=clock, lease_s=LEASE, heartbeat_s=30.0, sleep=no_sleep)
    mem.beacon = Beacon(mem)
    return mem


async def lock_record(mem: SwarmMemory, c: Claim) -> dict[str, object]:
    got = await mem.backend.get([c.lock_key])
    return decode_record(c.lock_key, got[c.lock_key].value)


async def test_a_published_experiment_is_never_claimed_again(
    swarm: Swarm, clock: FakeClock
) -> None:
    """Released with its result key, the lock reads done: another agent loses the claim now and
    an hour later, and learns who ran it."""
    ada = await swarm.memory("ada", clock=clock, lease_s=LEASE)
    bob = await swarm.memory("bob", clock=clock, lease_s=LEASE)
    won = (await claim(ada, 1)).claim
    assert won is not None
    await ada.release(won, result_key="results/ada--experiment-1--abc123")
    rec = await lock_record(ada, won)
    assert rec["status"] == DONE and rec["result_key"] == "results/ada--experiment-1--abc123"
    for wait in (0.0, 3600.0):
        clock.advance(wait)
        lost = await claim(bob, 1)
        assert not lost.won and lost.holder is not None and lost.holder.agent_id == "ada"
        assert lost.reason == "done by ada"
    # nor by the author itself, nor through a takeover of its own "stale" session
    again = await claim(await swarm.memory("ada", ada.backend, clock=clock, lease_s=LEASE), 1)
    assert not again.won


async def test_a_released_generation_above_a_done_one_does_not_free_the_experiment(
    swarm: Swarm, clock: FakeClock
) -> None:
    """Written as the race the 1,000-GPU simulation showed: ada's claim looked dead (her
    store was slow), bob took it over, ada's run finished and its done release landed on
    her generation, bob gave his generation back unrun. Carol, seeing only a released top,
    wins the next generation -- and must learn the experiment is done, not run it again;
    her generation is marked done so that dave loses at once."""
    ada = await swarm.memory("ada", clock=clock, lease_s=LEASE)
    bob = await swarm.memory("bob", clock=clock, lease_s=LEASE)
    carol = await swarm.memory("carol", clock=clock, lease_s=LEASE)
    dave = await swarm.memory("dave", clock=clock, lease_s=LEASE)
    first = (await claim(ada, 7)).claim
    assert first is not None
    clock.advance(LEASE + 1)
    second = (await claim(bob, 7)).claim
    assert second is not None and second.lock_key != first.lock_key  # a takeover
    await ada.release(first, result_key="results/ada--experiment-7--abc123")
    await bob.release(second)  # bob never ran it
    lost = await claim(carol, 7)
    assert not lost.won and lost.reason == "done by ada"
    third = keys.generation_key(first.lock_key[: first.lock_key.rfind("/g") + 1], 3)
    rec = decode_record(third, (await carol.backend.get([third]))[third].value)
    assert rec["status"] == DONE and rec["result_key"] == "results/ada--experiment-7--abc123"
    again = await claim(dave, 7)
    assert not again.won and again.reason.startswith("done by")
    assert await carol.live_claims() == []


async def test_a_run_that_did_not_finish_frees_the_experiment(swarm: Swarm) -> None:
    """Released without a result (stopped, infrastructure failure), the next claimer wins."""
    ada = await swarm.memory("ada")
    bob = await swarm.memory("bob")
    won = (await claim(ada, 2)).claim
    assert won is not None
    await ada.release(won)
    assert (await lock_record(ada, won))["status"] == "released"
    assert (await claim(bob, 2)).won


async def test_a_confirmation_lock_is_only_released(swarm: Swarm) -> None:
    """A confirmation with a result key still frees its lock: another agent may confirm too."""
    ada = await swarm.memory("ada")
    bob = await swarm.memory("bob")
    won = (await claim(ada, 3, kind="confirmation")).claim
    assert won is not None and won.lock_key.startswith(keys.CONFIRM_LOCKS)
    await ada.release(won, result_key="results/ada--confirm--1")
    assert (await lock_record(ada, won))["status"] == "released"
    assert (await claim(bob, 3, kind="confirmation")).won


async def test_a_confirmation_claim_keeps_its_own_record(swarm: Swarm) -> None:
    """Confirming its own experiment, an agent's two claims have two records: releasing the
    original leaves the confirmation's claim visible to others."""
    ada = await swarm.memory("ada")
    bob = await swarm.memory("bob")
    original = (await claim(ada, 4)).claim
    confirming = (await claim(ada, 4, kind="confirmation")).claim
    assert original is not None and confirming is not None
    assert original.key != confirming.key
    await ada.release(original)
    assert [c.key for c in await bob.live_claims()] == [confirming.key]


async def test_a_claim_ahead_stays_held_until_it_runs(swarm: Swarm, clock: FakeClock) -> None:
    """Claimed ahead and waiting for a GPU past its own lease, the beacon still keeps it; after
    its run and until its release as well; released, the beacon lets it go."""
    ada = await beaconed(swarm, "ada", clock)
    bob = await swarm.memory("bob", clock=clock, lease_s=LEASE)
    ahead = (await claim(ada, 5)).claim
    assert ahead is not None and ada.beacon is not None
    for _ in range(5):  # 150 s waiting for the GPU, the beacon beating
        clock.advance(30)
        await ada.beacon.beat()
    assert not (await claim(bob, 5)).won
    async with ada.heartbeating(ahead):
        clock.advance(30)
        await ada.beacon.beat()
    for _ in range(4):  # publishing slowly after the run
        clock.advance(30)
        await ada.beacon.beat()
    assert not (await claim(bob, 5)).won
    assert ahead.lock_key in ada.beacon.holding
    await ada.release(ahead)
    assert ahead.lock_key not in ada.beacon.holding
    assert (await claim(bob, 5)).won


async def test_a_forgotten_claim_is_let_go_after_two_leases(swarm: Swarm, clock: FakeClock) -> None:
    """A won claim that never runs nor is released is dropped from the beacon after two leases
    (a lost task must not block an experiment for the life of the supervisor)."""
    ada = await beaconed(swarm, "ada", clock)
    bob = await swarm.memory("bob", clock=clock, lease_s=LEASE)
    forgotten = (await claim(ada, 6)).claim
    assert forgotten is not None and ada.beacon is not None
    for _ in range(int(2 * LEASE / 30) + 1):
        clock.advance(30)
        await ada.beacon.beat()
    assert forgotten.lock_key not in ada.beacon.holding
    clock.advance(LEASE + 1)
    assert (await claim(bob, 6)).won


async def test_a_slow_publication_keeps_the_claim(swarm: Swarm, clock: FakeClock) -> None:
    """A run that ended but whose result waits longer than two leases to be published (a
    busy best mutex) is still held: the racer loses until the release marks it done."""
    ada = await beaconed(swarm, "ada", clock)
    bob = await swarm.memory("bob", clock=clock, lease_s=LEASE)
    won = (await claim(ada, 7)).claim
    assert won is not None and ada.beacon is not None
    async with ada.heartbeating(won):
        clock.advance(30)
        await ada.beacon.beat()
    for _ in range(int(5 * LEASE / 30)):  # five leases judging and publishing
        clock.advance(30)
        await ada.beacon.beat()
        assert not (await claim(bob, 7)).won
    await ada.release(won, result_key="results/ada--experiment-7--abc123")
    clock.advance(2 * LEASE)
    lost = await claim(bob, 7)
    assert not lost.won and lost.reason == "done by ada"


class _FlakyUpdates:
    """A client of the same store whose updates fail while ``down`` (a lost connection)."""

    def __init__(self, inner: object) -> None:
        self.inner = inner
        self.down = False

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    async def update(self, *args: object, **kwargs: object) -> object:
        if self.down:
            raise TransportError("connection reset (test)")
        return await self.inner.update(*args, **kwargs)  # type: ignore[attr-defined]


async def test_a_failed_release_keeps_the_claim_until_it_is_retried(
    swarm: Swarm, clock: FakeClock
) -> None:
    """When the release of a published experiment fails, the beacon keeps the claim live
    (a racer cannot run it while the release waits for its retry); the retry ends it done."""
    flaky = _FlakyUpdates(await swarm.backend("ada"))
    ada = await swarm.memory(
        "ada", flaky, clock=clock, lease_s=LEASE, heartbeat_s=30.0, sleep=no_sleep
    )
    ada.beacon = Beacon(ada)
    bob = await swarm.memory("bob", clock=clock, lease_s=LEASE)
    won = (await claim(ada, 8)).claim
    assert won is not None
    async with ada.heartbeating(won):  # the run
        clock.advance(30)
        await ada.beacon.beat()
    flaky.down = True
    with pytest.raises(TransportError):
        await ada.release(won, result_key="results/ada--experiment-8--abc123")
    assert won.lock_key in ada.beacon.holding
    flaky.down = False
    for _ in range(int(3 * LEASE / 30)):
        clock.advance(30)
        await ada.beacon.beat()
        assert not (await claim(bob, 8)).won
    await ada.release(won, result_key="results/ada--experiment-8--abc123")
    assert won.lock_key not in ada.beacon.holding
    assert (await claim(bob, 8)).reason == "done by ada"


async def test_a_release_that_fails_for_good_is_let_go(swarm: Swarm, clock: FakeClock) -> None:
    """let_go stops keeping a claim whose release cannot succeed: its lease then frees it."""
    ada = await beaconed(swarm, "ada", clock)
    bob = await swarm.memory("bob", clock=clock, lease_s=LEASE)
    won = (await claim(ada, 9)).claim
    assert won is not None and ada.beacon is not None
    ada.let_go(won)
    assert won.lock_key not in ada.beacon.holding
    clock.advance(LEASE + 1)
    assert (await claim(bob, 9)).won
