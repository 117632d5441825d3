"""THE contract suite: one behaviour for every memory backend.

Each test runs against the ``backend`` fixture (conftest.py), parametrised over:
``local`` (LocalStore on a tmp SQLite file), ``hub`` (EnsueBackend -> our hub over real
HTTP on 127.0.0.1) and ``hub-hosted-like`` (EnsueBackend bound to org
``autoresearch-at-home`` -> a hub whose default org is another, so every key travels as
``@autoresearch-at-home/...`` exactly as against the hosted service).
"""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest

from swarm.errors import KeyNotFoundError, MemoryStoreError
from swarm.memory import ItemResult, MemoryBackend, NewMemory


def record(**fields: object) -> str:
    return orjson.dumps(fields).decode()


async def create_ok(backend: MemoryBackend, *items: NewMemory) -> None:
    results = await backend.create(items)
    assert all(r.ok for r in results), results


# --------------------------------------------------------------------------- basics


async def test_is_a_memory_backend(backend) -> None:
    """Every backend satisfies the MemoryBackend protocol and pings."""
    assert isinstance(backend, MemoryBackend)
    assert backend.name in ("local", "hub", "ensue", "postgres")
    await backend.ping()


async def test_get_missing_keys_are_absent(backend) -> None:
    """get of keys that were never written returns an empty mapping, not an error."""
    assert await backend.get(["results/nobody--nothing--000000", "best/metadata"]) == {}
    assert await backend.get([]) == {}


async def test_create_then_get_round_trip(backend) -> None:
    """A created item reads back with its value, description and epoch timestamps."""
    before = time.time()
    value = record(agent_id="ada", val_bpb=0.9979, status="keep")
    await create_ok(backend, NewMemory("results/ada--lr--a1b2c3", value, "ada keep 0.9979"))
    got = await backend.get(["results/ada--lr--a1b2c3", "results/missing"])
    assert set(got) == {"results/ada--lr--a1b2c3"}
    item = got["results/ada--lr--a1b2c3"]
    assert item.key == "results/ada--lr--a1b2c3"
    assert orjson.loads(item.value) == orjson.loads(value)
    assert item.description == "ada keep 0.9979"
    assert before - 5 <= item.created_at <= time.time() + 5
    assert item.updated_at >= item.created_at


async def test_create_existing_key_fails_per_item(backend) -> None:
    """A create of an existing key fails that item with exists=True and keeps the first value."""
    await create_ok(backend, NewMemory("claims/x--y--000001", record(agent_id="first")))
    results = await backend.create(
        [
            NewMemory("claims/x--y--000001", record(agent_id="second")),
            NewMemory("claims/x--y--000002", record(agent_id="second")),
        ]
    )
    assert [r.key for r in results] == ["claims/x--y--000001", "claims/x--y--000002"]
    assert results[0].ok is False and results[0].exists is True and results[0].error
    assert results[1].ok is True
    got = await backend.get(["claims/x--y--000001"])
    assert orjson.loads(got["claims/x--y--000001"].value) == {"agent_id": "first"}


async def test_update_replaces_value(backend) -> None:
    """update changes value and description of an existing key and moves updated_at."""
    await create_ok(backend, NewMemory("best/metadata", record(val_bpb=1.0), "old"))
    first = (await backend.get(["best/metadata"]))["best/metadata"]
    await asyncio.sleep(0.02)
    await backend.update("best/metadata", record(val_bpb=0.99), description="new")
    second = (await backend.get(["best/metadata"]))["best/metadata"]
    assert orjson.loads(second.value) == {"val_bpb": 0.99}
    assert second.description == "new"
    assert second.updated_at >= first.updated_at
    assert second.created_at == pytest.approx(first.created_at, abs=1.0)


async def test_update_keeps_description_when_not_given(backend) -> None:
    """update without a description leaves the stored description alone."""
    await create_ok(backend, NewMemory("leaderboard", record(rows=[]), "the board"))
    await backend.update("leaderboard", record(rows=[1]))
    got = (await backend.get(["leaderboard"]))["leaderboard"]
    assert got.description == "the board" and orjson.loads(got.value) == {"rows": [1]}


async def test_update_missing_key_raises_not_found(backend) -> None:
    """update of a key that does not exist raises KeyNotFoundError and creates nothing."""
    with pytest.raises(KeyNotFoundError):
        await backend.update("best/tier/xl/metadata", record(val_bpb=0.9))
    assert await backend.get(["best/tier/xl/metadata"]) == {}


async def test_delete(backend) -> None:
    """delete removes keys; a missing key is a failed item, not an exception."""
    await create_ok(backend, NewMemory("insights/a", "1"), NewMemory("insights/b", "2"))
    results = await backend.delete(["insights/a", "insights/never"])
    by_key = {r.key: r for r in results}
    assert by_key["insights/a"].ok is True
    assert by_key["insights/never"].ok is False
    assert set(await backend.get(["insights/a", "insights/b"])) == {"insights/b"}
    # the key is free again
    await create_ok(backend, NewMemory("insights/a", "again"))


# --------------------------------------------------------------------------- listing


async def test_list_keys_prefix_is_literal(backend) -> None:
    """Prefixes containing _ % and \\ match literally (no LIKE wildcards leak through)."""
    keys = [
        "hyp_x/1",
        "hypAx/2",  # would match an unescaped "hyp_x/"
        "hyp_x/sub/3",
        "pct%/1",
        "pctZZ/2",  # would match an unescaped "pct%/"
        "back\\slash/1",
        "backXslash/2",
    ]
    await create_ok(backend, *[NewMemory(k, "v", f"d {k}") for k in keys])
    assert [r.key for r in await backend.list_keys("hyp_x/")] == ["hyp_x/1", "hyp_x/sub/3"]
    assert [r.key for r in await backend.list_keys("pct%/")] == ["pct%/1"]
    assert [r.key for r in await backend.list_keys("back\\slash/")] == ["back\\slash/1"]
    rows = await backend.list_keys("hyp_x/sub/")
    assert len(rows) == 1 and rows[0].description == "d hyp_x/sub/3"
    assert rows[0].created_at > 0


async def test_list_keys_empty_and_sorted(backend) -> None:
    """An unused prefix lists nothing; results come sorted by key."""
    assert await backend.list_keys("nothing-here/") == []
    await create_ok(backend, *[NewMemory(f"s/{c}", "v") for c in "dbca"])
    assert [r.key for r in await backend.list_keys("s/")] == ["s/a", "s/b", "s/c", "s/d"]


async def test_large_batches_over_100(backend) -> None:
    """Create, get, list and delete of 250 items work across the 100-item wire limit."""
    keys = [f"results/bulk--item--{i:06d}" for i in range(250)]
    items = [NewMemory(k, record(i=i), f"bulk {i}") for i, k in enumerate(keys)]
    results = await backend.create(items)
    assert [r.key for r in results] == keys and all(r.ok for r in results)
    got = await backend.get(keys)
    assert len(got) == 250 and orjson.loads(got[keys[137]].value) == {"i": 137}
    listed = await backend.list_keys("results/bulk--")
    assert [r.key for r in listed] == keys
    limited = await backend.list_keys("results/bulk--", limit=120)
    assert len(limited) == 120 and all(r.key.startswith("results/bulk--") for r in limited)
    deleted = await backend.delete(keys)
    assert all(r.ok for r in deleted) and len(deleted) == 250
    assert await backend.list_keys("results/bulk--") == []


# --------------------------------------------------------------------------- concurrency


async def test_concurrent_create_of_one_key_has_one_winner(backend) -> None:
    """50 coroutines creating one claim key at once: exactly one wins, 49 see exists."""
    key = "claims/race--same-experiment--abcdef"

    async def attempt(i: int) -> ItemResult:
        (res,) = await backend.create([NewMemory(key, record(agent_id=f"agent-{i}"))])
        return res

    results = await asyncio.gather(*(attempt(i) for i in range(50)))
    winners = [i for i, r in enumerate(results) if r.ok]
    assert len(winners) == 1
    assert all(r.exists for r in results if not r.ok)
    stored = await backend.get([key])
    assert orjson.loads(stored[key].value) == {"agent_id": f"agent-{winners[0]}"}


# --------------------------------------------------------------------------- text


async def test_unicode_values_and_descriptions(backend) -> None:
    """Non-ASCII text (accents, CJK, emoji, RTL, newlines, tabs) round-trips exactly."""
    value = record(
        description="MATRIX_LR 0.04 → 0.06 ✓",
        train_py="# 注释\nx = 'ünïcødé 🚀'\n\tשלום\n",
        note="€ ≠ ∞",
    )
    desc = "héllo wörld — 日本語 🚀"
    await create_ok(backend, NewMemory("results/ünï--ключ--🚀", value, desc))
    got = await backend.get(["results/ünï--ключ--🚀"])
    item = got["results/ünï--ключ--🚀"]
    assert item.value == value and item.description == desc
    assert [r.key for r in await backend.list_keys("results/ünï")] == ["results/ünï--ключ--🚀"]


async def test_large_value_round_trip(backend) -> None:
    """A 300 kB record (a long train.py) survives base64 transport intact."""
    big = record(train_py="# line\n" * 40_000)
    await create_ok(backend, NewMemory("results/big--src--000000", big))
    got = await backend.get(["results/big--src--000000"])
    assert got["results/big--src--000000"].value == big


# --------------------------------------------------------------------------- search


@pytest.mark.slow
async def test_search_embedded_best_first_with_prefix(backend) -> None:
    """Search finds embedded items only, best first, and honours the prefix."""
    items = [
        NewMemory(
            "insights/a",
            record(text="lr"),
            "raising the matrix learning rate improved val_bpb",
            embed=True,
        ),
        NewMemory(
            "insights/b",
            record(text="depth"),
            "a deeper model with more layers ran out of GPU memory",
            embed=True,
        ),
        NewMemory(
            "hypotheses/c",
            record(text="lr2"),
            "try a higher learning rate for the matrix parameters",
            embed=True,
        ),
        NewMemory(
            "insights/d",
            record(text="plain"),
            "learning rate learning rate learning rate",
            embed=False,
        ),
        NewMemory(
            "insights/e",
            "a longer warmup schedule made the first steps stable",
            "unrelated description about cooking pasta",
            embed=True,
            embed_source="value",
        ),
    ]
    await create_ok(backend, *items)
    hits = await backend.search("increase the learning rate", limit=10)
    keys = [h.key for h in hits]
    assert "insights/d" not in keys  # not embedded
    assert set(keys) >= {"insights/a", "hypotheses/c"}
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True)
    assert keys.index("insights/a") < keys.index("insights/b")
    top = hits[0]
    assert top.key in ("insights/a", "hypotheses/c") and -1.0 <= top.score <= 1.0001
    assert top.description and top.value

    only = await backend.search("increase the learning rate", limit=10, prefix="insights/")
    assert only and all(h.key.startswith("insights/") for h in only)
    assert only[0].key == "insights/a"
    assert len(await backend.search("learning rate", limit=1)) == 1
    # embed_source="value": found by its value, not by its (unrelated) description
    warm = await backend.search("how long should the warmup be", limit=3)
    assert warm[0].key == "insights/e"


# --------------------------------------------------------------------------- errors


async def test_errors_are_swarm_errors(backend) -> None:
    """Invalid keys raise a MemoryStoreError subclass (never a foreign exception)."""
    with pytest.raises(MemoryStoreError):
        await backend.get(["bad\x00key"])
    with pytest.raises(MemoryStoreError):
        await backend.update("", "v")
