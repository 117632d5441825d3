"""Claims: atomic, leased, taken over after the lease, on the local store and on the hub."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from ns_support import FakeClock, Swarm, experiment, no_sleep

from swarm import keys
from swarm.memory._types import NewMemory
from swarm.namespace import SwarmMemory
from swarm.records import Claim, decode_record, encode_record, to_iso

AGENT_SCRIPT = str(Path(__file__).with_name("claim_agent.py"))
N_CLAIMERS = 64
N_EXPERIMENTS = 20
SCOPE = {"track": "standard", "tier": "xl"}  # the track and tier every claim here uses


async def claim(mem: SwarmMemory, i: int, **kw: object):  # type: ignore[no-untyped-def]
    p, c = experiment(i)
    return await mem.try_claim(
        parent_hash=p, code_hash=c, description=f"experiment {i}", track="standard", tier="xl", **kw
    )  # type: ignore[arg-type]


async def test_first_claim_wins_second_loses_naming_winner(swarm: Swarm) -> None:
    """The first claimer wins; a second agent loses and is told who holds it."""
    ada = await swarm.memory("ada")
    bob = await swarm.memory("bob")
    won = await claim(ada, 0, gpu_name="H100")
    assert won.won and won.claim is not None and won.holder is None
    assert won.claim.lock_key == keys.experiment_lock_key(*experiment(0), **SCOPE)
    lost = await claim(bob, 0)
    assert not lost.won and lost.claim is None
    assert lost.holder is not None and lost.holder.agent_id == "ada"
    assert lost.holder.gpu_name == "H100" and lost.holder.key == won.claim.key
    # the human-readable record is there for other clients, with the original fields
    rec = (await ada.backend.get([won.claim.key]))[won.claim.key]
    data = decode_record(won.claim.key, rec.value)
    assert data["agent_id"] == "ada" and data["description"] == "experiment 0"
    assert data["status"] == "claimed" and "claimed_at" in data and "heartbeat_at" in data
    assert rec.description.startswith("[autoresearch] Claim: ")


@pytest.mark.slow
async def test_64_coroutine_claimers_each_experiment_won_once(swarm: Swarm) -> None:
    """64 concurrent claimers in one process race for 20 experiments: each is won exactly once."""
    backends = [await swarm.backend(f"machine{m}") for m in range(4)]
    mems = [await swarm.memory(f"agent{j}", backends[j % 4]) for j in range(N_CLAIMERS)]
    wins: list[tuple[str, int]] = []

    async def run(mem: SwarmMemory) -> None:
        order = list(range(N_EXPERIMENTS))
        random.Random(mem.agent_id).shuffle(order)
        for i in order:
            out = await claim(mem, i)
            if out.won:
                wins.append((mem.agent_id, i))
            else:
                assert out.holder is not None

    async with asyncio.TaskGroup() as tg:
        for mem in mems:
            tg.create_task(run(mem))
    per_exp = Counter(i for _, i in wins)
    assert per_exp == Counter(range(N_EXPERIMENTS)), per_exp
    # the stored lock names the same winner as the race did
    winners = dict((i, a) for a, i in wins)
    locks = await mems[0].backend.get(
        [keys.experiment_lock_key(*experiment(i), **SCOPE) for i in range(N_EXPERIMENTS)]
    )
    for i in range(N_EXPERIMENTS):
        rec = decode_record("k", locks[keys.experiment_lock_key(*experiment(i), **SCOPE)].value)
        assert rec["agent_id"] == winners[i]
    live = await mems[0].live_claims()
    assert sorted(c.description for c in live) == sorted(
        f"experiment {i}" for i in range(N_EXPERIMENTS)
    )


def _spawn(args: list[str]) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen(
        [sys.executable, AGENT_SCRIPT, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _backend_args(swarm: Swarm, name: str) -> list[str]:
    if swarm.kind == "local":
        return ["--backend", "local", "--path", str(swarm.db)]
    return ["--backend", "hub", "--url", swarm.url, "--token", swarm.token(name)]


@pytest.mark.slow
async def test_64_claimers_in_separate_processes_each_experiment_won_once(swarm: Swarm) -> None:
    """4 processes x 16 claimers on one SQLite file / one hub: each experiment won exactly once."""
    go = swarm.tmp / "go"
    procs = [
        _spawn(
            [
                "race",
                *_backend_args(swarm, f"proc{k}"),
                "--prefix",
                f"proc{k}",
                "--claimers",
                str(N_CLAIMERS // 4),
                "--experiments",
                str(N_EXPERIMENTS),
                "--go",
                str(go),
            ]
        )
        for k in range(4)
    ]
    for p in procs:  # all open their stores, then start together
        ready = await asyncio.wait_for(asyncio.to_thread(p.stdout.readline), 120)  # type: ignore[union-attr]
        assert ready.strip() == "READY", f"claimer said {ready!r} (exit code {p.poll()})"
    go.write_text("go")
    wins: list[tuple[str, int]] = []
    for p in procs:
        out, err = await asyncio.to_thread(p.communicate, timeout=240)
        assert p.returncode == 0, err[-3000:]
        wins.extend((a, i) for a, i in json.loads(out.strip().splitlines()[-1])["wins"])
    per_exp = Counter(i for _, i in wins)
    assert per_exp == Counter(range(N_EXPERIMENTS)), per_exp
    assert len({a.split("-")[0] for a, _ in wins}) >= 2  # really a race between processes


@pytest.mark.slow
async def test_killed_claimer_lease_expires_then_claimed_again(swarm: Swarm) -> None:
    """A process killed mid-run keeps its claim only until its lease (2 s) runs out."""
    proc = _spawn(
        [
            "hold",
            *_backend_args(swarm, "doomed"),
            "--prefix",
            "doomed",
            "--lease",
            "2",
            "--index",
            "3",
        ]
    )
    try:
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 60)  # type: ignore[union-attr]
        assert line.startswith("CLAIMED "), f"claimer said {line!r} (exit code {proc.poll()})"
        me = await swarm.memory("survivor")
        # heartbeats keep it alive well past the 2 s lease
        await asyncio.sleep(3.0)
        out = await claim(me, 3)
        assert not out.won and out.holder is not None and out.holder.agent_id == "doomed"
    finally:
        proc.send_signal(signal.SIGKILL)
        await asyncio.to_thread(proc.wait, 10)
    killed_at = time.time()
    out = await claim(me, 3)
    assert not out.won  # still inside the lease right after the kill
    deadline = killed_at + 10
    while time.time() < deadline:
        out = await claim(me, 3)
        if out.won:
            break
        await asyncio.sleep(0.2)
    won_at = time.time()
    assert out.won and out.claim is not None, "experiment was not free again after the lease"
    assert keys.lock_generation(out.claim.lock_key) == 2
    # freed exactly by the lease: not before the dead holder's last heartbeat + 2 s
    first = keys.experiment_lock_key(*experiment(3), 1, **SCOPE)
    dead = Claim.from_json(
        first, decode_record(first, (await me.backend.get([first]))[first].value)
    )
    expiry = dead.expires_at()
    assert dead.agent_id == "doomed" and expiry is not None and dead.lease_s == 2.0
    assert expiry - 0.05 <= won_at <= expiry + 3.0


async def test_takeover_after_lease_with_injected_clock(swarm: Swarm, clock: FakeClock) -> None:
    """After the lease (fake clock) another agent takes over; the old holder learns it lost."""
    ada = await swarm.memory("ada", clock=clock, sleep=no_sleep)
    bob = await swarm.memory("bob", clock=clock, sleep=no_sleep)
    first = await claim(ada, 1)
    assert first.won and first.claim is not None
    clock.advance(89)
    assert not (await claim(bob, 1)).won
    clock.advance(2)  # 91 s without a heartbeat: dead
    second = await claim(bob, 1)
    assert second.won and second.claim is not None
    assert keys.lock_generation(second.claim.lock_key) == 2
    assert not await ada.heartbeat(first.claim)
    await ada.release(first.claim)  # a late release of the old holder changes nothing
    assert not (await claim(ada, 1)).won
    assert await bob.still_held(second.claim)


async def test_heartbeat_keeps_claim_alive(swarm: Swarm, clock: FakeClock) -> None:
    """A heartbeat within the lease pushes the expiry forward on both records."""
    ada = await swarm.memory("ada", clock=clock, sleep=no_sleep)
    bob = await swarm.memory("bob", clock=clock, sleep=no_sleep)
    c = (await claim(ada, 2)).claim
    assert c is not None
    for _ in range(5):
        clock.advance(60)
        assert await ada.heartbeat(c)
        assert not (await claim(bob, 2)).won
    found = await ada.backend.get([c.key])
    assert (
        Claim.from_json(c.key, decode_record(c.key, found[c.key].value)).heartbeat_at == clock.now
    )


async def test_racing_takeover_of_dead_lock_has_one_winner(swarm: Swarm, clock: FakeClock) -> None:
    """32 agents racing to take over one dead lock: exactly one wins, generation 2."""
    dead = await swarm.memory("dead", clock=clock, sleep=no_sleep)
    assert (await claim(dead, 4)).won
    clock.advance(1000)
    backend = await swarm.backend("racers")
    mems = [await swarm.memory(f"r{j}", backend, clock=clock, sleep=no_sleep) for j in range(32)]
    outs = await asyncio.gather(*(claim(m, 4) for m in mems))
    winners = [o for o in outs if o.won]
    assert len(winners) == 1
    assert winners[0].claim is not None and keys.lock_generation(winners[0].claim.lock_key) == 2
    losers = {o.holder.agent_id for o in outs if not o.won and o.holder is not None}
    assert losers == {winners[0].claim.agent_id}


async def test_release_frees_the_experiment_and_deletes_claim_record(swarm: Swarm) -> None:
    """After release the claim record is gone and the experiment can be claimed again."""
    ada = await swarm.memory("ada")
    bob = await swarm.memory("bob")
    c = (await claim(ada, 5)).claim
    assert c is not None
    await ada.release(c)
    assert c.key not in await ada.backend.get([c.key])
    assert await ada.live_claims() == []
    again = await claim(bob, 5)
    assert again.won and again.claim is not None
    assert keys.lock_generation(again.claim.lock_key) == 2


async def test_legacy_claims_use_fifteen_minute_rule(swarm: Swarm, clock: FakeClock) -> None:
    """A claim written by an original client (no heartbeat) is live 15 minutes after claimed_at."""
    mem = await swarm.memory("reader", clock=clock)
    legacy = {
        "agent_id": "oldclient",
        "description": "increase LR to 0.04",
        "experiment_key": "oldclient--increase-lr-to-0-04--a7f3b2",
        "claimed_at": to_iso(clock.now),
        "expected_duration_seconds": 300,
        "status": "claimed",
    }
    key = "claims/oldclient--increase-lr-to-0-04--a7f3b2"
    res = await mem.backend.create(
        [NewMemory(key=key, value=encode_record(legacy), description="x")]
    )
    assert res[0].ok
    clock.advance(899)
    live = await mem.live_claims()
    assert [c.agent_id for c in live] == ["oldclient"] and live[0].track == "standard"
    assert await mem.live_claims(track="smoke") == []
    clock.advance(2)
    assert await mem.live_claims() == []


async def test_heartbeating_context_refreshes_and_propagates_errors(local_swarm: Swarm) -> None:
    """heartbeating() beats on its interval, stops on exit, and lets the block's error through."""
    mem = await local_swarm.memory("ada", lease_s=2.0, heartbeat_s=0.5)
    c = (await claim(mem, 6)).claim
    assert c is not None

    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        async with mem.heartbeating(c, interval_s=0.05) as hb:
            await asyncio.sleep(0.5)
            raise Boom
    assert hb.beats >= 3 and not hb.lost
    lock = decode_record("k", (await mem.backend.get([c.lock_key]))[c.lock_key].value)
    beat_at = lock["heartbeat_at"]
    await asyncio.sleep(0.2)
    lock2 = decode_record("k", (await mem.backend.get([c.lock_key]))[c.lock_key].value)
    assert lock2["heartbeat_at"] == beat_at  # the task is gone


async def test_heartbeating_release_on_exit(local_swarm: Swarm) -> None:
    """release_on_exit releases the claim when the block ends."""
    mem = await local_swarm.memory("ada")
    c = (await claim(mem, 7)).claim
    assert c is not None
    async with mem.heartbeating(c, release_on_exit=True):
        pass
    assert not await mem.still_held(c)
    assert (await claim(mem, 7)).won


async def test_non_atomic_backend_falls_back_to_claim_then_verify(local_swarm: Swarm) -> None:
    """With create_is_atomic False, claims write then read back their nonce (and still work)."""
    backend = await local_swarm.backend()
    backend.create_is_atomic = False  # as EnsueBackend reports after a failed probe
    slept: list[float] = []

    async def sleep(s: float) -> None:
        slept.append(s)

    ada = SwarmMemory(
        backend, agent_id="ada", host="h", sleep=sleep, verify_delay_s=0.25, embed_records=False
    )
    bob = SwarmMemory(backend, agent_id="bob", host="h", sleep=sleep, embed_records=False)
    assert not ada.claims_are_atomic
    assert (await claim(ada, 8)).won
    assert slept == [0.25]
    lost = await claim(bob, 8)
    assert not lost.won and lost.holder is not None and lost.holder.agent_id == "ada"


@pytest.mark.slow
async def test_claim_records_are_embedded_for_other_clients(local_swarm: Swarm) -> None:
    """With embed_records, the claim's description is searchable like the original clients expect."""
    mem = await local_swarm.memory("ada", embed_records=True)
    c = (await claim(mem, 9)).claim
    assert c is not None
    async with mem.heartbeating(c, interval_s=60) as hb:
        for _ in range(600):
            if hb.embedded:
                break
            await asyncio.sleep(0.1)
    assert hb.embedded
    hits = await mem.search("experiment 9", namespace="claims", limit=5)
    assert hits and hits[0].key.startswith("claims/ada--experiment-9--")


async def test_same_code_on_two_tiers_is_two_experiments(swarm: Swarm) -> None:
    """One agent may run the same code on two tiers at once: each tier's claim wins."""
    ada = await swarm.memory("ada")
    p, c = experiment(7)
    xl = await ada.try_claim(
        parent_hash=p, code_hash=c, description="baseline", track="standard", tier="xl"
    )
    large = await ada.try_claim(
        parent_hash=p, code_hash=c, description="baseline", track="standard", tier="large"
    )
    assert xl.won and large.won
    assert xl.claim is not None and large.claim is not None
    assert xl.claim.lock_key != large.claim.lock_key
    again = await ada.try_claim(
        parent_hash=p, code_hash=c, description="baseline", track="standard", tier="xl"
    )
    assert not again.won
