"""Candidate bests over a real store (SQLite file, and the hub over HTTP with its permissions):
nothing is a best until another agent on another host reproduced it."""

from __future__ import annotations

import hashlib
import sys
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "namespace"))
from ns_support import BACKENDS, FakeClock, Swarm, no_sleep, open_swarm

from swarm.namespace import SwarmMemory
from swarm.records import Claim, Result
from swarm.verify.candidates import TrustPolicy, verification_of

TRACK, TIER = "smoke", "cpu"
POLICY = TrustPolicy(k_sigma=3.0, sigma=0.01, solo_after_s=600.0)
BASE = hashlib.sha256(b"baseline").hexdigest()


def code(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


def result(mem: SwarmMemory, name: str, val: float, seed: int = 42, parent: str = "") -> Result:
    return Result(
        agent_id=mem.agent_id,
        host=mem.host,
        status="keep",
        description=name,
        train_py=f"# {name}\n",
        val_bpb=val,
        track=TRACK,
        vram_tier=TIER,
        parent_hash=parent,
        code_hash=code(name),
        seed=seed,
        completed_at=mem.now(),
    )


@pytest.fixture(params=BACKENDS)
async def swarm(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Swarm]:
    async with open_swarm(request.param, tmp_path) as s:
        yield s


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


async def agent(swarm: Swarm, name: str, host: str, clock: FakeClock) -> SwarmMemory:
    return SwarmMemory(
        await swarm.backend(name),
        agent_id=name,
        host=host,
        clock=clock,
        sleep=no_sleep,
        embed_records=False,
    )


async def verified_baseline(a: SwarmMemory, b: SwarmMemory, val: float = 3.0) -> None:
    """The baseline: A's run, confirmed by B."""
    assert (await a.candidates.propose(result(a, "baseline", val), POLICY)).candidate
    decision = await b.candidates.confirm(result(b, "baseline", val + 0.001, seed=7), POLICY)
    assert decision.moved, decision.reason


async def test_improvement_is_a_candidate_until_another_agent_confirms(
    swarm: Swarm, clock: FakeClock
) -> None:
    """A's better result leaves the best alone; B's agreeing run makes it the verified best."""
    a = await agent(swarm, "alice", "host-a", clock)
    b = await agent(swarm, "bob", "host-b", clock)
    await verified_baseline(a, b)
    decision = await a.candidates.propose(result(a, "better", 2.9, parent=BASE), POLICY)
    assert decision.candidate and not decision.moved
    best = await a.get_best(TRACK, TIER)
    assert best is not None and best.val_bpb == pytest.approx(3.0005)
    assert [c.result.description for c in await b.candidates.open_for(TRACK, TIER, POLICY)] == [
        "better"
    ]
    decision = await b.candidates.confirm(result(b, "better", 2.905, seed=99, parent=BASE), POLICY)
    assert decision.moved and decision.tier_moved and decision.global_moved
    best = await b.get_best(TRACK, TIER)
    assert best is not None and best.val_bpb == pytest.approx(2.9025)
    assert verification_of(best) == "verified"
    assert {c["agent_id"] for c in best.confirmations} == {"alice", "bob"}
    assert best.previous is not None and best.previous.val_bpb == pytest.approx(3.0005)
    cand = (await a.candidates.listing(TRACK, TIER))[-1]
    assert cand.state == "verified" and not cand.open
    assert (await a.candidates.trust(TRACK, "alice")).streak == 2
    assert len((await a.candidates.noise(TRACK, TIER)).pairs) == 2


async def test_disagreeing_confirmation_refutes_and_flags_the_author(
    swarm: Swarm, clock: FakeClock
) -> None:
    """A lie by 0.2 is refuted with both values; the best stays; A's trust resets and A's
    other open candidate becomes suspicious."""
    a = await agent(swarm, "alice", "host-a", clock)
    b = await agent(swarm, "bob", "host-b", clock)
    await verified_baseline(a, b)
    await a.candidates.propose(result(a, "lie", 2.8, parent=BASE), POLICY)
    await a.candidates.propose(result(a, "other", 2.95, parent=BASE), POLICY)
    decision = await b.candidates.confirm(result(b, "lie", 3.0, seed=5, parent=BASE), POLICY)
    assert decision.refuted and not decision.moved
    assert "2.800000" in decision.reason and "3.000000" in decision.reason
    best = await b.get_best(TRACK, TIER)
    assert best is not None and best.val_bpb == pytest.approx(3.0005)
    by_name = {c.result.description: c for c in await b.candidates.listing(TRACK, TIER)}
    assert by_name["lie"].state == "refuted"
    assert [r.val_bpb for r in by_name["lie"].runs] == [2.8, 3.0]
    assert by_name["other"].suspicious and by_name["other"].open
    trust = await b.candidates.trust(TRACK, "alice")
    assert trust.streak == 0 and trust.refuted == 1
    assert [c.result.description for c in await b.candidates.open_for(TRACK, TIER, POLICY)] == [
        "other"
    ]


async def test_solo_self_verification_then_independent_upgrade(
    swarm: Swarm, clock: FakeClock
) -> None:
    """Alone, A confirms its own candidate (self-verified best); B later upgrades it."""
    a = await agent(swarm, "alice", "host-a", clock)
    await a.candidates.propose(result(a, "baseline", 3.0), POLICY)
    assert [c.result.description for c in await a.candidates.open_for(TRACK, TIER, POLICY)] == [
        "baseline"
    ]
    decision = await a.candidates.confirm(result(a, "baseline", 3.002, seed=43), POLICY)
    assert decision.moved
    best = await a.get_best(TRACK, TIER)
    assert verification_of(best) == "self-verified"
    b = await agent(swarm, "bob", "host-b", clock)
    assert [c.state for c in await b.candidates.open_for(TRACK, TIER, POLICY)] == ["self-verified"]
    decision = await b.candidates.confirm(result(b, "baseline", 3.001, seed=44), POLICY)
    assert decision.moved
    best = await b.get_best(TRACK, TIER)
    assert verification_of(best) == "verified" and best is not None
    assert best.val_bpb == pytest.approx(3.001)
    assert len(best.confirmations) == 3


async def test_refuted_self_verified_best_reverts_to_the_previous(
    swarm: Swarm, clock: FakeClock
) -> None:
    """A self-verified best that an independent run refutes is withdrawn: the previous returns."""
    a = await agent(swarm, "alice", "host-a", clock)
    b = await agent(swarm, "bob", "host-b", clock)
    await verified_baseline(a, b)
    clock.advance(3600)  # bob has gone quiet: alice is solo
    await a.candidates.propose(result(a, "lucky", 2.9, parent=BASE), POLICY)
    assert (await a.candidates.confirm(result(a, "lucky", 2.9, seed=1, parent=BASE), POLICY)).moved
    assert verification_of(await a.get_best(TRACK, TIER)) == "self-verified"
    decision = await b.candidates.confirm(result(b, "lucky", 3.0, seed=2, parent=BASE), POLICY)
    assert decision.refuted
    best = await b.get_best(TRACK, TIER)
    assert best is not None and best.val_bpb == pytest.approx(3.0005)
    assert best.result.extra.get("withdrawn", "").endswith(code("lucky")[:12])
    glob = await b.get_best(TRACK)
    assert glob is not None and glob.val_bpb == pytest.approx(3.0005)


async def test_refuted_first_best_falls_back_to_the_best_confirmed_candidate(
    swarm: Swarm, clock: FakeClock
) -> None:
    """A lie confirmed before anything else became the scope's first best (nothing before
    it); refuted, the best goes to the candidate whose runs agreed, not stays the lie."""
    a = await agent(swarm, "alice", "host-a", clock)
    assert (await a.candidates.propose(result(a, "baseline", 3.0), POLICY)).candidate
    assert (await a.candidates.propose(result(a, "lie", 2.5, parent=BASE), POLICY)).candidate
    assert (await a.candidates.confirm(result(a, "lie", 2.5, seed=1, parent=BASE), POLICY)).moved
    first = await a.get_best(TRACK, TIER)
    assert first is not None and first.previous is None
    late = await a.candidates.confirm(result(a, "baseline", 3.002, seed=1), POLICY)
    assert not late.moved  # superseded by the lie
    b = await agent(swarm, "bob", "host-b", clock)
    decision = await b.candidates.confirm(result(b, "lie", 3.1, seed=2, parent=BASE), POLICY)
    assert decision.refuted
    for tier in (TIER, None):
        best = await b.get_best(TRACK, tier)
        assert best is not None and best.code_hash == code("baseline"), tier
        assert best.val_bpb == pytest.approx(3.001)
        assert verification_of(best) == "self-verified"  # only alice ran it: it says so
        assert best.result.extra.get("withdrawn", "").endswith(code("lie")[:12])
        assert len(best.confirmations) == 2


async def test_refuted_first_best_with_nothing_confirmed_is_removed(
    swarm: Swarm, clock: FakeClock
) -> None:
    """A refuted lie that was the scope's only confirmed result leaves no best behind (and
    the next honest result is judged against nothing, not against the lie)."""
    a = await agent(swarm, "alice", "host-a", clock)
    assert (await a.candidates.propose(result(a, "lie", 2.5), POLICY)).candidate
    assert (await a.candidates.confirm(result(a, "lie", 2.5, seed=1), POLICY)).moved
    b = await agent(swarm, "bob", "host-b", clock)
    assert (await b.candidates.confirm(result(b, "lie", 3.1, seed=2), POLICY)).refuted
    assert await b.get_best(TRACK, TIER) is None
    assert await b.get_best(TRACK) is None
    honest = await b.candidates.propose(result(b, "honest", 3.05, parent=BASE), POLICY)
    assert honest.candidate, honest.reason


async def test_self_confirmation_is_refused_while_another_agent_is_live(
    swarm: Swarm, clock: FakeClock
) -> None:
    """With bob live in the tier, alice may not confirm her own candidate."""
    a = await agent(swarm, "alice", "host-a", clock)
    b = await agent(swarm, "bob", "host-b", clock)
    outcome = await b.try_claim(
        parent_hash=BASE,
        code_hash=code("bob-work"),
        description="bob works",
        track=TRACK,
        tier=TIER,
    )
    assert outcome.won and isinstance(outcome.claim, Claim)
    await a.candidates.propose(result(a, "mine", 3.0), POLICY)
    assert await a.candidates.open_for(TRACK, TIER, POLICY) == []
    decision = await a.candidates.confirm(result(a, "mine", 3.0, seed=9), POLICY)
    assert not decision.moved and "another agent on another host" in decision.reason
    assert await a.get_best(TRACK, TIER) is None


async def test_second_name_on_the_same_host_is_not_independent(
    swarm: Swarm, clock: FakeClock
) -> None:
    """An attacker confirming its own lie under a second agent name on the same host fails."""
    liar = await agent(swarm, "mallory", "host-m", clock)
    sock = await agent(swarm, "mallory-2", "host-m", clock)
    honest = await agent(swarm, "bob", "host-b", clock)
    await honest.try_claim(
        parent_hash=BASE, code_hash=code("x"), description="x", track=TRACK, tier=TIER
    )
    await liar.candidates.propose(result(liar, "fake", 2.0), POLICY)
    decision = await sock.candidates.confirm(result(sock, "fake", 2.0, seed=3), POLICY)
    assert not decision.moved
    assert await liar.get_best(TRACK, TIER) is None


async def test_same_seed_is_not_a_confirmation(swarm: Swarm, clock: FakeClock) -> None:
    """A second run with the candidate's own seed confirms nothing."""
    a = await agent(swarm, "alice", "host-a", clock)
    b = await agent(swarm, "bob", "host-b", clock)
    await a.candidates.propose(result(a, "c", 3.0, seed=42), POLICY)
    decision = await b.candidates.confirm(result(b, "c", 3.0, seed=42), POLICY)
    assert not decision.moved and "another seed" in decision.reason


async def test_sigma_is_measured_from_confirmations(swarm: Swarm, clock: FakeClock) -> None:
    """After eight agreeing pairs the measured sigma replaces the default (0.02 on smoke),
    but never drops below half of it."""
    a = await agent(swarm, "alice", "host-a", clock)
    b = await agent(swarm, "bob", "host-b", clock)
    measured = replace(POLICY, sigma=0.0)
    for i in range(8):
        x = 3.0 - 0.05 * i
        y = x + 0.03 * (-1) ** i
        await a.candidates.propose(result(a, f"c{i}", x), measured)
        assert not (await a.candidates.noise(TRACK, TIER)).measured()
        assert (await b.candidates.confirm(result(b, f"c{i}", y, seed=i), measured)).moved
    noise = await a.candidates.noise(TRACK, TIER)
    assert noise.measured() and noise.sigma() == pytest.approx(0.03 / 2**0.5)
    assert replace(noise, pairs=((3.0, 3.0),) * 8).sigma() == pytest.approx(0.01)


async def test_adoption_modes(swarm: Swarm, clock: FakeClock) -> None:
    """verified: the verified best; any: also a better open candidate; trusted: only one by
    an agent with enough verified candidates in a row; never a suspicious one."""
    a = await agent(swarm, "alice", "host-a", clock)
    b = await agent(swarm, "bob", "host-b", clock)
    await verified_baseline(a, b)
    await a.candidates.propose(result(a, "open", 2.95, parent=BASE), POLICY)
    assert (await b.candidates.adoptable(TRACK, TIER, "verified")).code_hash == code("baseline")
    provisional = await b.candidates.adoptable(TRACK, TIER, "any")
    assert provisional.code_hash == code("open")
    assert provisional.result.extra["verification"] == "pending"
    assert (
        await b.candidates.adoptable(TRACK, TIER, "trusted", trusted_streak=2)
    ).code_hash == code("baseline")  # alice has one verified candidate so far
    assert (
        await b.candidates.adoptable(TRACK, TIER, "trusted", trusted_streak=1)
    ).code_hash == code("open")


async def test_next_confirmation_skips_one_being_confirmed(swarm: Swarm, clock: FakeClock) -> None:
    """A candidate someone else is confirming right now (a live claim) is not taken again;
    a fresh seed differs from every seed the candidate's runs used."""
    import random

    from swarm.verify.candidates import next_confirmation

    a = await agent(swarm, "alice", "host-a", clock)
    b = await agent(swarm, "bob", "host-b", clock)
    c = await agent(swarm, "carol", "host-c", clock)
    await a.candidates.propose(result(a, "cand", 3.0, seed=42), POLICY)
    found = await next_confirmation(
        b.candidates, TRACK, TIER, POLICY, own_only=False, rng=random.Random(1)
    )
    assert found is not None and found[1] != 42
    claim = await c.try_claim(
        parent_hash="",
        code_hash=code("cand"),
        description="cand",
        track=TRACK,
        tier=TIER,
        kind="confirmation",
    )
    assert claim.won and claim.claim is not None
    assert claim.claim.lock_key.startswith("locks/confirm/")
    assert (
        await next_confirmation(
            b.candidates, TRACK, TIER, POLICY, own_only=False, rng=random.Random(1)
        )
        is None
    )
    assert (
        await next_confirmation(
            b.candidates, TRACK, TIER, POLICY, own_only=True, rng=random.Random(1)
        )
        is None
    )


async def test_next_confirmation_skips_one_a_sibling_worker_confirms(
    swarm: Swarm, clock: FakeClock
) -> None:
    """A candidate another worker of the same machine (same agent and host) is confirming is
    not offered again; that machine's own experiment claim on the same code does not hide it."""
    import random

    from swarm.verify.candidates import next_confirmation

    a = await agent(swarm, "alice", "host-a", clock)
    b = await agent(swarm, "bob", "host-b", clock)
    await a.candidates.propose(result(a, "cand", 3.0, seed=42), POLICY)
    own_run = await b.try_claim(
        parent_hash="", code_hash=code("cand"), description="cand", track=TRACK, tier=TIER
    )
    assert own_run.won
    found = await next_confirmation(
        b.candidates, TRACK, TIER, POLICY, own_only=False, rng=random.Random(1)
    )
    assert found is not None and found[0].result.code_hash == code("cand")
    sibling = await b.try_claim(
        parent_hash="",
        code_hash=code("cand"),
        description="cand",
        track=TRACK,
        tier=TIER,
        kind="confirmation",
    )
    assert sibling.won
    assert (
        await next_confirmation(
            b.candidates, TRACK, TIER, POLICY, own_only=False, rng=random.Random(1)
        )
        is None
    )


async def test_next_confirmation_skips_ones_own_running_confirmation(
    swarm: Swarm, clock: FakeClock
) -> None:
    """Alone, this machine confirms its own candidate once: while its confirmation claim is
    live the candidate is not offered again (it would only lose the claim to itself)."""
    import random

    from swarm.verify.candidates import next_confirmation

    a = await agent(swarm, "alice", "host-a", clock)
    await a.candidates.propose(result(a, "mine", 3.0, seed=42), POLICY)
    found = await next_confirmation(
        a.candidates, TRACK, TIER, POLICY, own_only=False, rng=random.Random(1)
    )
    assert found is not None and found[0].result.description == "mine"
    claim = await a.try_claim(
        parent_hash="",
        code_hash=code("mine"),
        description="mine",
        track=TRACK,
        tier=TIER,
        kind="confirmation",
    )
    assert claim.won and claim.claim is not None
    assert (
        await next_confirmation(
            a.candidates, TRACK, TIER, POLICY, own_only=False, rng=random.Random(1)
        )
        is None
    )
    await a.release(claim.claim)
    assert (
        await next_confirmation(
            a.candidates, TRACK, TIER, POLICY, own_only=False, rng=random.Random(1)
        )
        is not None
    )


async def test_candidate_listing_reads_only_changed_records(swarm: Swarm, clock: FakeClock) -> None:
    """A second listing reads no record whose updated_at is unchanged, and sees a change
    another agent made (a confirmation) at once."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "namespace"))
    from spy import CallLog

    a = await agent(swarm, "alice", "host-a", clock)
    b = await agent(swarm, "bob", "host-b", clock)
    await a.candidates.propose(result(a, "one", 3.0, seed=1), POLICY)
    await a.candidates.propose(result(a, "two", 3.01, seed=2), POLICY)
    spy = CallLog(b.backend)
    b.backend = spy  # type: ignore[assignment]
    first = await b.candidates.listing(TRACK, TIER)
    assert sorted(c.result.description for c in first) == ["one", "two"]
    spy.reset()
    again = await b.candidates.listing(TRACK, TIER)
    assert [c.key for c in again] == [c.key for c in first]
    assert spy.count("get") == 0
    assert len(await a.candidates.listing(TRACK, TIER)) == 2  # alice's own cache is filled
    clock.advance(5)
    decision = await b.candidates.confirm(result(b, "one", 3.001, seed=9), POLICY)
    assert decision.moved
    states = {c.result.description: c.state for c in await a.candidates.listing(TRACK, TIER)}
    assert states.get("one", "verified") == "verified" and states["two"] == "pending"


async def test_a_cached_listing_never_offers_a_resolved_candidate(
    swarm: Swarm, clock: FakeClock
) -> None:
    """With a listing allowed to be a minute old, a candidate confirmed by someone else
    since is not offered (its record is read fresh before it is chosen), and the listing
    itself is not made again within the minute."""
    import random

    from spy import CallLog

    from swarm.verify.candidates import next_confirmation

    a = await agent(swarm, "alice", "host-a", clock)
    b = await agent(swarm, "bob", "host-b", clock)
    spy = CallLog(await swarm.backend("carol"))
    c = SwarmMemory(spy, agent_id="carol", host="host-c", clock=clock, embed_records=False)  # type: ignore[arg-type]
    await a.candidates.propose(result(a, "cand", 3.0, seed=42), POLICY)
    first = await next_confirmation(
        c.candidates, TRACK, TIER, POLICY, own_only=False, rng=random.Random(1), max_age_s=60
    )
    assert first is not None and first[0].result.code_hash == code("cand")
    assert (await b.candidates.confirm(result(b, "cand", 3.0, seed=7), POLICY)).moved
    clock.advance(10)
    spy.calls.clear()
    again = await next_confirmation(
        c.candidates, TRACK, TIER, POLICY, own_only=False, rng=random.Random(1), max_age_s=60
    )
    assert again is None
    assert spy.count("list_keys", "best/pending") == 0


async def test_a_candidate_written_here_is_offered_here_at_once(
    swarm: Swarm, clock: FakeClock
) -> None:
    """The listing cache and the "nothing to confirm" memo hide other machines' new
    candidates for a while, never this machine's own: alone, alice confirms her new
    candidate on the next look, not a cache period later."""
    import random

    from swarm.verify.candidates import next_confirmation

    a = await agent(swarm, "alice", "host-a", clock)

    async def look() -> object:
        return await next_confirmation(
            a.candidates, TRACK, TIER, POLICY, own_only=False, rng=random.Random(1), max_age_s=60
        )

    assert await look() is None  # nothing yet: the memo is set, the empty listing cached
    clock.advance(1)
    assert (await a.candidates.propose(result(a, "mine", 3.0), POLICY)).candidate
    found = await look()
    assert found is not None and found[0].result.code_hash == code("mine")  # type: ignore[index]


async def test_machines_spread_over_open_candidates(swarm: Swarm, clock: FakeClock) -> None:
    """Several open candidates: machines with different seeds do not all pick the oldest
    one, and a candidate this machine lost the confirmation claim of is not offered again
    while the other agent's lease runs."""
    import random

    from swarm.verify.candidates import next_confirmation

    a = await agent(swarm, "alice", "host-a", clock)
    b = await agent(swarm, "bob", "host-b", clock)
    for name in ("c1", "c2", "c3"):
        await a.candidates.propose(result(a, name, 3.0, seed=42), POLICY)
        clock.advance(1)
    picks = set()
    for seed in range(12):
        found = await next_confirmation(
            b.candidates, TRACK, TIER, POLICY, own_only=False, rng=random.Random(seed)
        )
        assert found is not None
        picks.add(found[0].result.code_hash)
    assert len(picks) >= 2
    for name in ("c1", "c2"):
        b.candidates.confirmed_elsewhere("", code(name), 60.0)
    for seed in range(6):
        found = await next_confirmation(
            b.candidates, TRACK, TIER, POLICY, own_only=False, rng=random.Random(seed)
        )
        assert found is not None and found[0].result.code_hash == code("c3")
    clock.advance(61)
    found = await next_confirmation(
        b.candidates, TRACK, TIER, POLICY, own_only=False, rng=random.Random(0)
    )
    assert found is not None
