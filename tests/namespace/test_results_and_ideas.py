"""Results, hypotheses, insights, leaderboard and the analyze summary."""

from __future__ import annotations

import asyncio
import hashlib
import time
from dataclasses import replace

import pytest
from ns_support import FakeClock, Swarm

from swarm.errors import InvalidRequestError, KeyExistsError
from swarm.memory._types import NewMemory
from swarm.records import Claim, Hypothesis, Insight, Result, decode_record, encode_record, to_iso

PARENT = hashlib.sha256(b"base").hexdigest()


def result(
    agent: str,
    val: float | None,
    *,
    n: int = 0,
    status: str = "keep",
    tier: str = "xl",
    track: str = "standard",
    seed: int = 0,
    at: float | None = None,
) -> Result:
    code = hashlib.sha256(f"code-{n}".encode()).hexdigest()
    return Result(
        agent_id=agent,
        status=status,
        description=f"MATRIX_LR 0.04 → 0.0{n}",
        train_py=f"X = {n}\n",
        val_bpb=val,
        vram_tier=tier,
        track=track,
        parent_hash=PARENT,
        code_hash=code,
        seed=seed,
        completed_at=at,
        failure="oom" if status == "crash" else None,
        log_tail="CUDA out of memory" if status == "crash" else "",
    )


async def test_publish_every_status_with_source_and_log_tail(
    swarm: Swarm, clock: FakeClock
) -> None:
    """keep, discard, crash and timeout are all published with the full source; crash keeps its log."""
    mem = await swarm.memory("ada", clock=clock)
    published = {}
    for n, (status, val) in enumerate(
        [("keep", 0.99), ("discard", 1.01), ("crash", None), ("timeout", None)]
    ):
        clock.advance(10)
        published[status] = await mem.publish_result(result("ada", val, n=n, status=status))
    got = await mem.backend.get(list(published.values()))
    for status, key in published.items():
        assert key.startswith("results/ada--matrix-lr-0-04-0-0")
        data = decode_record(key, got[key].value)
        assert data["status"] == status and data["train_py"].startswith("X = ")
        assert data["completed_at"] is not None and data["host"] == "test-host"
    crash = decode_record("c", got[published["crash"]].value)
    assert crash["failure"] == "oom" and crash["log_tail"] == "CUDA out of memory"
    assert got[published["keep"]].description.startswith(
        "[autoresearch] Result: [ada KEEP] val_bpb=0.990000"
    )


async def test_results_newest_first_with_filters(swarm: Swarm, clock: FakeClock) -> None:
    """results() lists newest first and filters by track, tier and limit."""
    mem = await swarm.memory("ada", clock=clock)
    specs = [("xl", "standard"), ("small", "standard"), ("xl", "standard"), ("cpu", "smoke")]
    for n, (tier, track) in enumerate(specs):
        await mem.publish_result(
            result("ada", 1.0 + n / 100, n=n, tier=tier, track=track, at=1e9 + n)
        )
        await asyncio.sleep(0.02)  # distinct creation times
    allr = await mem.results()
    assert [r.code_hash for r in allr] == [result("a", 1, n=n).code_hash for n in (3, 2, 1, 0)]
    assert [r.vram_tier for r in await mem.results(track="standard", tier="xl")] == ["xl", "xl"]
    assert len(await mem.results(track="standard", limit=2)) == 2
    assert [r.track for r in await mem.results(track="smoke")] == ["smoke"]
    other = await swarm.memory("bob")  # a fresh client (no cache) sees the same
    assert [r.key for r in await other.results()] == [r.key for r in allr]


async def test_publish_is_idempotent_and_seeds_differ(local_swarm: Swarm) -> None:
    """Publishing the same run twice gives one record; another seed gets another key."""
    mem = await local_swarm.memory("ada")
    r = result("ada", 0.99, n=1, seed=1, at=1e9)
    k1 = await mem.publish_result(r)
    assert await mem.publish_result(r) == k1
    k2 = await mem.publish_result(result("ada", 0.995, n=1, seed=2, at=1e9 + 5))
    assert k2 != k1
    rerun = await mem.publish_result(result("ada", 0.991, n=1, seed=1, at=1e9 + 60))
    assert rerun not in (k1, k2)  # same seed, another run: a new key, nothing overwritten
    assert len(await mem.results()) == 3
    with pytest.raises(KeyExistsError, match=k1):
        await mem.publish_result(replace(result("ada", 0.9, n=7), key=k1))


async def test_publish_rejects_bad_status_and_missing_metric(local_swarm: Swarm) -> None:
    """A status outside keep/discard/crash/timeout, or a keep without val_bpb, is refused."""
    mem = await local_swarm.memory("ada")
    with pytest.raises(InvalidRequestError, match="status 'running'"):
        await mem.publish_result(result("ada", 0.99, status="running"))
    with pytest.raises(InvalidRequestError, match="needs val_bpb"):
        await mem.publish_result(result("ada", None, status="keep"))


async def test_results_of_other_clients_are_read(local_swarm: Swarm) -> None:
    """A result written raw by an original client shows up; an unreadable record is skipped."""
    mem = await local_swarm.memory("ada")
    legacy = {
        "agent_id": "gpu0",
        "val_bpb": "0.9979",
        "status": "keep",
        "description": "baseline",
        "train_py": "...",
        "completed_at": "2025-03-10T12:00:00+00:00",
        "commit": "abc1234",
    }
    await mem.backend.create(
        [
            NewMemory(key="results/gpu0--baseline--a1b2c3", value=encode_record(legacy)),
            NewMemory(key="results/broken--x--000000", value="this is not json"),
        ]
    )
    rs = await mem.results()
    assert [r.agent_id for r in rs] == ["gpu0"]
    assert rs[0].val_bpb == pytest.approx(0.9979) and rs[0].extra["commit"] == "abc1234"


async def test_hypotheses_publish_list_take_once(swarm: Swarm, clock: FakeClock) -> None:
    """Hypotheses round-trip; of 8 concurrent takers exactly one wins; taken ones drop out."""
    mem = await swarm.memory("ada", clock=clock)
    h1 = Hypothesis(
        agent_id="",
        title="Deeper model",
        hypothesis="DEPTH 8 → 10",
        suggested_config={"DEPTH": 10},
        priority=5,
    )
    h2 = Hypothesis(
        agent_id="",
        title="Smaller batch",
        hypothesis="TOTAL_BATCH_SIZE 2**19 → 2**18",
        suggested_config={"TOTAL_BATCH_SIZE": 262144},
        priority=2,
        track="smoke",
    )
    k1 = await mem.publish_hypothesis(h1)
    clock.advance(1)
    k2 = await mem.publish_hypothesis(h2)
    assert await mem.publish_hypothesis(h1) == k1  # same idea, same key
    free = await mem.unclaimed_hypotheses()
    assert [h.key for h in free] == [k1, k2]  # priority first
    assert free[0].suggested_config == {"DEPTH": 10} and free[0].agent_id == "ada"
    assert [h.key for h in await mem.unclaimed_hypotheses(track="smoke")] == [k2]
    backend = await swarm.backend("takers")
    takers = [await swarm.memory(f"t{j}", backend) for j in range(8)]
    wins = await asyncio.gather(*(t.take_hypothesis(free[0]) for t in takers))
    assert sum(wins) == 1
    assert [h.key for h in await mem.unclaimed_hypotheses()] == [k2]
    with pytest.raises(InvalidRequestError, match="title"):
        await mem.publish_hypothesis(Hypothesis(agent_id="ada", title=" "))


async def test_a_recent_hypothesis_listing_is_shared(swarm: Swarm, clock: FakeClock) -> None:
    """Within max_age_s a client answers from its last listing (no new listing of the
    growing prefix); a hypothesis it took leaves that listing; older, it lists again."""
    mem = await swarm.memory("ada", clock=clock)
    other = await swarm.memory("bob", clock=clock)
    k1 = await mem.publish_hypothesis(Hypothesis(agent_id="", title="one", priority=2))
    assert [h.key for h in await mem.unclaimed_hypotheses(max_age_s=60)] == [k1]
    k2 = await other.publish_hypothesis(Hypothesis(agent_id="", title="two", priority=1))
    clock.advance(30)
    assert [h.key for h in await mem.unclaimed_hypotheses(max_age_s=60)] == [k1]
    assert await mem.take_hypothesis(k1)
    assert await mem.unclaimed_hypotheses(max_age_s=60) == []
    clock.advance(31)
    assert [h.key for h in await mem.unclaimed_hypotheses(max_age_s=60)] == [k2]


async def test_insights_newest_first(swarm: Swarm, clock: FakeClock) -> None:
    """Insights are published once and listed newest first, filtered by track."""
    mem = await swarm.memory("ada", clock=clock)
    k1 = await mem.publish_insight(
        Insight(agent_id="", insight="LR above 0.08 diverges", evidence_keys=("results/a",))
    )
    clock.advance(5)
    k2 = await mem.publish_insight(Insight(agent_id="", insight="warmup matters", track="smoke"))
    assert await mem.publish_insight(Insight(agent_id="", insight="LR above 0.08 diverges")) == k1
    got = await mem.insights()
    assert [i.key for i in got] == [k2, k1] and got[1].evidence_keys == ("results/a",)
    assert [i.key for i in await mem.insights(track="standard")] == [k1]


async def test_leaderboard_updated_on_keep(swarm: Swarm) -> None:
    """Each keep updates the leaderboard: one entry per agent and tier, best first."""
    ada = await swarm.memory("ada")
    bob = await swarm.memory("bob")
    await ada.publish_result(result("ada", 0.995, n=1))
    await ada.publish_result(result("ada", 0.990, n=2))
    await ada.publish_result(result("ada", 0.999, n=3))  # worse: entry unchanged
    await bob.publish_result(result("bob", 0.993, n=4))
    await bob.publish_result(result("bob", 1.2, n=5, status="discard"))  # not a keep
    board = await ada.leaderboard()
    assert [(e.agent_id, e.val_bpb) for e in board] == [("ada", 0.990), ("bob", 0.993)]
    raw = decode_record(
        "leaderboard", (await ada.backend.get(["leaderboard"]))["leaderboard"].value
    )
    assert len(raw["entries"]) == 2  # the original clients read data["entries"]
    assert await ada.leaderboard("smoke") == []


async def test_analyze_summarises_the_swarm(swarm: Swarm, clock: FakeClock) -> None:
    """analyze() reports active agents, bests per track/tier, live claims, keeps, failures, trend."""
    clock.now = time.time()
    ada = await swarm.memory("ada", clock=clock)
    bob = await swarm.memory("bob", clock=clock)
    vals = [1.000, 0.998, 0.997, 0.994, 0.990]
    for n, v in enumerate(vals):
        clock.advance(60)
        r = result("ada", v, n=n, at=clock.now)
        r = replace(r, key=await ada.publish_result(r))
        await ada.propose_best(r)
        await asyncio.sleep(0.02)
    await bob.publish_result(result("bob", None, n=9, status="crash", at=clock.now))
    await bob.publish_result(result("bob", 1.1, n=8, status="discard", at=clock.now))
    out = await bob.try_claim(
        parent_hash=PARENT,
        code_hash="ab" * 32,
        description="DEPTH 8 → 9",
        track="standard",
        tier="xl",
    )
    assert out.won
    s = await ada.analyze("standard")
    assert s.active_agents == ("ada", "bob")
    best = s.best("standard", "xl")
    assert best is not None and best.val_bpb == 0.990 and s.best("standard") is not None
    assert [c.description for c in s.live_claims] == ["DEPTH 8 → 9"]
    assert [r.val_bpb for r in s.recent_keeps] == list(reversed(vals))
    assert [r.status for r in s.recent_failures] == ["crash"] and s.recent_discards == 1
    assert s.total_results == 7 and s.trend == "improving"
    text = s.to_text()
    assert "val_bpb=0.990000" in text and "DEPTH 8 → 9" in text
    everything = await ada.analyze()
    assert ("standard", "xl") in everything.bests


async def test_prune_dead_claims_removes_only_own_dead_records(
    local_swarm: Swarm, clock: FakeClock
) -> None:
    """After a crash, an agent deletes its own dead claim records, never live or others' ones."""
    ada = await local_swarm.memory("ada", clock=clock)
    bob = await local_swarm.memory("bob", backend=ada.backend, clock=clock)
    dead = await ada.try_claim(
        parent_hash=PARENT, code_hash="cd" * 32, description="x", track="standard", tier="xl"
    )
    clock.advance(200)
    live = await ada.try_claim(
        parent_hash=PARENT, code_hash="ef" * 32, description="y", track="standard", tier="xl"
    )
    other = await bob.try_claim(
        parent_hash=PARENT, code_hash="cd" * 32, description="x", track="standard", tier="xl"
    )
    assert dead.won and live.won and other.won
    assert await ada.prune_dead_claims() == 1
    keys_left = {i.key for i in await ada.backend.list_keys("claims/")}
    assert dead.claim.key not in keys_left  # type: ignore[union-attr]
    assert {live.claim.key, other.claim.key} <= keys_left  # type: ignore[union-attr]
    assert isinstance(Claim.from_json(live.claim.key, {"agent_id": "ada"}), Claim)  # type: ignore[union-attr]
    assert to_iso(0) == "1970-01-01T00:00:00+00:00"
