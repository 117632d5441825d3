"""Hub authentication and authorisation: tokens, roles, ownership, public prefixes, share."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest
from hub_helpers import Hub, Rpc

from swarm.embedding import Embedder
from swarm.errors import ConfigError
from swarm.hub import HubPolicy, TokenStore, serve_hub


async def _create(hub: Hub, who: str, *keys: str) -> None:
    out = await hub.rpc.ok(
        "create_memory",
        {"items": [{"key_name": k, "value": f"by {who}"} for k in keys]},
        token=hub.tokens[who],
    )
    assert out["created"] == len(keys), out


async def test_bad_and_revoked_tokens_get_401(hub: Hub) -> None:
    """An unknown token, a malformed header and a revoked token are refused with HTTP 401."""
    status, body = await hub.rpc.tool("get_memory", {"key_names": ["x"]}, token="swm_nope")
    assert status == 401 and body["error"]["code"] == -32001
    assert "unknown or revoked token" in body["error"]["message"]
    status, body, _ = await hub.rpc.raw(
        '{"jsonrpc":"2.0","id":1,"method":"ping"}', headers={"Authorization": "Basic abc"}
    )
    assert status == 401 and "Bearer" in body["error"]["message"]
    await _create(hub, "alice", "results/a")
    assert hub.handle.revoke_token("alice")
    status, body = await hub.rpc.tool(
        "get_memory", {"key_names": ["results/a"]}, token=hub.tokens["alice"]
    )
    assert status == 401


async def test_anonymous_may_not_write(hub: Hub) -> None:
    """Writes without a token are refused with 401 and write nothing."""
    for tool, args in (
        ("create_memory", {"items": [{"key_name": "k", "value": "v"}]}),
        ("update_memory", {"key_name": "k", "value": "v"}),
        ("delete_memory", {"key_names": ["k"]}),
    ):
        status, body = await hub.rpc.tool(tool, args)
        assert status == 401, (tool, body)
        assert "needs a token" in body["error"]["message"]
    listing = await hub.rpc.ok("list_keys", {}, token=hub.tokens["reader"])
    assert listing["keys"] == []


async def test_anonymous_reads_only_public_keys(tmp_path: Path, embedder: Embedder) -> None:
    """Without a token only keys under a public prefix can be read, listed or searched."""
    async with serve_hub(tmp_path / "p.db", public_prefixes=["best/"], embedder=embedder) as h:
        tok = h.add_token("alice", "participant")
        async with aiohttp.ClientSession() as session:
            rpc = Rpc(session, h.url)
            await rpc.ok(
                "create_memory",
                {
                    "items": [
                        {
                            "key_name": "best/metadata",
                            "value": "pub",
                            "description": "best",
                            "embed": True,
                        },
                        {
                            "key_name": "results/x",
                            "value": "priv",
                            "description": "best",
                            "embed": True,
                        },
                    ]
                },
                token=tok,
            )
            out = await rpc.ok(
                "get_memory", {"key_names": ["best/metadata", "results/x"]}, token=None
            )
            pub, priv = out["results"]
            assert pub["value"] == "pub"
            assert priv["status"] == "error" and priv["code"] == "forbidden" and "value" not in priv
            listing = await rpc.ok("list_keys", {"prefix": "best/"}, token=None)
            assert [k["key_name"] for k in listing["keys"]] == ["best/metadata"]
            status, body = await rpc.tool("list_keys", {"prefix": ""})
            assert status == 401 and "public prefixes: best/" in body["error"]["message"]
            status, body = await rpc.tool("search_memories", {"query": "best"})
            assert status == 401
            hits = await rpc.ok("search_memories", {"query": "best", "prefix": "best/"}, token=None)
            assert [r["key_name"] for r in hits["results"]] == ["best/metadata"]


async def test_read_role_reads_but_may_not_write(hub: Hub) -> None:
    """A read token reads everything and gets 403 on writes."""
    await _create(hub, "alice", "results/a")
    tok = hub.tokens["reader"]
    out = await hub.rpc.ok("get_memory", {"key_names": ["results/a"]}, token=tok)
    assert out["results"][0]["value"] == "by alice"
    for tool, args in (
        ("create_memory", {"items": [{"key_name": "k", "value": "v"}]}),
        ("update_memory", {"key_name": "results/a", "value": "v"}),
        ("delete_memory", {"key_names": ["results/a"]}),
    ):
        status, body = await hub.rpc.tool(tool, args, token=tok)
        assert status == 403 and body["error"]["code"] == -32003, (tool, body)
        assert "role read" in body["error"]["message"]


async def test_participants_own_records(hub: Hub) -> None:
    """Participants update/delete their own records but not others' results."""
    await _create(hub, "alice", "results/a", "insights/a")
    bob = hub.tokens["bob"]
    status, body = await hub.rpc.tool(
        "update_memory", {"key_name": "results/a", "value": "x"}, token=bob
    )
    assert status == 200 and body["result"]["isError"] is True
    assert body["result"]["structuredContent"]["code"] == "forbidden"
    assert "alice" in body["result"]["content"][0]["text"]
    out = await hub.rpc.ok("delete_memory", {"key_names": ["results/a", "insights/a"]}, token=bob)
    assert [r["code"] for r in out["results"]] == ["forbidden", "forbidden"]
    alice = hub.tokens["alice"]
    await hub.rpc.ok("update_memory", {"key_name": "results/a", "value": "mine"}, token=alice)
    out = await hub.rpc.ok("delete_memory", {"key_names": ["insights/a"]}, token=alice)
    assert out["deleted"] == 1
    got = await hub.rpc.ok("get_memory", {"key_names": ["results/a"]}, token=bob)
    assert got["results"][0]["value"] == "mine"


async def test_participants_share_best_leaderboard_and_claims(hub: Hub) -> None:
    """Anyone may update best/ and leaderboard, and take over (update/delete) claims."""
    await _create(hub, "alice", "best/metadata", "leaderboard", "claims/c1", "hypotheses/h1")
    bob = hub.tokens["bob"]
    for key in ("best/metadata", "leaderboard", "claims/c1", "hypotheses/h1"):
        await hub.rpc.ok("update_memory", {"key_name": key, "value": "bob"}, token=bob)
    out = await hub.rpc.ok("delete_memory", {"key_names": ["claims/c1"]}, token=bob)
    assert out["deleted"] == 1
    out = await hub.rpc.ok("delete_memory", {"key_names": ["best/metadata"]}, token=bob)
    assert out["results"][0]["code"] == "forbidden"


async def test_admin_may_do_anything(hub: Hub) -> None:
    """An admin updates and deletes records of others."""
    await _create(hub, "alice", "results/a")
    root = hub.tokens["root"]
    await hub.rpc.ok("update_memory", {"key_name": "results/a", "value": "fixed"}, token=root)
    out = await hub.rpc.ok("delete_memory", {"key_names": ["results/a"]}, token=root)
    assert out["deleted"] == 1


async def test_share_is_admin_only_and_takes_effect(hub: Hub) -> None:
    """share make_public/grant by an admin change what others may do; others get 403."""
    await _create(hub, "alice", "results/a")
    cmd = {"command": {"command": "make_public", "key_pattern": "results/"}}
    status, body = await hub.rpc.tool("share", cmd, token=hub.tokens["alice"])
    assert status == 403 and "not an admin" in body["error"]["message"]
    out = await hub.rpc.ok("get_memory", {"key_names": ["results/a"]}, token=None)
    assert out["results"][0]["code"] == "forbidden"
    await hub.rpc.ok("share", cmd, token=hub.tokens["root"])
    out = await hub.rpc.ok("get_memory", {"key_names": ["results/a"]}, token=None)
    assert out["results"][0]["value"] == "by alice"
    grant = {
        "command": {
            "command": "grant",
            "target": {"type": "group", "group_name": "participants"},
            "action": "update",
            "key_pattern": "results/",
        }
    }
    await hub.rpc.ok("share", grant, token=hub.tokens["root"])
    await hub.rpc.ok(
        "update_memory", {"key_name": "results/a", "value": "bob"}, token=hub.tokens["bob"]
    )
    listing = await hub.rpc.ok("share", {"command": {"command": "list"}}, token=hub.tokens["root"])
    assert listing["public"] == ["results/"]
    assert {"role": "participant", "action": "update", "key_pattern": "results/"} in listing[
        "grants"
    ]
    status, body = await hub.rpc.tool(
        "share", {"command": {"command": "explode"}}, token=hub.tokens["root"]
    )
    assert (
        body["error"]["code"] == -32602 and "unknown command 'explode'" in body["error"]["message"]
    )


async def test_invites_upgrade_or_mint_tokens(hub: Hub) -> None:
    """create_invite (admin) and claim_invite: a read token becomes a participant; an
    anonymous claimer gets a new participant token."""
    status, _ = await hub.rpc.tool("create_invite", {"auto_approve": True}, token=hub.tokens["bob"])
    assert status == 403
    invite = (
        await hub.rpc.ok(
            "create_invite", {"auto_approve": True, "max_uses": 2}, token=hub.tokens["root"]
        )
    )["token"]
    reader = hub.tokens["reader"]
    out = await hub.rpc.ok("claim_invite", {"token": invite}, token=reader)
    assert out["role"] == "participant" and out["name"] == "reader"
    await hub.rpc.ok(
        "create_memory", {"items": [{"key_name": "claims/r", "value": "v"}]}, token=reader
    )
    out = await hub.rpc.ok("claim_invite", {"token": invite}, token=None)
    new = out["api_key"]
    await hub.rpc.ok(
        "create_memory", {"items": [{"key_name": "claims/n", "value": "v"}]}, token=new
    )
    status, body = await hub.rpc.tool("claim_invite", {"token": "inv_bogus"}, token=reader)
    assert (
        body["result"]["isError"] is True
        and "unknown invite" in body["result"]["content"][0]["text"]
    )


async def test_open_access_needs_no_token(tmp_path: Path, embedder: Embedder) -> None:
    """open_access=True serves everything without tokens (any bearer string is accepted)."""
    async with (
        serve_hub(tmp_path / "o.db", open_access=True, embedder=embedder) as h,
        aiohttp.ClientSession() as session,
    ):
        rpc = Rpc(session, h.url)
        await rpc.ok("create_memory", {"items": [{"key_name": "k", "value": "v"}]}, token=None)
        await rpc.ok("update_memory", {"key_name": "k", "value": "w"}, token="whatever")
        out = await rpc.ok("delete_memory", {"key_names": ["k"]}, token=None)
        assert out["deleted"] == 1


async def test_custom_policy_narrows_shared_prefixes(tmp_path: Path, embedder: Embedder) -> None:
    """A policy without shared prefixes keeps participants to their own records."""
    policy = HubPolicy(shared_update_prefixes=(), shared_delete_prefixes=())
    async with serve_hub(tmp_path / "c.db", policy=policy, embedder=embedder) as h:
        a, b = h.add_token("a", "participant"), h.add_token("b", "participant")
        async with aiohttp.ClientSession() as session:
            rpc = Rpc(session, h.url)
            await rpc.ok(
                "create_memory", {"items": [{"key_name": "best/x", "value": "v"}]}, token=a
            )
            _, body = await rpc.tool("update_memory", {"key_name": "best/x", "value": "w"}, token=b)
            assert body["result"]["structuredContent"]["code"] == "forbidden"


def test_token_store_keeps_only_hashes(tmp_path: Path) -> None:
    """Tokens are stored hashed, names are unique while live, and revoke works once."""
    db = tmp_path / "t.db"
    with TokenStore(db) as ts:
        token = ts.add("ci-bot", "participant")
        assert token.startswith("swm_") and len(token) > 40
        with pytest.raises(ConfigError, match="exists"):
            ts.add("ci-bot", "read")
        with pytest.raises(ConfigError, match="role"):
            ts.add("x", "owner")
        with pytest.raises(ConfigError, match="name"):
            ts.add("bad name!", "read")
        assert [(t.name, t.role) for t in ts.list()] == [("ci-bot", "participant")]
        assert ts.snapshot().principal(token) is not None
        assert ts.revoke("ci-bot") and not ts.revoke("ci-bot")
        assert ts.snapshot().principal(token) is None
        token2 = ts.add("ci-bot", "read")  # a revoked name can be reused
        assert ts.snapshot().principal(token2).role == "read"  # type: ignore[union-attr]
    raw = db.read_bytes()
    assert token.encode() not in raw and token2.encode() not in raw
