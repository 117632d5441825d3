"""Who confirms a candidate right now, read for many candidates at once: the cost does not
grow with the number of candidates or the size of the swarm, and a lock whose generations
are not where they were guessed (a racer bumped them) is still read right."""

from __future__ import annotations

from ns_support import FakeClock, Swarm, experiment, no_sleep
from spy import CallLog

from swarm import keys
from swarm.beacon import Beacon
from swarm.memory import NewMemory
from swarm.namespace import SwarmMemory
from swarm.records import encode_record, to_iso

LEASE = 90.0
SCOPE = {"track": "standard", "tier": "xl"}


async def confirm(mem: SwarmMemory, i: int):  # type: ignore[no-untyped-def]
    p, c = experiment(i)
    got = await mem.try_claim(
        parent_hash=p, code_hash=c, description=f"confirm {i}", kind="confirmation", **SCOPE
    )  # type: ignore[arg-type]
    assert got.won and got.claim is not None
    return got.claim


async def test_many_candidates_are_read_in_a_few_calls(swarm: Swarm, clock: FakeClock) -> None:
    """Thirty candidates, ten of them being confirmed (two past their own lease, kept by
    their beacon), one confirmed and released: right answers in at most three calls."""
    ada = await swarm.memory("ada", clock=clock, lease_s=LEASE, heartbeat_s=30.0, sleep=no_sleep)
    ada.beacon = Beacon(ada)
    busy = {i: await confirm(ada, i) for i in range(10)}
    done = await confirm(ada, 10)
    await ada.release(done, result_key="results/ada--confirm-10--abc123")
    for i in (0, 1):
        async with ada.heartbeating(busy[i]):
            clock.advance(LEASE + 1)
            await ada.beacon.beat()
    for i in range(2, 10):  # the others beat on their own record (no beacon): fresh
        await ada.heartbeat(busy[i])
    spy = CallLog(await swarm.backend("bob"))
    bob = SwarmMemory(spy, agent_id="bob", host="bob-host", clock=clock, lease_s=LEASE)  # type: ignore[arg-type]
    wanted = [(*experiment(i), 1) for i in range(30)]
    found = await bob.confirming_now(wanted, **SCOPE)
    holders = {i: found[experiment(i)] for i in range(30)}
    assert {i for i, h in holders.items() if h is not None} == set(range(10))
    assert all(holders[i].agent_id == "ada" for i in range(10))  # type: ignore[union-attr]
    assert len(spy.calls) <= 3, spy.calls
    assert spy.count("list_keys") == 0


async def test_a_top_far_above_the_guess_is_found(swarm: Swarm, clock: FakeClock) -> None:
    """A racer took generation after generation far above where the runs say the top is:
    the lock is looked at alone and its holder found; a lock whose generations are all
    released is free."""
    p, c = experiment(1)
    prefix = keys.confirmation_lock_prefix(p, c, **SCOPE)
    mallory = await swarm.backend("mallory")
    live = {
        "agent_id": "mallory",
        "heartbeat_at": to_iso(clock.now),
        "lease_s": 30,
        "nonce": "m",
        "status": "claimed",
    }
    gone = {**live, "status": "released", "released_at": to_iso(clock.now)}
    await mallory.create(
        [NewMemory(key=f"{prefix}g{g:06d}", value=encode_record(gone)) for g in range(1, 7)]
        + [NewMemory(key=f"{prefix}g000007", value=encode_record(live))]
    )
    p2, c2 = experiment(2)
    prefix2 = keys.confirmation_lock_prefix(p2, c2, **SCOPE)
    await mallory.create(
        [NewMemory(key=f"{prefix2}g{g:06d}", value=encode_record(gone)) for g in range(1, 4)]
    )
    bob = await swarm.memory("bob", clock=clock, lease_s=LEASE)
    found = await bob.confirming_now([(p, c, 1), (p2, c2, 2)], **SCOPE)
    holder = found[(p, c)]
    assert holder is not None and holder.agent_id == "mallory"
    assert found[(p2, c2)] is None
    clock.advance(31)  # mallory's own lease ran out and no beacon keeps it
    assert (await bob.confirming_now([(p, c, 1)], **SCOPE))[(p, c)] is None
