"""Incremental result sync (swarm.sync): a poll costs the same whatever the history, a
restart catches up from its cached cursor, a hub indexes results written without a feed
entry, and hostile feed entries are ignored."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import pytest
from ns_support import FakeClock, Swarm, open_swarm
from spy import CallLog

from swarm import keys
from swarm.errors import InvalidRequestError
from swarm.memory import NewMemory
from swarm.namespace import SwarmMemory
from swarm.records import Result, encode_record
from swarm.sync import ResultFeed, feed_prefixes

PARENT = hashlib.sha256(b"parent").hexdigest()


def result(agent: str, n: int, *, track: str = "standard", tier: str = "xl") -> Result:
    code = hashlib.sha256(f"code-{n}".encode()).hexdigest()
    return Result(
        agent_id=agent,
        status="discard",
        description=f"change {n}",
        train_py=f"X = {n}\n",
        val_bpb=1.1 + n / 1000,
        vram_tier=tier,
        track=track,
        parent_hash=PARENT,
        code_hash=code,
        seed=n,
    )


async def publish(mem: SwarmMemory, clock: FakeClock, first: int, count: int) -> list[str]:
    out = []
    for n in range(first, first + count):
        clock.advance(7)
        out.append(await mem.publish_result(result(mem.agent_id, n)))
    return out


async def reader(
    swarm: Swarm, clock: FakeClock, cache: Path | None = None, name: str = "reader"
) -> tuple[ResultFeed, CallLog]:
    spy = CallLog(await swarm.backend(name))
    mem = SwarmMemory(spy, agent_id="reader", host="h", clock=clock, embed_records=False)  # type: ignore[arg-type]
    return ResultFeed(
        mem, track="standard", cache_dir=cache, label=swarm.url or "local", clock=clock
    ), spy


async def test_poll_cost_is_independent_of_the_history(swarm: Swarm, clock: FakeClock) -> None:
    """After 150 results, a poll that finds 3 new ones lists a bucket or two and reads once."""
    peer = await swarm.memory("peer", clock=clock)
    await publish(peer, clock, 0, 150)
    feed, spy = await reader(swarm, clock)
    assert len(await feed.start()) == 150
    assert spy.count("list_keys", keys.RESULTS) >= 1  # the first start lists everything once
    fresh = await publish(peer, clock, 150, 3)
    spy.reset()
    new = await feed.poll()
    assert sorted(r.key for r in new) == sorted(fresh)
    assert spy.count("list_keys", keys.RESULTS) == 0
    assert 1 <= spy.count("list_keys") <= 2 + 21 // 60 + 1
    assert spy.count("get") == 1
    spy.reset()
    assert await feed.poll() == []  # nothing new: the same buckets, nothing read
    assert spy.count("get") == 0
    assert [r.key for r in feed.recent("xl", 3)] == list(reversed(fresh))


async def test_a_restart_catches_up_from_the_cached_cursor(
    swarm: Swarm, clock: FakeClock, tmp_path: Path
) -> None:
    """A second start with the cache lists no results/ prefix, yet sees what came meanwhile."""
    peer = await swarm.memory("peer", clock=clock)
    old = await publish(peer, clock, 0, 20)
    first, _ = await reader(swarm, clock, tmp_path / "sync")
    await first.start()
    clock.advance(3 * 3600 + 17)  # down for three hours
    fresh = await publish(peer, clock, 20, 4)
    second, spy = await reader(swarm, clock, tmp_path / "sync", name="reader-again")
    known = await second.start()
    assert spy.count("list_keys", keys.RESULTS) == 0
    assert spy.count("list_keys") <= 12
    assert {r.key for r in known} == set(old) | set(fresh)


async def test_a_cache_of_another_store_is_not_used(
    swarm: Swarm, clock: FakeClock, tmp_path: Path
) -> None:
    """The cache names its store: a feed of another store lists everything again."""
    peer = await swarm.memory("peer", clock=clock)
    await publish(peer, clock, 0, 3)
    first, _ = await reader(swarm, clock, tmp_path / "sync")
    await first.start()
    other, spy = await reader(swarm, clock, tmp_path / "sync", name="reader-elsewhere")
    other.label = "another store"
    await other.start()
    assert spy.count("list_keys", keys.RESULTS) == 1


async def test_results_of_old_clients_arrive_through_a_hubs_feed(
    tmp_path: Path, clock: FakeClock
) -> None:
    """A results/ record created without a feed entry (the original fork) is indexed by the hub."""
    async with open_swarm("hub", tmp_path) as swarm:
        feed, _ = await reader(swarm, clock)
        await feed.start()
        old_client = await swarm.backend("old-client")
        r = result("legacy", 7)
        key = keys.result_key("legacy", r.description, r.parent_hash, r.code_hash, r.seed)
        (res,) = await old_client.create([NewMemory(key=key, value=encode_record(r.to_json()))])
        assert res.ok
        # the hub stamps the entry with its own (real) clock: the reader polls around it
        import time

        clock.now = time.time()
        feed.cursor = clock.now - 600
        new = await feed.poll()
        assert [x.key for x in new] == [key]


async def test_hostile_feed_entries_are_ignored(swarm: Swarm, clock: FakeClock) -> None:
    """Feed entries that point outside results/, at nothing, or at garbage are skipped."""
    feed, _ = await reader(swarm, clock)
    await feed.start()
    peer = await swarm.memory("peer", clock=clock)
    writer = await swarm.backend("mallory")
    stamp = keys.feed_stamp(clock())
    bad = [
        f"feed/{stamp}/best/metadata",
        f"feed/{stamp}/leaderboard",
        f"feed/{stamp}x/results/a--b--c",
        f"feed/{stamp}/results/nobody--missing--000000",
        f"feed/{stamp}/results/mallory--garbage--111111",
    ]
    items = [NewMemory(key=k, value="{}") for k in bad]
    items.append(NewMemory(key="results/mallory--garbage--111111", value="not json {"))
    await writer.create(items)
    good = await publish(peer, clock, 0, 1)
    new = await feed.poll()
    assert [r.key for r in new] == good


def test_feed_keys_only_for_results_of_the_own_org() -> None:
    """A feed entry points at results/ of the own org; anything else is refused or unread."""
    k = keys.feed_key("results/ada--x--123456", 1_760_000_000)
    assert k == "feed/202510090853/results/ada--x--123456"
    assert keys.feed_target(k) == "results/ada--x--123456"
    for bad in ("best/metadata", "@other/results/ada--x--1", "claims/ada--x--1"):
        with pytest.raises(InvalidRequestError, match="feed entries"):
            keys.feed_key(bad, 0)
    assert keys.feed_target("feed/2025/results/x") is None
    assert keys.feed_target("feed/202510090853/best/metadata") is None


def test_feed_prefixes_cover_every_minute_with_few_listings() -> None:
    """Every minute bucket between since and now is under some prefix; gaps cost little."""
    rng = random.Random(5)
    for _ in range(300):
        now = 1_760_000_000 + rng.uniform(0, 10**7)
        since = now - rng.choice([5, 30, 90, 3000, 4000, 86400 * 3, 86400 * 40]) * rng.random()
        prefixes = feed_prefixes(since, now)
        t = int(since // 60) * 60
        while t <= now:
            entry = f"feed/{keys.feed_stamp(t)}/results/x"
            assert any(entry.startswith(p) for p in prefixes), (since, now, t)
            t += 60
        # at most: minutes and hours at both ends, and the whole days between
        assert len(prefixes) <= 2 * (10 + 23) + (now - since) // 86400 + 2
    assert len(feed_prefixes(1_760_000_000 - 30, 1_760_000_000)) <= 2


def test_a_quiet_swarm_lists_its_hour_in_one_call() -> None:
    """Five and a half minutes of a quiet swarm: the hour prefix, not six minute buckets."""
    now = 1_760_000_000 + 1000  # 09:23 UTC, the range stays inside one hour
    quiet = feed_prefixes(now - 330, now, max_minutes=1)
    busy = feed_prefixes(now - 330, now, max_minutes=10)
    assert quiet == [f"feed/{keys.feed_stamp(now - 330, 10)}"]
    assert len(busy) == 7 and all(p.endswith("/") and len(p) == len("feed/") + 13 for p in busy)
