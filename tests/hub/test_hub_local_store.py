"""LocalStore: the embedded SQLite backend (also the hub's storage)."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import sys
from pathlib import Path

import numpy as np
import pytest

from swarm.embedding import Embedder
from swarm.errors import AuthError, InvalidRequestError, KeyNotFoundError, MemoryStoreError
from swarm.memory._store import HubStore
from swarm.memory._types import MemoryBackend, NewMemory
from swarm.memory.local import LocalStore, parse_like, parse_prefix, split_key

HERE = Path(__file__).parent


async def test_is_a_memory_backend(store: LocalStore) -> None:
    """LocalStore and PgStore satisfy the MemoryBackend and HubStore protocols and ping."""
    assert isinstance(store, MemoryBackend) and isinstance(store, HubStore)
    assert store.name == ("local" if isinstance(store, LocalStore) else "postgres")
    await store.ping()


async def test_create_get_roundtrip_with_timestamps(store: LocalStore) -> None:
    """Created items come back with value, description and epoch timestamps."""
    res = await store.create([NewMemory("results/a", '{"x": 1}', "first")])
    assert res[0].ok and res[0].key == "results/a"
    got = await store.get(["results/a", "results/missing"])
    assert set(got) == {"results/a"}
    m = got["results/a"]
    assert (m.value, m.description, m.embedded) == ('{"x": 1}', "first", False)
    assert m.created_at == m.updated_at
    assert 1.6e9 < m.created_at < 4e9


async def test_create_is_create_if_absent(store: LocalStore) -> None:
    """A second create of a key fails with exists=True and leaves the first value."""
    await store.create([NewMemory("k", "one")])
    res = await store.create([NewMemory("k", "two"), NewMemory("k2", "x")])
    assert (res[0].ok, res[0].exists) == (False, True)
    assert "already exists" in (res[0].error or "")
    assert res[1].ok
    assert (await store.get(["k"]))["k"].value == "one"


async def test_duplicate_key_in_one_batch_wins_once(store: LocalStore) -> None:
    """Two items with the same key in one call: the first is created, the second exists."""
    res = await store.create([NewMemory("dup", "a"), NewMemory("dup", "b")])
    assert [r.ok for r in res] == [True, False]
    assert (await store.get(["dup"]))["dup"].value == "a"


async def test_concurrent_creates_of_one_key_have_one_winner(store: LocalStore) -> None:
    """Fifty concurrent creates of one key: exactly one succeeds."""
    results = await asyncio.gather(
        *(store.create([NewMemory("claims/x", f"agent-{i}")]) for i in range(50))
    )
    winners = [i for i, r in enumerate(results) if r[0].ok]
    assert len(winners) == 1
    assert (await store.get(["claims/x"]))["claims/x"].value == f"agent-{winners[0]}"


async def test_update_replaces_value_and_keeps_created_at(store: LocalStore) -> None:
    """update changes value (and description when given) and moves updated_at only."""
    await store.create([NewMemory("best/metadata", "v1", "d1")])
    before = (await store.get(["best/metadata"]))["best/metadata"]
    await asyncio.sleep(0.01)
    await store.update("best/metadata", "v2")
    mid = (await store.get(["best/metadata"]))["best/metadata"]
    assert (mid.value, mid.description) == ("v2", "d1")
    assert mid.created_at == before.created_at and mid.updated_at > before.updated_at
    await store.update("best/metadata", "v3", description="d3")
    assert (await store.get(["best/metadata"]))["best/metadata"].description == "d3"


async def test_update_missing_key_raises_not_found(store: LocalStore) -> None:
    """update of an absent key raises KeyNotFoundError naming the key."""
    with pytest.raises(KeyNotFoundError, match="nope"):
        await store.update("nope", "v")


async def test_update_and_delete_with_owner(store: LocalStore) -> None:
    """owner= restricts update/delete to the creator; others get AuthError / forbidden."""
    await store.create([NewMemory("results/r", "v")], creator="alice")
    with pytest.raises(AuthError, match="alice"):
        await store.update("results/r", "v2", owner="bob")
    item = await store.update("results/r", "v2", owner="alice")
    assert item.value == "v2" and item.creator == "alice"
    out = await store.delete_checked(["results/r"], owners=["bob"])
    assert out[0].code == "forbidden" and "alice" in (out[0].error or "")
    out = await store.delete_checked(["results/r", "results/none"], owners=["alice", "alice"])
    assert [o.code for o in out] == ["ok", "not_found"]


async def test_delete_reports_missing_keys_per_item(store: LocalStore) -> None:
    """delete gives a failed item for a missing key and removes present ones."""
    await store.create([NewMemory("a", "1"), NewMemory("b", "2")])
    res = await store.delete(["a", "zzz"])
    assert [r.ok for r in res] == [True, False]
    assert "not found" in (res[1].error or "")
    assert set(await store.get(["a", "b"])) == {"b"}


async def test_list_keys_is_literal_and_sorted(store: LocalStore) -> None:
    """list_keys matches the prefix literally (no LIKE wildcards) and sorts by key."""
    keys = ["res_1/b", "res_1/a", "resX1/c", "res%1/d", "res\\1/e", "other/f"]
    await store.create([NewMemory(k, "v") for k in keys])
    assert [k.key for k in await store.list_keys("res_1/")] == ["res_1/a", "res_1/b"]
    assert [k.key for k in await store.list_keys("res%")] == ["res%1/d"]
    assert [k.key for k in await store.list_keys("res\\")] == ["res\\1/e"]
    assert len(await store.list_keys("")) == len(keys)
    assert [k.key for k in await store.list_keys("res", limit=2)] == ["res%1/d", "resX1/c"]


async def test_list_keys_is_case_sensitive(store: LocalStore) -> None:
    """A prefix matches case-sensitively (unlike SQLite's default LIKE)."""
    await store.create([NewMemory("Best/x", "v"), NewMemory("best/y", "v")])
    assert [k.key for k in await store.list_keys("best/")] == ["best/y"]


async def test_org_addressing(store: LocalStore) -> None:
    """'@default-org/key' is the same item as 'key'; other orgs keep their prefix."""
    await store.create([NewMemory("@autoresearch-at-home/x", "v1"), NewMemory("@lab/x", "v2")])
    got = await store.get(["x", "@lab/x"])
    assert got["x"].value == "v1" and got["@lab/x"].value == "v2"
    assert [k.key for k in await store.list_keys("")] == ["x"]
    assert [k.key for k in await store.list_keys("@lab/")] == ["@lab/x"]
    res = await store.create([NewMemory("x", "again")])
    assert res[0].exists


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("", "empty"),
        ("a\nb", "control character"),
        ("a\x00b", "control character"),
        ("tab\there", "control character"),
        ("@org", "no '/'"),
        ("@/x", "org"),
        ("@org/", "no key"),
        ("bad\ud800", "UTF-8"),
        ("k" * 1025, "over the 1024"),
    ],
)
async def test_invalid_keys_are_refused_with_a_clear_message(
    store: LocalStore, key: str, message: str
) -> None:
    """Bad keys raise InvalidRequestError naming the problem, and nothing is written."""
    with pytest.raises(InvalidRequestError, match=message):
        await store.create([NewMemory("fine", "v"), NewMemory(key, "v")])
    assert await store.get(["fine"]) == {}


async def test_value_over_cap_and_bad_utf8_are_refused(tmp_path: Path) -> None:
    """A value over max_value_bytes or with a lone surrogate is refused, naming the key."""
    async with LocalStore(tmp_path / "s.db", max_value_bytes=100) as s:
        with pytest.raises(InvalidRequestError, match=r"'big'.*101 bytes.*100-byte"):
            await s.create([NewMemory("big", "x" * 101)])
        await s.create([NewMemory("ok", "é" * 50)])  # 100 bytes
        with pytest.raises(InvalidRequestError, match="UTF-8"):
            await s.create([NewMemory("bad", "a\udc80")])
        with pytest.raises(InvalidRequestError, match="over the 100-byte"):
            await s.update("ok", "y" * 200)
        assert (await s.get(["ok"]))["ok"].value == "é" * 50


async def test_semantic_search_ranks_by_meaning(store: LocalStore) -> None:
    """search returns embedded items best first, with cosine scores; unembedded are skipped."""
    await store.create(
        [
            NewMemory(
                "insights/lr", "v1", "raising the learning rate made training unstable", embed=True
            ),
            NewMemory("insights/depth", "v2", "a deeper network with more layers", embed=True),
            NewMemory("insights/cat", "v3", "my cat sleeps all day", embed=True),
            NewMemory("insights/plain", "v4", "learning rate learning rate", embed=False),
        ]
    )
    hits = await store.search("instability from a higher learning rate", limit=3)
    assert next(h.key for h in hits) == "insights/lr"
    assert "insights/plain" not in [h.key for h in hits]
    assert hits[0].score > hits[-1].score
    assert -1.0 <= hits[-1].score <= hits[0].score <= 1.0001
    assert hits[0].value == "v1" and hits[0].description.startswith("raising")


async def test_search_embeds_value_when_asked(store: LocalStore) -> None:
    """embed_source='value' embeds the value rather than the description."""
    await store.create(
        [
            NewMemory(
                "a", "the optimizer diverged with NaN losses", "x", embed=True, embed_source="value"
            ),
            NewMemory("b", "sunny weather at the beach", "x", embed=True, embed_source="value"),
        ]
    )
    hits = await store.search("loss became NaN", limit=1)
    assert hits[0].key == "a"


async def test_search_honours_prefix(store: LocalStore) -> None:
    """search with a prefix only returns keys under it, including newly added ones."""
    await store.create(
        [
            NewMemory("claims/one", "v", "learning rate warmup", embed=True),
            NewMemory("results/one", "v", "learning rate warmup", embed=True),
        ]
    )
    assert [h.key for h in await store.search("warmup", prefix="claims/")] == ["claims/one"]
    await store.create([NewMemory("claims/two", "v", "learning rate warmup again", embed=True)])
    keys = {h.key for h in await store.search("warmup", prefix="claims/")}
    assert keys == {"claims/one", "claims/two"}


async def test_search_follows_updates_and_deletes(store: LocalStore) -> None:
    """The in-memory index follows re-embedding updates, embed=False and deletes."""
    await store.create(
        [
            NewMemory("h/1", "v", "batch size doubled", embed=True),
            NewMemory("h/2", "v", "weight decay removed", embed=True),
        ]
    )
    assert (await store.search("bigger batch", limit=1))[0].key == "h/1"
    await store.update("h/2", "v", description="batch size quadrupled to a huge batch")
    assert (await store.search("huge batch quadrupled", limit=1))[0].key == "h/2"
    await store.update("h/2", "v", embed=False)
    assert [h.key for h in await store.search("huge batch quadrupled")] == ["h/1"]
    await store.delete(["h/1"])
    assert await store.search("batch") == []


async def test_search_sees_writes_of_another_store_on_the_file(
    tmp_path: Path, embedder: Embedder
) -> None:
    """Two stores on one file (as two processes would): each search sees the other's writes."""
    db = tmp_path / "shared.db"
    async with LocalStore(db, embedder=embedder) as a, LocalStore(db, embedder=embedder) as b:
        await a.create([NewMemory("x/1", "v", "gradient clipping", embed=True)])
        assert [h.key for h in await b.search("clip the gradients")] == ["x/1"]
        await b.create([NewMemory("x/2", "v", "rotary embeddings base frequency", embed=True)])
        await b.delete(["x/1"])
        assert [h.key for h in await a.search("rotary base")] == ["x/2"]


async def test_vectors_bypass_the_embedder_and_scale(tmp_path: Path) -> None:
    """create(vectors=...) stores given vectors; search_vector ranks them by cosine."""
    rng = np.random.default_rng(1)
    vecs = rng.standard_normal((3000, 384)).astype(np.float32)
    async with LocalStore(tmp_path / "v.db") as s:
        items = [NewMemory(f"vec/{i:05d}", str(i), f"d{i}") for i in range(3000)]
        await s.create(items, vectors=list(vecs))
        hits = await s.search_vector(vecs[1234], limit=5)
        assert hits[0][0].key == "vec/01234" and hits[0][1] == pytest.approx(1.0, abs=1e-5)
        hits = await s.search_vector(vecs[1234], limit=5, prefix="vec/02")
        assert all(item.key.startswith("vec/02") for item, _ in hits) and len(hits) == 5
        # more than the unsorted tail holds: the index merges and stays right
        more = rng.standard_normal((2500, 384)).astype(np.float32)
        for i in range(0, 2500, 500):
            await s.create(
                [NewMemory(f"new/{j:05d}", "v") for j in range(i, i + 500)],
                vectors=list(more[i : i + 500]),
            )
            await s.search_vector(more[i], limit=1)
        assert (await s.search_vector(more[2222], limit=1))[0][0].key == "new/02222"
        assert (await s.search_vector(vecs[7], limit=1))[0][0].key == "vec/00007"


async def test_index_reloads_when_the_change_log_was_trimmed(tmp_path: Path) -> None:
    """A reader whose position fell out of the trimmed change log reloads fully."""
    rng = np.random.default_rng(2)
    v = rng.standard_normal((3, 384)).astype(np.float32)
    db = tmp_path / "t.db"
    async with LocalStore(db) as a, LocalStore(db) as b:
        await a.create([NewMemory("a", "v")], vectors=[v[0]])
        assert (await b.search_vector(v[0], limit=1))[0][0].key == "a"
        await a.create([NewMemory("b", "v"), NewMemory("c", "v")], vectors=[v[1], v[2]])
        with sqlite3.connect(db) as conn:  # what the periodic trim does
            conn.execute("DELETE FROM changes WHERE seq < (SELECT max(seq) FROM changes)")
        assert (await b.search_vector(v[1], limit=1))[0][0].key == "b"
        assert {i.key for i, _ in await b.search_vector(v[2], limit=3)} == {"a", "b", "c"}


def test_parse_like_and_prefix() -> None:
    """LIKE prefixes: escapes, wildcards, implied trailing %, and the @org/ part."""
    p = parse_like("results/", "home")
    assert (p.org, p.literal, p.regex) == ("home", "results/", None)
    p = parse_like("@my\\_org/res\\_1/", "home")
    assert (p.org, p.literal, p.regex) == ("my_org", "res_1/", None)
    p = parse_like("res_1/%", "home")
    assert p.literal == "res" and p.regex is not None
    assert p.matches("resX1/abc") and p.matches("res_1/") and not p.matches("res/1")
    assert parse_like("a%", "h").regex is None
    assert parse_prefix("@lab/x_", "home").literal == "x_"
    assert split_key("@autoresearch-at-home/best/x", "autoresearch-at-home") == (
        "autoresearch-at-home",
        "best/x",
    )
    with pytest.raises(InvalidRequestError, match="org"):
        parse_like("@a%b/x", "home")


async def test_closed_store_refuses_use(tmp_path: Path) -> None:
    """Using a store outside its async with raises a MemoryStoreError saying so."""
    s = LocalStore(tmp_path / "c.db")
    with pytest.raises(MemoryStoreError, match="not open"):
        await s.get(["x"])


async def test_several_processes_hammer_one_file(tmp_path: Path) -> None:
    """Four processes writing one file at once: no lock errors, every write present,
    and each contested claim won by exactly one process."""
    db = tmp_path / "mp.db"
    async with LocalStore(db) as s:
        await s.create([NewMemory("shared/counter", "start")])
    n_own, n_shared, names = 150, 60, ["p0", "p1", "p2", "p3"]
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            str(HERE / "hub_mp_writer.py"),
            str(db),
            name,
            str(n_own),
            str(n_shared),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for name in names
    ]
    outs = [await p.communicate() for p in procs]
    reports = []
    for p, (out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err.decode()[-2000:]
        assert b"database is locked" not in err
        reports.append(json.loads(out.decode().strip().splitlines()[-1]))
    for r in reports:
        assert r["errors"] == [], r["errors"][:5]
    won = [k for r in reports for k in r["won"]]
    assert sorted(won) == [f"claims/{i:04d}" for i in range(n_shared)]
    async with LocalStore(db) as s:
        for name in names:
            assert len(await s.list_keys(f"own/{name}/")) == n_own
        claims = await s.get([f"claims/{i:04d}" for i in range(n_shared)])
        owner = {k: r["name"] for r in reports for k in r["won"]}
        assert all(claims[k].value == owner[k] for k in claims)
        assert (await s.get(["shared/counter"]))["shared/counter"].value != "start"


async def test_concurrent_reads_are_batched_without_mixing_answers(tmp_path: Path) -> None:
    """Concurrent gets and searches (shared thread trips and matrix passes) each get exactly
    the answer they would get alone."""
    rng = np.random.default_rng(3)
    vecs = rng.standard_normal((400, 384)).astype(np.float32)
    async with LocalStore(tmp_path / "b.db") as s:
        keys = [f"{'ab'[i % 2]}/{i:04d}" for i in range(400)]
        await s.create([NewMemory(k, f"v{i}") for i, k in enumerate(keys)], vectors=list(vecs))
        await s.create([NewMemory("@lab/x", "lab")])
        asks = [[keys[i], "missing", "@lab/x"] if i % 3 == 0 else [keys[i]] for i in range(60)]
        alone = [await s.get_items(a) for a in asks]
        together = await asyncio.gather(*(s.get_items(a) for a in asks))
        assert together == alone
        assert together[0]["@lab/x"].value == "lab" and "missing" not in together[0]
        reqs = [(vecs[i], 1 + i % 7, [None, "a/", "b/", "a/00"][i % 4]) for i in range(40)]
        alone_hits = [await s.search_vector(v, limit=k, prefix=p) for v, k, p in reqs]
        together_hits = await asyncio.gather(
            *(s.search_vector(v, limit=k, prefix=p) for v, k, p in reqs)
        )
        for (_v, k, p), a, t in zip(reqs, alone_hits, together_hits, strict=True):
            assert [i.key for i, _ in t] == [i.key for i, _ in a]
            assert [sc for _, sc in t] == pytest.approx([sc for _, sc in a], abs=1e-5)
            assert len(t) == k and all(i.key.startswith(p or "") for i, _ in t)
