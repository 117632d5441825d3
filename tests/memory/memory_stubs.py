"""Stub Ensue-protocol servers for the client tests (real aiohttp servers on 127.0.0.1)."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from swarm.ensue_async import RetryPolicy

Handler = Callable[[dict[str, Any], web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Stub:
    """A running stub: its URL and every JSON body and header set it received."""

    url: str
    bodies: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)

    def calls(self, tool: str | None = None) -> list[dict[str, Any]]:
        """The tools/call arguments received, optionally for one tool."""
        out = []
        for b in self.bodies:
            params = b.get("params") or {}
            if tool is None or params.get("name") == tool:
                out.append(params.get("arguments") or {})
        return out


@asynccontextmanager
async def run_stub(handler: Handler, *, path: str = "/") -> AsyncIterator[Stub]:
    """Serve ``handler`` on 127.0.0.1:<free port> for POSTs to ``path``."""
    stub = Stub(url="")

    async def entry(request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            body = orjson.loads(raw) if raw else {}
        except orjson.JSONDecodeError:
            body = {"_raw": raw.decode("utf-8", "replace")}
        stub.bodies.append(body)
        stub.headers.append(dict(request.headers))
        return await handler(body, request)

    app = web.Application()
    app.router.add_post(path, entry)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    stub.url = f"http://127.0.0.1:{port}/"
    try:
        yield stub
    finally:
        await runner.cleanup()


def rpc(body: dict[str, Any], result: Any = None, *, error: Any = None) -> dict[str, Any]:
    """A JSON-RPC response answering ``body``."""
    out: dict[str, Any] = {"jsonrpc": "2.0", "id": body.get("id")}
    if error is not None:
        out["error"] = error
    else:
        out["result"] = result
    return out


def tool_result(data: Any, *, structured: bool = True, is_error: bool = False) -> dict[str, Any]:
    """A tools/call result carrying ``data`` as structuredContent and/or text."""
    text = data if isinstance(data, str) else orjson.dumps(data).decode()
    res: dict[str, Any] = {"content": [{"type": "text", "text": text}]}
    if structured and not is_error:
        res["structuredContent"] = data
    if is_error:
        res["isError"] = True
    return res


def json_response(payload: Any, status: int = 200, **headers: str) -> web.Response:
    return web.Response(
        body=orjson.dumps(payload), status=status, content_type="application/json", headers=headers
    )


def sse_response(*payloads: Any) -> web.Response:
    text = "".join(f"event: message\ndata: {orjson.dumps(p).decode()}\n\n" for p in payloads)
    return web.Response(text=text, content_type="text/event-stream")


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


class FakeSleep:
    """An injectable sleep that records the delays instead of waiting."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


FAST_RETRY = RetryPolicy(attempts=4, total_s=30.0, initial_s=0.01, max_backoff_s=0.05)
