"""Clients nobody here wrote, pointed at the hub: the PyPI ensue-cli (an MCP streamable-HTTP
client) and a raw JSON-RPC client in the style of the original collaborative fork."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests
from hub_helpers import Hub

ORG = "autoresearch-at-home"


def _ensue_exe() -> str:
    exe = Path(sys.executable).with_name("ensue")
    found = str(exe) if exe.exists() else shutil.which("ensue")
    assert found, "the ensue-cli package (dev dependency) provides the 'ensue' command"
    return found


async def _ensue(hub: Hub, token: str, *args: str) -> tuple[int, str, str]:
    env = dict(os.environ, ENSUE_URL=hub.url, ENSUE_TOKEN=token, NO_COLOR="1", COLUMNS="200")
    env.pop("ENSUE_PREFIX", None)
    env.pop("ENSUE_WRITABLE", None)
    proc = await asyncio.create_subprocess_exec(
        _ensue_exe(),
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
    rc = proc.returncode
    assert rc is not None and rc >= 0, f"ensue was killed by signal {-(rc or 0)}"
    # an error answer of the hub must reach the user as a message, never crash the client
    assert b"Traceback (most recent call last)" not in err, err.decode()
    return rc, out.decode(), err.decode()


@pytest.mark.slow
async def test_ensue_cli_mem_roundtrip(hub: Hub) -> None:
    """ensue mem put/get/ls/search/rm (the real CLI over MCP streamable HTTP) round trip."""
    tok = hub.tokens["alice"]
    doc = {"text": "warmup of the learning rate helps deep models", "val_bpb": 0.99}
    rc, out, err = await _ensue(hub, tok, "mem", "put", "notes/lr", "--value", json.dumps(doc))
    assert rc == 0, err
    assert "created" in err
    rc, out, err = await _ensue(
        hub, tok, "mem", "put", "notes/lr", "--value", json.dumps({**doc, "val_bpb": 0.98})
    )
    assert rc == 0 and "updated" in err, err
    rc, out, err = await _ensue(hub, tok, "mem", "get", "notes/lr")
    assert rc == 0, err
    assert json.loads(out) == {**doc, "val_bpb": 0.98}
    rc, out, err = await _ensue(hub, tok, "mem", "get", "--json", "notes/lr", "notes/none")
    assert rc == 1 and "notes/none" in err
    rows = json.loads(out)
    assert rows[0]["key"] == "notes/lr" and rows[0]["created_at"] <= rows[0]["updated_at"]
    rc, out, err = await _ensue(hub, tok, "mem", "ls", "--json", "notes/")
    assert rc == 0, err
    assert [r["key"] for r in json.loads(out)] == ["notes/lr"]
    assert json.loads(out)[0]["description"].startswith("warmup of the learning rate")
    rc, out, err = await _ensue(hub, tok, "mem", "search", "--json", "learning rate warmup")
    assert rc == 0, err
    hits = json.loads(out)
    assert hits[0]["key"] == "notes/lr" and hits[0]["score"] > 0.3
    assert hits[0]["description"].startswith("warmup")
    rc, out, err = await _ensue(hub, tok, "mem", "rm", "--json", "--yes", "notes/lr")
    assert rc == 0, err
    assert json.loads(out) == {"deleted": ["notes/lr"], "failed": []}
    rc, out, err = await _ensue(hub, tok, "mem", "get", "notes/lr")
    assert rc == 1 and "not found" in err


@pytest.mark.slow
async def test_ensue_cli_dynamic_tool_commands(hub: Hub) -> None:
    """ensue builds commands from tools/list: list_keys and get_memory work through them."""
    tok = hub.tokens["alice"]
    await hub.rpc.ok("create_memory", {"items": [{"key_name": "a/b", "value": "hello"}]}, token=tok)
    rc, out, err = await _ensue(hub, tok, "get_memory", "--key-names", '["a/b"]')
    assert rc == 0, err
    assert '"hello"' in out
    rc, out, err = await _ensue(hub, "swm_wrong", "mem", "get", "a/b")
    assert rc != 0 and "401" in (out + err)


# --------------------------------------------------------------------- raw JSON-RPC client


def legacy_rpc(url: str, api_key: str, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """A client written the way the original fork wrote it: requests.post, no Accept header,
    a leading 'data: ' stripped, the JSON text of content[0] parsed."""
    resp = requests.post(
        url,
        headers={"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"},
        json={
            "jsonrpc": "2.0",
            "method": "tools/call",
            "params": {"name": tool, "arguments": arguments},
            "id": 1,
        },
        timeout=30,
    )
    resp.raise_for_status()
    text = resp.text.strip()
    if text.startswith("data: "):
        text = text[len("data: ") :]
    data = json.loads(text)
    if "error" in data:
        raise RuntimeError(f"RPC error: {data['error']}")
    content = data.get("result", {}).get("content", [])
    if content and isinstance(content[0], dict) and "text" in content[0]:
        return dict(json.loads(content[0]["text"]))
    return dict(data.get("result", {}))


def legacy_agent_session(url: str, key: str) -> dict[str, Any]:
    """What an agent of the original fork does in one experiment, against ``url``."""

    def rpc(tool: str, args: dict[str, Any]) -> dict[str, Any]:
        return legacy_rpc(url, key, tool, args)

    def b64json(obj: Any) -> str:
        return base64.b64encode(json.dumps(obj).encode()).decode()

    seen: dict[str, Any] = {}
    exp = "ada--increase-lr-to-0-04--a7f3b2"
    claim_key = f"@{ORG}/claims/{exp}"
    claim = {
        "agent_id": "ada",
        "description": "increase LR to 0.04",
        "claimed_at": datetime.now(UTC).isoformat(),
        "status": "claimed",
    }
    rpc(
        "create_memory",
        {
            "items": [
                {
                    "key_name": claim_key,
                    "description": "[autoresearch] Claim: increase LR to 0.04",
                    "value": b64json(claim),
                    "base64": True,
                    "embed": True,
                    "embed_source": "description",
                }
            ]
        },
    )
    verify = rpc("get_memory", {"key_names": [claim_key]})["results"]
    seen["claim_holder"] = json.loads(verify[0]["value"])["agent_id"]
    seen["claim_status"] = verify[0]["status"]
    similar = rpc(
        "search_memories", {"query": "increase LR to 0.04", "limit": 5, "prefix": f"@{ORG}/claims/"}
    )["results"]
    seen["similar"] = [
        (m["key_name"], m["score"], json.loads(m["value"])["agent_id"]) for m in similar
    ]
    result = {
        "agent_id": "ada",
        "val_bpb": 0.9912,
        "status": "keep",
        "description": "increase LR to 0.04",
        "train_py": "print('hi')\n",
    }
    rpc(
        "create_memory",
        {
            "items": [
                {
                    "key_name": f"@{ORG}/results/{exp}",
                    "value": b64json(result),
                    "base64": True,
                    "description": "[autoresearch] Result: [ada KEEP] val_bpb=0.991200",
                    "embed": True,
                    "embed_source": "description",
                }
            ]
        },
    )
    # personal best: update, and create when the update fails
    best_key = f"@{ORG}/best/agent/ada"
    try:
        rpc(
            "update_memory",
            {"key_name": best_key, "value": b64json({"val_bpb": 0.9912}), "base64": True},
        )
        seen["best_path"] = "update"
    except Exception:  # the fork's idiom: any failure of the update means "create it"
        rpc(
            "create_memory",
            {
                "items": [
                    {
                        "key_name": best_key,
                        "value": b64json({"val_bpb": 0.9912}),
                        "base64": True,
                        "description": "personal best",
                    }
                ]
            },
        )
        seen["best_path"] = "create"
    listing = rpc("list_keys", {"prefix": f"@{ORG}/best/agent/", "limit": 200})
    names = [k.get("key_name", k) if isinstance(k, dict) else k for k in listing["keys"]]
    seen["best_names"] = names
    bests = [
        json.loads(rpc("get_memory", {"key_names": [f"@{ORG}/{n}"]})["results"][0]["value"])
        for n in names
    ]
    seen["bests"] = bests
    results = rpc("list_keys", {"prefix": f"@{ORG}/results/", "limit": 200})["keys"]
    seen["results"] = [k["key_name"] for k in results]
    got = rpc("get_memory", {"key_names": [f"@{ORG}/results/{exp}"]})["results"][0]
    seen["train_py"] = json.loads(got["value"])["train_py"]
    rpc("delete_memory", {"key_names": [claim_key]})
    seen["claim_after"] = rpc("get_memory", {"key_names": [claim_key]})["results"][0]["status"]
    return seen


async def test_legacy_raw_client_full_session(hub: Hub) -> None:
    """The original fork's raw client runs a whole experiment cycle against the hub."""
    seen = await asyncio.to_thread(legacy_agent_session, hub.url, hub.tokens["alice"])
    assert seen["claim_status"] == "success" and seen["claim_holder"] == "ada"
    assert seen["similar"][0][0] == "claims/ada--increase-lr-to-0-04--a7f3b2"
    assert seen["similar"][0][1] > 0.6 and seen["similar"][0][2] == "ada"
    assert seen["best_path"] == "create"  # the update of a missing key failed, as it must
    assert seen["best_names"] == ["best/agent/ada"] and seen["bests"] == [{"val_bpb": 0.9912}]
    assert seen["results"] == ["results/ada--increase-lr-to-0-04--a7f3b2"]
    assert seen["train_py"] == "print('hi')\n"
    assert seen["claim_after"] == "error"
    again = await asyncio.to_thread(legacy_agent_session, hub.url, hub.tokens["bob"])
    assert again["best_path"] == "update"  # bob may update the shared best/ of ada


async def test_legacy_client_sees_sse_and_plain_alike(hub: Hub) -> None:
    """The 'data: ' stripping of raw clients works on the hub's SSE framing too."""

    def call_sse() -> dict[str, Any]:
        resp = requests.post(
            hub.url,
            headers={
                "Accept": "text/event-stream",
                "Authorization": f"Bearer {hub.tokens['alice']}",
            },
            json={
                "jsonrpc": "2.0",
                "id": 1,
                "method": "tools/call",
                "params": {"name": "list_keys", "arguments": {"limit": 1}},
            },
            timeout=30,
        )
        text = resp.text.strip()
        assert text.startswith("data: ")
        return dict(json.loads(json.loads(text[len("data: ") :])["result"]["content"][0]["text"]))

    out = await asyncio.to_thread(call_sse)
    assert out["keys"] == [] and out["count"] == 0
