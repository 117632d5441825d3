"""The hub's wire protocol: tools, result shapes, MCP handshake, and bad input."""

from __future__ import annotations

import asyncio
import base64
import json

import aiohttp
import pytest
from hub_helpers import Hub


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


async def test_tools_roundtrip_with_result_shapes(hub: Hub) -> None:
    """create, get, update, list, delete answer with Ensue's per-item shapes."""
    tok = hub.tokens["alice"]
    out = await hub.rpc.ok(
        "create_memory",
        {
            "items": [
                {
                    "key_name": "results/a",
                    "value": b64('{"val_bpb": 0.99}'),
                    "base64": True,
                    "description": "first result",
                },
                {"key_name": "results/b", "value": "plain", "description": "second"},
            ]
        },
        token=tok,
    )
    assert out["created"] == 2 and out["failed"] == 0
    assert [r["status"] for r in out["results"]] == ["success", "success"]
    assert isinstance(out["results"][0]["created_at"], float)

    out = await hub.rpc.ok("get_memory", {"key_names": ["results/a", "results/none"]}, token=tok)
    found, missing = out["results"]
    assert found["status"] == "success" and json.loads(found["value"]) == {"val_bpb": 0.99}
    assert found["description"] == "first result" and found["updated_at"] >= found["created_at"]
    assert missing == {
        "key_name": "results/none",
        "status": "error",
        "code": "not_found",
        "error": "key 'results/none' not found",
    }

    out = await hub.rpc.ok(
        "update_memory", {"key_name": "results/b", "value": b64("new"), "base64": True}, token=tok
    )
    assert out["status"] == "success" and out["updated_at"] >= out["created_at"]
    got = await hub.rpc.ok("get_memory", {"key_names": ["results/b"]}, token=tok)
    assert got["results"][0]["value"] == "new"

    listing = await hub.rpc.ok("list_keys", {"prefix": "results/", "limit": 1}, token=tok)
    assert [k["key_name"] for k in listing["keys"]] == ["results/a"] and listing["has_more"]
    listing = await hub.rpc.ok(
        "list_keys", {"prefix": "results/", "limit": 5, "offset": 1}, token=tok
    )
    assert [k["key_name"] for k in listing["keys"]] == ["results/b"] and not listing["has_more"]
    assert listing["keys"][0]["size"] == 3

    out = await hub.rpc.ok("delete_memory", {"key_names": ["results/a", "results/a"]}, token=tok)
    assert [r["status"] for r in out["results"]] == ["success", "error"]
    assert out["results"][1]["code"] == "not_found"


async def test_create_existing_key_is_a_per_item_error(hub: Hub) -> None:
    """A create on an existing key fails that item only, with code already_exists."""
    tok = hub.tokens["alice"]
    await hub.rpc.ok(
        "create_memory", {"items": [{"key_name": "claims/x", "value": "1"}]}, token=tok
    )
    out = await hub.rpc.ok(
        "create_memory",
        {"items": [{"key_name": "claims/x", "value": "2"}, {"key_name": "claims/y", "value": "3"}]},
        token=tok,
    )
    assert (
        out["results"][0]["code"] == "already_exists"
        and "already exists" in out["results"][0]["error"]
    )
    assert out["results"][1]["status"] == "success"


async def test_update_missing_key_is_a_tool_error_with_plain_text(hub: Hub) -> None:
    """update_memory of a missing key answers isError with a plain message (not JSON)."""
    status, body = await hub.rpc.tool(
        "update_memory", {"key_name": "best/none", "value": "v"}, token=hub.tokens["alice"]
    )
    assert status == 200
    result = body["result"]
    assert result["isError"] is True
    assert result["structuredContent"]["code"] == "not_found"
    text = result["content"][0]["text"]
    assert "best/none" in text
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)


async def test_org_prefixed_keys(hub: Hub) -> None:
    """'@org/key' of the hub's org is the same item; listings return the bare key."""
    tok = hub.tokens["alice"]
    await hub.rpc.ok(
        "create_memory",
        {"items": [{"key_name": "@autoresearch-at-home/best/metadata", "value": "m"}]},
        token=tok,
    )
    out = await hub.rpc.ok("get_memory", {"key_names": ["best/metadata"]}, token=tok)
    assert out["results"][0]["value"] == "m"
    listing = await hub.rpc.ok("list_keys", {"prefix": "@autoresearch-at-home/best/"}, token=tok)
    assert [k["key_name"] for k in listing["keys"]] == ["best/metadata"]


async def test_list_keys_prefix_is_a_like_pattern(hub: Hub) -> None:
    """list_keys treats the prefix as LIKE: escaped wildcards are literal, bare ones match."""
    tok = hub.tokens["alice"]
    await hub.rpc.ok(
        "create_memory",
        {"items": [{"key_name": k, "value": "v"} for k in ("run_1/a", "runX1/b", "run%1/c")]},
        token=tok,
    )
    esc = await hub.rpc.ok("list_keys", {"prefix": "run\\_1/"}, token=tok)
    assert [k["key_name"] for k in esc["keys"]] == ["run_1/a"]
    wild = await hub.rpc.ok("list_keys", {"prefix": "run_1/"}, token=tok)
    assert [k["key_name"] for k in wild["keys"]] == ["run%1/c", "runX1/b", "run_1/a"]
    clamp = await hub.rpc.ok("list_keys", {"prefix": "", "limit": 500}, token=tok)
    assert clamp["limit"] == 100


async def test_search_memories_shape_and_prefix(hub: Hub) -> None:
    """search_memories finds embedded items by meaning, honours prefix, returns scores."""
    tok = hub.tokens["alice"]
    await hub.rpc.ok(
        "create_memory",
        {
            "items": [
                {
                    "key_name": "claims/lr",
                    "value": b64('{"agent_id": "a"}'),
                    "base64": True,
                    "description": "increase the learning rate to 0.04",
                    "embed": True,
                },
                {
                    "key_name": "results/lr",
                    "value": "{}",
                    "description": "increase the learning rate",
                    "embed": True,
                },
                {
                    "key_name": "claims/depth",
                    "value": "{}",
                    "description": "add two more layers",
                    "embed": True,
                    "embed_source": "description",
                },
            ]
        },
        token=tok,
    )
    out = await hub.rpc.ok(
        "search_memories",
        {"query": "raise learning rate", "limit": 5, "prefix": "@autoresearch-at-home/claims/"},
        token=tok,
    )
    keys = [r["key_name"] for r in out["results"]]
    assert keys[0] == "claims/lr" and "results/lr" not in keys
    top = out["results"][0]
    assert json.loads(top["value"]) == {"agent_id": "a"}
    assert top["metadata"]["description"] == top["description"]
    assert out["results"][0]["score"] >= out["results"][-1]["score"]


async def test_mcp_handshake(hub: Hub) -> None:
    """initialize echoes a supported version, notifications get 202, tools/list has schemas."""
    hdr = {"Accept": "application/json, text/event-stream"}
    for version in ("2025-06-18", "2025-03-26", "2024-11-05"):
        status, body = await hub.rpc.call(
            "initialize",
            {
                "protocolVersion": version,
                "capabilities": {},
                "clientInfo": {"name": "t", "version": "1"},
            },
            headers=hdr,
        )
        assert status == 200 and body["result"]["protocolVersion"] == version
        assert "tools" in body["result"]["capabilities"]
    status, body = await hub.rpc.call("initialize", {"protocolVersion": "1999-01-01"})
    assert body["result"]["protocolVersion"] == "2025-11-25"
    status, _parsed, text = await hub.rpc.raw(
        json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}), headers=hdr
    )
    assert (status, text) == (202, "")
    status, body = await hub.rpc.call("tools/list", {}, headers=hdr)
    tools = {t["name"]: t for t in body["result"]["tools"]}
    assert {
        "create_memory",
        "get_memory",
        "update_memory",
        "delete_memory",
        "list_keys",
        "search_memories",
        "claim_invite",
        "create_invite",
        "share",
    } <= set(tools)
    assert all("inputSchema" in t and "outputSchema" not in t for t in tools.values())
    assert tools["create_memory"]["inputSchema"]["properties"]["items"]["maxItems"] == 100
    status, body = await hub.rpc.call("ping")
    assert status == 200 and body["result"] == {}


async def test_sse_framing_when_only_event_stream_is_accepted(hub: Hub) -> None:
    """A client accepting only text/event-stream gets one 'data: {json}' event."""
    status, _, text = await hub.rpc.raw(
        json.dumps({"jsonrpc": "2.0", "id": 7, "method": "ping"}),
        headers={"Accept": "text/event-stream"},
    )
    assert status == 200 and text.startswith("data: ") and text.endswith("\n\n")
    assert json.loads(text[len("data: ") :]) == {"jsonrpc": "2.0", "id": 7, "result": {}}


async def test_get_and_delete_verbs_are_405(hub: Hub) -> None:
    """GET (no server stream) and DELETE (no session) answer 405; health answers 200."""
    async with aiohttp.ClientSession() as s:
        async with s.get(hub.url, headers={"Accept": "text/event-stream"}) as r:
            assert r.status == 405 and r.headers["Allow"] == "POST"
        async with s.delete(hub.url) as r:
            assert r.status == 405
        async with s.get(hub.url + "healthz") as r:
            assert r.status == 200 and (await r.json())["status"] == "ok"


async def test_batch_requests(hub: Hub) -> None:
    """A JSON-RPC batch array gets an array of replies (notifications omitted)."""
    body = json.dumps(
        [
            {"jsonrpc": "2.0", "id": 1, "method": "ping"},
            {"jsonrpc": "2.0", "method": "notifications/initialized"},
            {"jsonrpc": "2.0", "id": 2, "method": "nope"},
        ]
    )
    status, parsed, _ = await hub.rpc.raw(body)
    assert status == 200 and [r["id"] for r in parsed] == [1, 2]
    assert parsed[1]["error"]["code"] == -32601


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("body", "http", "code", "words"),
    [
        ("{not json", 400, -32700, "parse error"),
        (b"\xff\xfe{}", 400, -32700, "UTF-8"),
        (
            '{"jsonrpc":"2.0","id":1,"method":"x","params":{"a":"\\ud800"}}',
            400,
            -32700,
            "surrogate",
        ),
        ("[]", 400, -32600, "empty batch"),
        ('"just a string"', 400, -32600, "object"),
        ('{"id":1,"method":"ping"}', 400, -32600, "jsonrpc"),
        ('{"jsonrpc":"1.0","id":1,"method":"ping"}', 400, -32600, "jsonrpc"),
        ('{"jsonrpc":"2.0","id":1,"method":5}', 400, -32600, "method"),
        ('{"jsonrpc":"2.0","id":1,"method":"ping","params":[1]}', 400, -32600, "params"),
        ('{"jsonrpc":"2.0","id":{"a":1},"method":"ping"}', 400, -32600, "id"),
        ('{"jsonrpc":"2.0","method":"tools/call"}', 400, -32600, "no id"),
        ('{"jsonrpc":"2.0","id":1,"method":"resources/list"}', 200, -32601, "unknown method"),
        ('{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{}}', 200, -32602, "params.name"),
        (
            '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"drop_db"}}',
            200,
            -32602,
            "unknown tool 'drop_db'",
        ),
        (
            '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get_memory",'
            '"arguments":[]}}',
            200,
            -32602,
            "arguments must be an object",
        ),
    ],
)
async def test_malformed_requests_get_jsonrpc_errors(
    hub: Hub, body: str | bytes, http: int, code: int, words: str
) -> None:
    """Malformed bodies and shapes get the right JSON-RPC error code, never a 500."""
    status, parsed, text = await hub.rpc.raw(body, token=hub.tokens["alice"])
    assert status == http, text
    assert parsed["error"]["code"] == code
    assert words in parsed["error"]["message"]


@pytest.mark.parametrize(
    ("tool", "args", "words"),
    [
        ("create_memory", {}, "missing required argument items"),
        ("create_memory", {"items": "x"}, "items must be a list"),
        ("create_memory", {"items": []}, "items is empty"),
        (
            "create_memory",
            {"items": [{"key_name": f"k{i}", "value": "v"} for i in range(101)]},
            "101 items in one call; send at most 100",
        ),
        ("create_memory", {"items": [{"value": "v"}]}, "items[0].key_name"),
        (
            "create_memory",
            {"items": [{"key_name": "k", "value": 5}]},
            "items[0].value must be a string",
        ),
        (
            "create_memory",
            {"items": [{"key_name": "k", "value": "v", "embed": "yes"}]},
            "items[0].embed must be true or false",
        ),
        (
            "create_memory",
            {"items": [{"key_name": "k", "value": "v", "embed_source": "body"}]},
            "embed_source must be 'description' or 'value'",
        ),
        ("create_memory", {"items": ["k"]}, "items[0] must be an object"),
        ("get_memory", {}, "missing required argument key_names"),
        ("get_memory", {"key_names": "k"}, "key_names must be a list"),
        ("get_memory", {"key_names": [1]}, "key_names[0] must be a string"),
        ("get_memory", {"key_names": [f"k{i}" for i in range(101)]}, "at most 100"),
        ("delete_memory", {"key_names": []}, "key_names is empty"),
        ("update_memory", {"value": "v"}, "missing required argument key_name"),
        ("update_memory", {"key_name": "k"}, "missing required argument value"),
        ("list_keys", {"limit": "ten"}, "limit must be an integer"),
        ("list_keys", {"limit": 0}, "limit must be at least 1"),
        ("list_keys", {"offset": -1}, "offset must be at least 0"),
        ("list_keys", {"prefix": "@org"}, "no '/'"),
        ("search_memories", {}, "missing required argument query"),
        ("search_memories", {"query": "  "}, "query is empty"),
        ("search_memories", {"query": "x", "limit": True}, "limit must be an integer"),
    ],
)
async def test_bad_arguments_are_invalid_params(
    hub: Hub, tool: str, args: dict[str, object], words: str
) -> None:
    """Missing, mistyped or too many arguments give -32602 naming the argument."""
    status, body = await hub.rpc.tool(tool, args, token=hub.tokens["alice"])
    assert status == 200
    assert body["error"]["code"] == -32602, body
    assert words in body["error"]["message"]


@pytest.mark.parametrize(
    ("item", "words"),
    [
        ({"key_name": "", "value": "v"}, "key is empty"),
        ({"key_name": "a\nb", "value": "v"}, "control character"),
        ({"key_name": "a\x7fb", "value": "v"}, "control character"),
        ({"key_name": "k", "value": "not base64!!", "base64": True}, "not valid base64"),
        (
            {"key_name": "k", "value": base64.b64encode(b"\xff\xfe").decode(), "base64": True},
            "not UTF-8",
        ),
        ({"key_name": "k", "value": "x" * ((1 << 20) + 1)}, "over the 1048576-byte limit"),
        (
            {
                "key_name": "k",
                "value": base64.b64encode(b"x" * ((1 << 20) + 1)).decode(),
                "base64": True,
            },
            "over the 1048576-byte limit",
        ),
    ],
)
async def test_bad_items_fail_alone_and_write_nothing(
    hub: Hub, item: dict[str, object], words: str
) -> None:
    """A bad item gets a per-item 'invalid' error naming the problem; its neighbour is written."""
    tok = hub.tokens["alice"]
    out = await hub.rpc.ok(
        "create_memory", {"items": [item, {"key_name": "good", "value": "v"}]}, token=tok
    )
    bad, good = out["results"]
    assert bad["status"] == "error" and bad["code"] == "invalid" and words in bad["error"]
    assert good["status"] == "success"
    listing = await hub.rpc.ok("list_keys", {"prefix": ""}, token=tok)
    assert [k["key_name"] for k in listing["keys"]] == ["good"]


async def test_bad_update_values_are_tool_errors(hub: Hub) -> None:
    """update_memory with invalid base64 or an oversize value is an isError 'invalid' result
    and the stored value stays."""
    tok = hub.tokens["alice"]
    await hub.rpc.ok(
        "create_memory", {"items": [{"key_name": "best/x", "value": "keep"}]}, token=tok
    )
    for args in (
        {"key_name": "best/x", "value": "%%%", "base64": True},
        {"key_name": "best/x", "value": "y" * ((1 << 20) + 5)},
        {"key_name": "bad\x01key", "value": "v"},
    ):
        status, body = await hub.rpc.tool("update_memory", args, token=tok)
        assert status == 200 and body["result"]["isError"] is True
        assert body["result"]["structuredContent"]["code"] == "invalid"
    got = await hub.rpc.ok("get_memory", {"key_names": ["best/x"]}, token=tok)
    assert got["results"][0]["value"] == "keep"


async def test_body_over_the_limit_is_413(hub: Hub) -> None:
    """A body larger than the hub accepts is refused with 413 and a JSON-RPC error."""
    huge = "x" * (140 << 20)
    status, parsed, _ = await hub.rpc.raw(
        json.dumps({"jsonrpc": "2.0", "id": 1, "method": "ping", "params": {"pad": huge}}),
        token=hub.tokens["alice"],
    )
    assert status == 413 and parsed["error"]["code"] == -32600
    assert "too large" in parsed["error"]["message"]


async def test_concurrent_creates_over_http_have_one_winner(hub: Hub) -> None:
    """Forty concurrent create_memory calls of one key from two agents: exactly one wins."""
    toks = [hub.tokens["alice"], hub.tokens["bob"]]
    outs = await asyncio.gather(
        *(
            hub.rpc.ok(
                "create_memory",
                {"items": [{"key_name": "claims/same", "value": str(i)}]},
                token=toks[i % 2],
            )
            for i in range(40)
        )
    )
    wins = [i for i, o in enumerate(outs) if o["results"][0]["status"] == "success"]
    assert len(wins) == 1
    assert all(
        o["results"][0]["code"] == "already_exists" for i, o in enumerate(outs) if i not in wins
    )
    got = await hub.rpc.ok("get_memory", {"key_names": ["claims/same"]}, token=toks[0])
    assert got["results"][0]["value"] == str(wins[0])


async def test_unexpected_fault_is_a_logged_internal_error(
    hub: Hub, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A bug inside a tool becomes HTTP 500 with -32603 (and a log line); the hub keeps serving."""

    async def broken(who: object, args: object, budget: object) -> dict[str, object]:
        raise RuntimeError("boom")

    monkeypatch.setitem(hub.handle.service.tools, "list_keys", broken)
    status, body = await hub.rpc.tool("list_keys", {}, token=hub.tokens["alice"])
    assert status == 500 and body["error"]["code"] == -32603
    assert "RuntimeError" in body["error"]["message"] and "boom" not in body["error"]["message"]
    assert "hub_internal_error" in caplog.text and "boom" in caplog.text
    status, body = await hub.rpc.call("ping")
    assert status == 200
