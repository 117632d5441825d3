"""A seeded fuzz run against a real hub process: 2,400 hostile requests over every tool,
every argument, the JSON-RPC envelope, batches, encodings and tokens.

Asserts no 5xx, no crash, bounded RSS growth, and that valid traffic works afterwards.
The seed is fixed (``FUZZ_SEED`` overrides it) so that a failure can be replayed.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import random
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from hub_proc import hub_process

from swarm.hub.protocol import TOOLS

N_REQUESTS = 2400
SEED = int(os.environ.get("FUZZ_SEED", "1212"))

SCALARS: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    1,
    99,
    100,
    101,
    2**31,
    2**31 + 1,
    2**63 - 1,
    -(2**63),
    2**64 - 1,
    0.5,
    -0.0,
    1e308,
    -1e308,
    1e-300,
    "",
    " ",
    "x",
    "0",
    "null",
    "true",
    "\x00",
    "\x01\x1f\x7f",
    "%",
    "%%%%",
    "_",
    "\\",
    "\\%",
    "%a%a%a%a%a%a%a%a%b",
    "_" * 500,
    "@",
    "@/",
    "@org",
    "@org/",
    "@other/k",
    "@bad org/k",
    "@a/@b",
    "a/b/c",
    "best/",
    "leaderboard",
    "leaderboardX",
    "claims/c1",
    "locks/mutex/m/g000001",
    "é✓𝄞",
    "\u202e\u200b",
    "inv_bogus",
    "swm_bogus",
    "x" * 1025,
    "y" * 5000,
    "../../etc/passwd",
    "'; DROP TABLE memories; --",
]
COMMANDS = [
    "grant",
    "revoke",
    "make_public",
    "make_private",
    "create_group",
    "set_external_group",
    "revoke_invite",
    "list_invites",
    "list",
    "explode",
    None,
    7,
]


def _value(rng: random.Random, depth: int = 0) -> Any:
    roll = rng.random()
    if roll < 0.6 or depth > 3:
        return rng.choice(SCALARS)
    if roll < 0.75:
        return [_value(rng, depth + 1) for _ in range(rng.choice((0, 1, 2, 5, 101)))]
    if roll < 0.85:
        return {
            rng.choice(("a", "key_name", "value", "command", "")): _value(rng, depth + 1)
            for _ in range(rng.randint(0, 3))
        }
    if roll < 0.92:
        return "".join(rng.choice("ab%_\\/@é\x00") for _ in range(rng.randint(1, 40)))
    return rng.choice(("r/", "best/", "claims/", "results/", "@zz/")) + str(rng.randint(0, 50))


def _plausible(rng: random.Random, name: str) -> Any:
    key = rng.choice(("r/", "best/", "claims/", "results/", "@zz/", "leaderboard")) + str(
        rng.randint(0, 30)
    )
    table: dict[str, Any] = {
        "key_name": key,
        "key_names": [key for _ in range(rng.choice((1, 3, 100, 101)))],
        "value": rng.choice(("v", "x" * 2000, "aGVsbG8=", "\x01" * 100)),
        "items": [
            {"key_name": key + str(i), "value": "v", "embed": rng.random() < 0.05}
            for i in range(rng.choice((1, 5, 100, 101)))
        ],
        "prefix": rng.choice(("", "r/", "r/%a%b", "%", "best/_", "@zz/")),
        "limit": rng.choice((1, 10, 100, 1000)),
        "offset": rng.choice((0, 5, 2**31, 2**63)),
        "query": rng.choice(("learning rate", "", " ", "x" * 70000)),
        "token": rng.choice(("inv_bogus", "")),
        "command": {
            "command": rng.choice(COMMANDS),
            "key_pattern": rng.choice(("best/", "%", 3)),
            "target": {"group_name": rng.choice(("read", "admin", "kings", 3))},
            "action": rng.choice(("read", "create", "fly")),
            "group_name": rng.choice(("participant", "admin", "x")),
            "invite_id": "nope",
        },
        "max_uses": rng.choice((1, 0, 1001, -5, "3")),
        "expires_in_s": rng.choice((60, 59, 10**9, 1.5)),
    }
    return table.get(name, _value(rng))


def _tool_call(rng: random.Random) -> dict[str, Any]:
    tool = rng.choice(TOOLS)
    props = list(tool["inputSchema"].get("properties", {}))
    args: dict[str, Any] = {}
    for name in props:
        roll = rng.random()
        if roll < 0.45:
            args[name] = _plausible(rng, name)
        elif roll < 0.8:
            args[name] = _value(rng)
    if rng.random() < 0.2:
        args[rng.choice(("extra", "", "__proto__"))] = _value(rng)
    params: Any = {"name": tool["name"], "arguments": args}
    if rng.random() < 0.05:
        params = rng.choice(
            ([], "x", None, {"name": _value(rng)}, {"name": tool["name"], "arguments": _value(rng)})
        )
    return {"jsonrpc": "2.0", "id": rng.randint(0, 10**6), "method": "tools/call", "params": params}


def _message(rng: random.Random) -> Any:
    roll = rng.random()
    if roll < 0.7:
        return _tool_call(rng)
    msg: dict[str, Any] = {
        "jsonrpc": rng.choice(("2.0", "1.0", 2, None)),
        "method": rng.choice(
            ("ping", "initialize", "tools/list", "notifications/x", "nope", "", 5)
        ),
    }
    if rng.random() < 0.8:
        msg["id"] = rng.choice((1, "a", None, 1.5, [], {}, True, 2**70))
    if rng.random() < 0.5:
        msg["params"] = _value(rng)
    return msg


def _request(rng: random.Random, tokens: list[str | None]) -> tuple[bytes, dict[str, str]]:
    roll = rng.random()
    if roll < 0.75:
        body = json.dumps(_message(rng)).encode()
    elif roll < 0.87:
        body = json.dumps(
            [_message(rng) for _ in range(rng.choice((0, 1, 2, 10, 100, 101)))]
        ).encode()
    else:
        body = rng.choice(
            (
                b"",
                b"{",
                b"[" * 3000 + b"]" * 3000,
                b"\xff\xfe",
                b"null",
                b"[]",
                b'{"jsonrpc":"2.0","id":1,"method":"ping"}' * 2,
                bytes(rng.getrandbits(8) for _ in range(64)),
            )
        )
    headers = {"Content-Type": rng.choice(("application/json", "text/plain", ""))}
    token = rng.choice(tokens)
    if token is not None:  # mostly well-formed, so that most requests reach the tools
        headers["Authorization"] = rng.choice(
            (f"Bearer {token}",) * 6 + (f"bearer  {token} ", token, "Bearer", "Basic abc")
        )
    enc = rng.random()
    if enc < 0.08:
        headers["Content-Encoding"] = "gzip"
        body = gzip.compress(body) if rng.random() < 0.7 else body
    elif enc < 0.1:
        headers["Content-Encoding"] = rng.choice(("deflate", "br", "zstd", "gzip, gzip"))
    if rng.random() < 0.05:
        headers["Accept"] = "text/event-stream"
    return body, headers


@pytest.mark.slow
async def test_fuzzed_requests_never_break_the_hub(tmp_path: Path) -> None:
    """2,400 seeded hostile requests: no 5xx, the hub stays up, its RSS grows by less than
    150 MiB, and valid traffic works afterwards."""
    rng = random.Random(SEED)
    async with hub_process(tmp_path, "--public-prefix", "r/") as hub:
        tokens: list[str | None] = [None, "swm_bogus", *hub.tokens.values(), *hub.tokens.values()]
        async with aiohttp.ClientSession() as s:

            async def send(body: bytes, headers: dict[str, str]) -> int:
                async with s.post(hub.url, data=body, headers=headers) as r:
                    await r.read()
                    return r.status

            warm = {
                "jsonrpc": "2.0",
                "id": 1,
                "method": "tools/call",
                "params": {"name": "search_memories", "arguments": {"query": "warm up"}},
            }
            assert (
                await send(
                    json.dumps(warm).encode(), {"Authorization": f"Bearer {hub.tokens['alice']}"}
                )
                == 200
            )
            base = hub.rss_mib()
            requests = [_request(rng, tokens) for _ in range(N_REQUESTS)]
            statuses: Counter[int] = Counter()
            bad: list[tuple[int, bytes]] = []
            sem = asyncio.Semaphore(8)

            async def one(body: bytes, headers: dict[str, str]) -> None:
                async with sem:
                    status = await send(body, headers)
                statuses[status] += 1
                if status >= 500:
                    bad.append((status, body[:300]))

            await asyncio.gather(*(one(b, h) for b, h in requests))
            assert bad == [], bad[:5]
            assert hub.alive()
            assert sum(statuses.values()) == N_REQUESTS
            assert len(statuses) >= 5, statuses  # the fuzz reached many kinds of answer
            grown = hub.rss_mib() - base
            assert grown < 150, (base, grown)

            alice = {"Authorization": f"Bearer {hub.tokens['alice']}"}
            create = {
                "jsonrpc": "2.0",
                "id": 2,
                "method": "tools/call",
                "params": {
                    "name": "create_memory",
                    "arguments": {"items": [{"key_name": "after/fuzz", "value": "still here"}]},
                },
            }
            get = {
                "jsonrpc": "2.0",
                "id": 3,
                "method": "tools/call",
                "params": {"name": "get_memory", "arguments": {"key_names": ["after/fuzz"]}},
            }
            async with s.post(hub.url, data=json.dumps([create, get]), headers=alice) as r:
                out = await r.json()
            assert out[0]["result"]["structuredContent"]["created"] == 1
            assert out[1]["result"]["structuredContent"]["results"][0]["value"] == "still here"
