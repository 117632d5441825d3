"""Helpers of the hub tests: a raw JSON-RPC client and the running-hub bundle."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from swarm.hub import HubHandle


@dataclass
class Rpc:
    """A raw JSON-RPC client: returns (HTTP status, parsed body)."""

    session: aiohttp.ClientSession
    url: str
    next_id: int = 0

    async def raw(
        self, body: bytes | str, *, token: str | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, Any, str]:
        hdrs = {"Content-Type": "application/json"}
        if token:
            hdrs["Authorization"] = f"Bearer {token}"
        hdrs.update(headers or {})
        data = body.encode() if isinstance(body, str) else body
        async with self.session.post(self.url, data=data, headers=hdrs) as resp:
            text = await resp.text()
            try:
                parsed = json.loads(text) if text else None
            except json.JSONDecodeError:
                parsed = None
            return resp.status, parsed, text

    async def call(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        *,
        token: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        self.next_id += 1
        msg: dict[str, Any] = {"jsonrpc": "2.0", "id": self.next_id, "method": method}
        if params is not None:
            msg["params"] = params
        status, parsed, _ = await self.raw(json.dumps(msg), token=token, headers=headers)
        return status, parsed

    async def tool(
        self, name: str, args: dict[str, Any], *, token: str | None = None
    ) -> tuple[int, Any]:
        return await self.call("tools/call", {"name": name, "arguments": args}, token=token)

    async def ok(self, name: str, args: dict[str, Any], *, token: str | None) -> dict[str, Any]:
        """structuredContent of a call that must succeed as a whole."""
        status, body = await self.tool(name, args, token=token)
        assert status == 200, body
        assert "error" not in body, body
        assert body["result"]["isError"] is False, body
        structured = body["result"]["structuredContent"]
        assert json.loads(body["result"]["content"][0]["text"]) == structured
        return dict(structured)


@dataclass
class Hub:
    handle: HubHandle
    rpc: Rpc
    tokens: dict[str, str] = field(default_factory=dict)
    db: Path | str = ""  # the hub's database: a SQLite file or a postgresql:// URL

    @property
    def url(self) -> str:
        return self.handle.url
