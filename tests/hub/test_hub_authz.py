"""Authorization leaks of issue 12 (findings 7-11) and the action x role matrix."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from hub_helpers import Hub, Rpc
from hub_proc import ENV

from swarm.errors import ConfigError
from swarm.hub import serve_hub
from swarm.hub.auth import DEFAULT_SHARED_DELETE, DEFAULT_SHARED_UPDATE, HubPolicy
from swarm.hub.backends import open_tokens

ROOT = Path(__file__).resolve().parents[2]


async def _create(hub: Hub, who: str, *keys: str) -> dict[str, Any]:
    return await hub.rpc.ok(
        "create_memory",
        {"items": [{"key_name": k, "value": f"by {who}"} for k in keys]},
        token=hub.tokens[who],
    )


def _codes(out: dict[str, Any]) -> list[str]:
    return [r.get("code", r["status"]) for r in out["results"]]


async def test_participants_write_only_their_org(hub: Hub) -> None:
    """Finding 7: a participant cannot create, update or delete keys of another org;
    an admin can."""
    out = await _create(hub, "alice", "@otherorg/best/x", "results/mine")
    assert _codes(out) == ["forbidden", "success"]
    root = await _create(hub, "root", "@otherorg/claims/c")
    assert _codes(root) == ["success"]
    _, body = await hub.rpc.tool(
        "update_memory", {"key_name": "@otherorg/claims/c", "value": "x"}, token=hub.tokens["alice"]
    )
    assert body["result"]["isError"] is True
    assert body["result"]["structuredContent"]["code"] == "forbidden"
    out = await hub.rpc.ok(
        "delete_memory", {"key_names": ["@otherorg/claims/c"]}, token=hub.tokens["bob"]
    )
    assert _codes(out) == ["forbidden"]
    got = await hub.rpc.ok(
        "get_memory", {"key_names": ["@otherorg/claims/c"]}, token=hub.tokens["reader"]
    )
    assert got["results"][0]["value"] == "by root"


async def test_shared_prefixes_are_exact(hub: Hub) -> None:
    """Finding 8: 'leaderboard' shares that one key (and leaderboard/...), not every key
    that starts with the word."""
    await _create(
        hub, "alice", "leaderboard", "leaderboard/xl", "leaderboards-of-alice", "leaderboardX"
    )
    for key, allowed in (
        ("leaderboard", True),
        ("leaderboard/xl", True),
        ("leaderboards-of-alice", False),
        ("leaderboardX", False),
    ):
        _, body = await hub.rpc.tool(
            "update_memory", {"key_name": key, "value": "bob was here"}, token=hub.tokens["bob"]
        )
        assert body["result"]["isError"] is not allowed, (key, body)


def test_shared_delete_defaults_match_help_and_readme() -> None:
    """Finding 8: the default shared prefixes are what `swarm hub --help` and the README say."""
    helptext = subprocess.run(
        [sys.executable, "-m", "swarm", "hub", "--help"],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=60,
    ).stdout
    flat = " ".join(helptext.split())
    upd = re.search(r"--shared-update-prefix PREFIX .*?\(repeatable; default (.*?)\)", flat)
    dele = re.search(r"--shared-delete-prefix PREFIX .*?\(repeatable; default (.*?)\)", flat)
    assert upd and dele, flat
    assert tuple(upd.group(1).split(", ")) == DEFAULT_SHARED_UPDATE
    assert tuple(dele.group(1).split(", ")) == DEFAULT_SHARED_DELETE
    readme = (ROOT / "README.md").read_text()
    for p in DEFAULT_SHARED_DELETE:
        assert f"`{p}`" in readme.split("shared-delete", 1)[1][:600], p
    with pytest.raises(ConfigError, match="ending in '/'"):
        HubPolicy(shared_delete_prefixes=("@other/claims/",))


async def test_invites_are_bounded_revocable_and_never_admin(hub: Hub) -> None:
    """Finding 9: an invite is used at most max_uses times, can be revoked, dies with its
    admin, and no path (role argument or external group) mints an admin invite."""
    root = hub.tokens["root"]
    inv = await hub.rpc.ok("create_invite", {}, token=root)
    assert inv["max_uses"] == 1 and inv["expires_at"] > time.time() + 86400
    first = await hub.rpc.ok("claim_invite", {"token": inv["token"]}, token=None)
    assert first["role"] == "participant"
    _, body = await hub.rpc.tool("claim_invite", {"token": inv["token"]})
    assert body["result"]["isError"] and "used up" in body["result"]["content"][0]["text"]

    inv2 = await hub.rpc.ok("create_invite", {"max_uses": 5}, token=root)
    await hub.rpc.ok(
        "share",
        {"command": {"command": "revoke_invite", "invite_id": inv2["invite_id"]}},
        token=root,
    )
    _, body = await hub.rpc.tool("claim_invite", {"token": inv2["token"]})
    assert body["result"]["isError"] and "revoked" in body["result"]["content"][0]["text"]

    _, body = await hub.rpc.tool("create_invite", {"role": "admin"}, token=root)
    assert body["error"]["code"] == -32602
    _, body = await hub.rpc.tool(
        "share", {"command": {"command": "set_external_group", "group_name": "admin"}}, token=root
    )
    assert body["result"]["isError"] and "never give admin" in body["result"]["content"][0]["text"]
    assert (await hub.rpc.ok("create_invite", {}, token=root))["role"] == "participant"

    inv3 = await hub.rpc.ok("create_invite", {"max_uses": 3}, token=root)
    assert hub.handle.revoke_token("root")
    _, body = await hub.rpc.tool("claim_invite", {"token": inv3["token"]})
    assert body["result"]["isError"] and "was revoked" in body["result"]["content"][0]["text"]
    hub.handle.add_token("root", "admin")  # a new root token does not revive the invite
    _, body = await hub.rpc.tool("claim_invite", {"token": inv3["token"]})
    assert body["result"]["isError"]


async def test_expired_invites_do_not_work(hub: Hub) -> None:
    """Finding 9: an invite past its expiry is refused."""
    with open_tokens(hub.db) as ts:
        who = next(p for p in ts.snapshot().tokens.values() if p.name == "root")
        token, _ = ts.create_invite("participant", who, max_uses=5, ttl_s=0.05)
    await asyncio.sleep(0.1)
    _, body = await hub.rpc.tool("claim_invite", {"token": token})
    assert body["result"]["isError"] and "expired" in body["result"]["content"][0]["text"]
    _, body = await hub.rpc.tool(
        "create_invite", {"expires_in_s": 10**12}, token=hub.tokens["root"]
    )
    assert body["error"]["code"] == -32602


async def test_revocation_is_immediate_from_another_process(hub: Hub) -> None:
    """Finding 10: after `token revoke` (another connection to the file, as the CLI does)
    returns, not one more write with that token is accepted (58 got through before)."""
    alice = hub.tokens["alice"]
    revoked_at: list[float] = []
    late: list[int] = []

    async def writer() -> None:  # writes until 401, or for 3 s after the revoke
        i = 0
        while not revoked_at or time.monotonic() < revoked_at[0] + 3.0:
            i += 1
            t_sent = time.monotonic()
            status, body = await hub.rpc.tool(
                "create_memory", {"items": [{"key_name": f"w/{i}", "value": "v"}]}, token=alice
            )
            if status == 200 and "result" in body and revoked_at and t_sent > revoked_at[0]:
                late.append(i)
            if status == 401:
                return

    async def revoker() -> None:
        await asyncio.sleep(0.3)
        with open_tokens(hub.db) as ts:
            assert await asyncio.to_thread(ts.revoke, "alice")
        revoked_at.append(time.monotonic())

    await asyncio.gather(writer(), revoker())
    assert revoked_at and late == []


async def test_new_token_under_revoked_name_owns_nothing(hub: Hub) -> None:
    """Finding 10: a token issued under a revoked name does not inherit its records."""
    await _create(hub, "alice", "results/alice-run")
    hub.handle.revoke_token("alice")
    new_alice = hub.handle.add_token("alice", "participant")
    _, body = await hub.rpc.tool(
        "update_memory", {"key_name": "results/alice-run", "value": "x"}, token=new_alice
    )
    assert body["result"]["isError"] and body["result"]["structuredContent"]["code"] == "forbidden"
    out = await hub.rpc.ok("delete_memory", {"key_names": ["results/alice-run"]}, token=new_alice)
    assert _codes(out) == ["forbidden"]


async def test_tokens_never_reach_the_log(hub: Hub, caplog: pytest.LogCaptureFixture) -> None:
    """Finding 11: a malformed header line that carries a token is refused with 400 and
    the token does not appear in the log."""
    secret = "swm_TopSecretValue123"
    r, w = await asyncio.open_connection("127.0.0.1", hub.handle.port)
    w.write(
        b"POST / HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
        + secret.encode()
        + b"\x01junk\r\nContent-Length: 2\r\n\r\n{}"
    )
    await w.drain()
    answer = await asyncio.wait_for(r.read(), 5)
    w.close()
    assert answer.split(b"\r\n", 1)[0].endswith(b" 400 Bad Request")
    r, w = await asyncio.open_connection("127.0.0.1", hub.handle.port)
    w.write(b"POST / HTTP/1.1\r\nHost: x\r\nX-Bad Header: Bearer " + secret.encode() + b"\r\n\r\n")
    await w.drain()
    await asyncio.wait_for(r.read(), 5)
    w.close()
    logged = caplog.text  # the library logs through the standard logging tree
    assert "hub.http" in logged
    assert secret not in logged and "TopSecret" not in logged


# --------------------------------------------------------------------------- the matrix

ROLE_TOKENS = ("anon", "reader", "alice", "root")  # alice: participant; bob owns the targets

# action -> expected outcome per role in ROLE_TOKENS order (True: allowed)
MATRIX: dict[str, tuple[bool, bool, bool, bool]] = {
    "read_private": (False, True, True, True),
    "read_public": (True, True, True, True),
    "create_own_org": (False, False, True, True),
    "create_other_org": (False, False, False, True),
    "update_own": (False, False, True, True),
    "update_others": (False, False, False, True),
    "update_shared": (False, False, True, True),
    "update_other_org": (False, False, False, True),
    "delete_others": (False, False, False, True),
    "delete_shared_claim": (False, False, True, True),
    "list_private": (False, True, True, True),
    "create_invite": (False, False, False, True),
    "share_list": (False, False, False, True),
}


async def _attempt(hub: Hub, action: str, who: str, n: int) -> bool:
    tok = None if who == "anon" else hub.tokens[who]
    mine = f"results/{who}-{n}"
    if action == "update_own" and who in ("alice", "root"):  # the others cannot create
        await hub.rpc.ok("create_memory", {"items": [{"key_name": mine, "value": "v"}]}, token=tok)
    calls: dict[str, tuple[str, dict[str, Any]]] = {
        "read_private": ("get_memory", {"key_names": ["results/bob"]}),
        "read_public": ("get_memory", {"key_names": ["best/pub"]}),
        "create_own_org": (
            "create_memory",
            {"items": [{"key_name": f"new/{who}{n}", "value": "v"}]},
        ),
        "create_other_org": (
            "create_memory",
            {"items": [{"key_name": f"@zz/new/{who}{n}", "value": "v"}]},
        ),
        "update_own": ("update_memory", {"key_name": mine, "value": "v2"}),
        "update_others": ("update_memory", {"key_name": "results/bob", "value": "v2"}),
        "update_shared": ("update_memory", {"key_name": "best/pub", "value": "v2"}),
        "update_other_org": ("update_memory", {"key_name": "@zz/claims/bob", "value": "v2"}),
        "delete_others": ("delete_memory", {"key_names": [f"results/bob-del-{who}"]}),
        "delete_shared_claim": ("delete_memory", {"key_names": [f"claims/bob-{who}"]}),
        "list_private": ("list_keys", {"prefix": "results/"}),
        "create_invite": ("create_invite", {}),
        "share_list": ("share", {"command": {"command": "list"}}),
    }
    tool, args = calls[action]
    status, body = await hub.rpc.tool(tool, args, token=tok)
    if status != 200 or "error" in body:
        return False
    result = body["result"]
    if result["isError"]:
        return False
    rows = result["structuredContent"].get("results")
    if isinstance(rows, list) and rows and "status" in rows[0]:
        return all(r["status"] == "success" for r in rows)
    return True


async def test_authorization_matrix(tmp_path: Path) -> None:
    """Every action x role (anonymous, read, participant, admin) is allowed or refused
    exactly as the table says, over a real hub with a public prefix."""
    async with serve_hub(tmp_path / "m.db", public_prefixes=["best/"]) as handle:
        tokens = {
            n: handle.add_token(n, r)
            for n, r in (
                ("reader", "read"),
                ("alice", "participant"),
                ("bob", "participant"),
                ("root", "admin"),
            )
        }
        async with aiohttp.ClientSession() as session:
            hub = Hub(handle, Rpc(session, handle.url), tokens)
            keys = [
                "results/bob",
                "best/pub",
                *(f"results/bob-del-{w}" for w in ROLE_TOKENS),
                *(f"claims/bob-{w}" for w in ROLE_TOKENS),
            ]
            await hub.rpc.ok(
                "create_memory",
                {"items": [{"key_name": k, "value": "v"} for k in keys]},
                token=tokens["bob"],
            )
            await hub.rpc.ok(
                "create_memory",
                {"items": [{"key_name": "@zz/claims/bob", "value": "v"}]},
                token=tokens["root"],
            )
            wrong: list[str] = []
            for n, (action, expected) in enumerate(MATRIX.items()):
                for who, allowed in zip(ROLE_TOKENS, expected, strict=True):
                    got = await _attempt(hub, action, who, n)
                    if got != allowed:
                        wrong.append(f"{action} by {who}: got {got}, want {allowed}")
            assert wrong == []
