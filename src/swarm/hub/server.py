"""The hub's HTTP server (aiohttp): JSON-RPC dispatch, MCP handshake, serve/run entries.

``serve_hub(...)`` runs it inside ``async with`` (tests, benchmarks); ``run_hub(...)``
runs it until SIGTERM/SIGINT and shuts down gracefully (``python -m swarm hub``).
The wire protocol is described in ``swarm.hub.protocol``.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from swarm import __version__
from swarm._logging import get_logger
from swarm.embedding import Embedder
from swarm.errors import ConfigError, TransportError
from swarm.hub.access import AuthState
from swarm.hub.auth import HubPolicy, Principal
from swarm.hub.backends import open_store, open_tokens, shown_db
from swarm.hub.dashboard import mount_dashboard
from swarm.hub.encode import encode
from swarm.hub.limits import HubLimits, RequestBudget
from swarm.hub.metrics import mount_metrics
from swarm.hub.protocol import (
    ERR_INTERNAL,
    ERR_INVALID_REQUEST,
    ERR_METHOD_NOT_FOUND,
    ERR_PARSE,
    ERR_UNAUTHORIZED,
    PROTOCOL_VERSIONS,
    TOOLS,
    RpcError,
    ToolFailure,
)
from swarm.hub.tokens import TokenStore
from swarm.hub.tools import HubService
from swarm.hub.transport import GUARDS, BodyError, Listener, RedactingLog, mark_busy, read_body
from swarm.memory.local import DEFAULT_ORG
from swarm.memory.store import HubStore
from swarm.signals import SignalHandlers

__all__ = ["HubHandle", "build_app", "run_hub", "serve_hub"]

log = get_logger(__name__)

_SERVICE: web.AppKey[HubService] = web.AppKey("hub_service", HubService)
_JSON = "application/json"
_SSE = "text/event-stream"
_NO_ID = object()
_INLINE = 256 << 10  # bodies and replies larger than this are (de)coded in a thread
_SWITCH_INTERVAL_S = 0.001


def _dumps(obj: Any, stepped: bool = False) -> bytes:
    """JSON of ``obj``; ``stepped`` (large replies, in a worker thread) in small steps."""
    return encode(obj) if stepped else orjson.dumps(obj)


def _error(id_: Any, code: int, message: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": id_, "error": {"code": code, "message": message}}


def _result(id_: Any, result: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": id_, "result": result}


def _tool_result(structured: dict[str, Any], stepped: bool = False) -> dict[str, Any]:
    text = _dumps(structured, stepped).decode()
    return {
        "content": [{"type": "text", "text": text}],
        "structuredContent": structured,
        "isError": False,
    }


def _tool_failure(fail: ToolFailure) -> dict[str, Any]:
    return {
        "content": [{"type": "text", "text": fail.message}],
        "structuredContent": fail.structured(),
        "isError": True,
    }


def _bearer(request: web.Request) -> str | None:
    header = request.headers.get("Authorization")
    if header is None:
        return None
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise RpcError(
            ERR_UNAUTHORIZED,
            "Authorization header must be 'Bearer <token>'",
            http_status=401,
        )
    return token


def _wants_sse(request: web.Request) -> bool:
    accept = request.headers.get("Accept", "").lower()
    return _SSE in accept and _JSON not in accept and "*/*" not in accept


def _reply(payload: Any, *, status: int, sse: bool, stepped: bool = False) -> web.Response:
    body = _dumps(payload, stepped)
    if sse:
        return web.Response(
            body=b"data: " + body + b"\n\n",
            status=status,
            content_type=_SSE,
            headers={"Cache-Control": "no-cache"},
        )
    return web.Response(body=body, status=status, content_type=_JSON)


class _Dispatcher:
    def __init__(self, service: HubService) -> None:
        self.service = service

    async def message(
        self, msg: Any, who: Principal, budget: RequestBudget
    ) -> tuple[dict[str, Any] | None, int]:
        """(reply or None for a notification, HTTP status)."""
        if not isinstance(msg, dict):
            return _error(None, ERR_INVALID_REQUEST, "a JSON-RPC request must be an object"), 400
        id_ = msg.get("id", _NO_ID)
        reply_id = None if id_ is _NO_ID else id_
        if id_ is not _NO_ID and (isinstance(id_, bool) or not isinstance(id_, str | int | None)):
            return _error(None, ERR_INVALID_REQUEST, "id must be a string, a number or null"), 400
        if msg.get("jsonrpc") != "2.0":
            return _error(reply_id, ERR_INVALID_REQUEST, 'jsonrpc must be "2.0"'), 400
        method = msg.get("method")
        if not isinstance(method, str) or not method:
            return _error(reply_id, ERR_INVALID_REQUEST, "method must be a non-empty string"), 400
        params = msg.get("params", {})
        if params is None:
            params = {}
        if not isinstance(params, dict):
            return _error(reply_id, ERR_INVALID_REQUEST, "params must be an object"), 400
        if id_ is _NO_ID:
            if method.startswith("notifications/"):
                return None, 202
            return (
                _error(None, ERR_INVALID_REQUEST, f'{method!r} request has no id; add "id": 1'),
                400,
            )
        try:
            result = await self._method(method, params, who, budget)
        except RpcError as exc:
            return _error(reply_id, exc.code, exc.message), exc.http_status
        return _result(reply_id, result), 200

    async def _method(
        self, method: str, params: dict[str, Any], who: Principal, budget: RequestBudget
    ) -> Any:
        if method == "tools/call":
            name = params.get("name")
            if not isinstance(name, str):
                raise RpcError(-32602, "tools/call needs params.name (the tool name, a string)")
            args = params.get("arguments", {})
            if args is None:
                args = {}
            if not isinstance(args, dict):
                raise RpcError(-32602, f"tools/call {name}: arguments must be an object")
            used = budget.reply_used
            try:
                structured = await self.service.call(who, name, args, budget)
            except ToolFailure as fail:
                return _tool_failure(fail)
            if budget.reply_used - used < _INLINE:
                return _tool_result(structured)
            return await asyncio.to_thread(_tool_result, structured, True)
        if method == "initialize":
            asked = params.get("protocolVersion")
            version = asked if asked in PROTOCOL_VERSIONS else PROTOCOL_VERSIONS[0]
            return {
                "protocolVersion": version,
                "capabilities": {"tools": {"listChanged": False}},
                "serverInfo": {"name": "swarm-hub", "version": __version__},
                "instructions": (
                    "Shared memory of a swarm: create_memory, get_memory, update_memory, "
                    "delete_memory, list_keys, search_memories."
                ),
            }
        if method == "tools/list":
            return {"tools": TOOLS}
        if method == "ping":
            return {}
        raise RpcError(
            ERR_METHOD_NOT_FOUND,
            f"unknown method {method!r}; use tools/call, tools/list, initialize or ping",
        )


def _refuse(status: int, message: str, *, sse: bool, close: bool = False) -> web.Response:
    resp = _reply(_error(None, ERR_INVALID_REQUEST, message), status=status, sse=sse)
    if close:
        resp.force_close()  # the rest of the body is not worth reading
    return resp


async def _handle_post(request: web.Request) -> web.Response:
    service = request.app[_SERVICE]
    limits = service.limits
    sse = _wants_sse(request)
    try:  # who is asking, from the headers alone: no body is read for a bad token
        token = _bearer(request)
        who = await service.auth.resolve(token)
    except RpcError as exc:
        resp = _reply(_error(None, exc.code, exc.message), status=exc.http_status, sse=sse)
        if not await _drain_small(request, limits):
            resp.force_close()
        return resp
    limit = limits.max_anon_body_bytes if who.anonymous else limits.max_body_bytes
    try:
        body = await read_body(request, limit=limit, timeout_s=limits.body_timeout_s)
    except BodyError as exc:
        hint = " (requests without a token are limited more)" if who.anonymous else ""
        return _refuse(exc.status, exc.message + hint, sse=sse, close=True)
    try:
        msg = (
            orjson.loads(body)
            if len(body) < _INLINE
            else await asyncio.to_thread(orjson.loads, body)
        )
    except orjson.JSONDecodeError as exc:
        return _reply(
            _error(None, ERR_PARSE, f"parse error: the body is not UTF-8 JSON ({exc})"),
            status=400,
            sse=sse,
        )
    dispatcher = _Dispatcher(service)
    budget = RequestBudget(limits)
    if isinstance(msg, list):
        if not msg:
            return _refuse(400, "empty batch", sse=sse)
        if len(msg) > limits.max_batch:
            return _refuse(
                400,
                f"batch of {len(msg)} messages; this hub takes at most "
                f"{limits.max_batch} per request",
                sse=sse,
            )
        replies = [
            r for r, _ in [await dispatcher.message(m, who, budget) for m in msg] if r is not None
        ]
        if not replies:
            return web.Response(status=202)
        return await _reply_off_loop(replies, status=200, sse=sse, budget=budget, limits=limits)
    reply, status = await dispatcher.message(msg, who, budget)
    if reply is None:
        return web.Response(status=202)
    return await _reply_off_loop(reply, status=status, sse=sse, budget=budget, limits=limits)


async def _drain_small(request: web.Request, limits: HubLimits) -> bool:
    """Read and drop a body no larger than an anonymous one may be, so that the reply
    reaches the client before the connection closes; False when it is left unread."""
    try:
        await read_body(
            request, limit=limits.max_anon_body_bytes, timeout_s=min(limits.body_timeout_s, 5.0)
        )
    except BodyError:
        return False
    return True


async def _reply_off_loop(
    payload: Any, *, status: int, sse: bool, budget: RequestBudget, limits: HubLimits
) -> web.Response:
    """Like ``_reply``; a large reply is encoded in a thread, off the event loop."""
    if budget.reply_used < _INLINE:
        return _reply(payload, status=status, sse=sse)
    return await asyncio.to_thread(_reply, payload, status=status, sse=sse, stepped=True)


async def _handle_get(request: web.Request) -> web.Response:
    return web.json_response(
        _error(
            None, ERR_METHOD_NOT_FOUND, "this hub has no server-initiated stream; POST JSON-RPC"
        ),
        status=405,
        headers={"Allow": "POST"},
    )


async def _handle_delete(request: web.Request) -> web.Response:
    return web.json_response(
        _error(None, ERR_METHOD_NOT_FOUND, "this hub is stateless: there is no session to end"),
        status=405,
        headers={"Allow": "POST"},
    )


async def _handle_health(request: web.Request) -> web.Response:
    service = request.app[_SERVICE]
    await service.store.ping()
    return web.json_response({"status": "ok", "org": service.org, "version": __version__})


@web.middleware
async def _supervise(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """The supervision edge: an unexpected exception becomes a logged -32603 (HTTP 500)."""
    mark_busy(request, True)
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # supervision edge: log with context, answer -32603
        log.exception(
            "hub_internal_error", method=request.method, path=request.path, error=repr(exc)
        )
        return web.json_response(
            _error(None, ERR_INTERNAL, f"internal error of the hub: {type(exc).__name__}"),
            status=500,
        )
    finally:
        mark_busy(request, False)


def build_app(service: HubService) -> web.Application:
    """The aiohttp application serving ``service``."""
    app = web.Application(middlewares=[_supervise], client_max_size=service.limits.max_body_bytes)
    app[_SERVICE] = service
    app[GUARDS] = {}
    for path in ("/", "/mcp"):
        app.router.add_post(path, _handle_post)
        if path != "/":  # GET / is the dashboard (it hands event-stream probes to _handle_get)
            app.router.add_get(path, _handle_get)
        app.router.add_delete(path, _handle_delete)
    app.router.add_get("/healthz", _handle_health)
    mount_dashboard(app, service, not_html=_handle_get)
    mount_metrics(app, service)
    return app


class HubHandle:
    """A running hub: ``url`` (``http://HOST:PORT/``, POST JSON-RPC there), ``port``,
    ``store`` (the LocalStore behind it) and token helpers."""

    def __init__(self, url: str, port: int, service: HubService, tokens: TokenStore) -> None:
        self.url = url
        self.port = port
        self.service = service
        self._tokens = tokens

    @property
    def store(self) -> HubStore:
        return self.service.store

    def add_token(self, name: str, role: str = "participant") -> str:
        """Create a bearer token for ``name`` with ``role`` (read|participant|admin)."""
        token = self._tokens.add(name, role)
        self.service.auth.invalidate()
        return token

    def revoke_token(self, name: str) -> bool:
        done = self._tokens.revoke(name)
        self.service.auth.invalidate()
        return done


def _url(host: str, port: int) -> str:
    shown = "127.0.0.1" if host in ("", "0.0.0.0") else host
    if ":" in shown and not shown.startswith("["):
        shown = f"[{shown}]"
    return f"http://{shown}:{port}/"


@asynccontextmanager
async def serve_hub(
    db_path: str | Path,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    org: str = DEFAULT_ORG,
    auth_db: str | Path | None = None,
    open_access: bool = False,
    public_prefixes: Sequence[str] = (),
    policy: HubPolicy | None = None,
    embedder: Embedder | None = None,
    max_value_bytes: int = 1 << 20,
    limits: HubLimits | None = None,
) -> AsyncIterator[HubHandle]:
    """Run the hub on ``host:port`` (0: a free port) until the block exits."""
    pol = policy or HubPolicy()
    lim = limits or HubLimits()
    if public_prefixes:
        pol = HubPolicy(
            shared_update_prefixes=pol.shared_update_prefixes,
            shared_delete_prefixes=pol.shared_delete_prefixes,
            public_prefixes=(*pol.public_prefixes, *public_prefixes),
        )
    store = open_store(db_path, org=org, embedder=embedder, max_value_bytes=max_value_bytes)
    async with store:
        tokens = await asyncio.to_thread(open_tokens, auth_db or db_path)
        try:
            auth = AuthState(tokens, pol, open_access=open_access)
            service = HubService(store, auth, embedder=embedder, limits=lim)
            runner = web.AppRunner(
                build_app(service),
                access_log=None,
                handle_signals=False,
                shutdown_timeout=10.0,
                lingering_time=0,  # an over-long body is refused, not drained
                auto_decompress=False,  # read_body inflates, within the body limit
                keepalive_timeout=lim.idle_timeout_s,
                logger=RedactingLog(),
            )
            await runner.setup()
            assert runner.server is not None
            listener = Listener(runner.server, lim, runner.app[GUARDS])
            try:
                try:
                    bound = await listener.start(host, port)
                except OSError as exc:
                    raise ConfigError(
                        f"the hub cannot listen on {host}:{port}: {exc.strerror or exc}; "
                        "pick another --host/--port",
                        key="port",
                        value=port,
                    ) from exc
                handle = HubHandle(_url(host, bound), bound, service, tokens)
                log.info(
                    "hub_listening",
                    url=handle.url,
                    db=shown_db(db_path),
                    org=org,
                    open_access=open_access,
                )
                yield handle
            finally:
                listener.stop_listening()
                await runner.cleanup()
                listener.abort_all()
        finally:
            await asyncio.to_thread(tokens.close)


def run_hub(
    db_path: str | Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8765,
    org: str = DEFAULT_ORG,
    auth_db: str | Path | None = None,
    open_access: bool = False,
    public_prefixes: Sequence[str] = (),
    policy: HubPolicy | None = None,
    limits: HubLimits | None = None,
    ready: Callable[[HubHandle], None] | None = None,
) -> int:
    """Serve until SIGTERM or SIGINT, then finish in-flight requests and close. Returns 0."""

    async def main() -> None:
        stop = asyncio.Event()
        with SignalHandlers(lambda _name: stop.set()):
            async with serve_hub(
                db_path,
                host=host,
                port=port,
                org=org,
                auth_db=auth_db,
                open_access=open_access,
                public_prefixes=public_prefixes,
                policy=policy,
                limits=limits,
            ) as handle:
                if ready is not None:
                    ready(handle)
                await stop.wait()
                log.info("hub_stopping", url=handle.url)
        log.info("hub_stopped")

    # Large replies are encoded in worker threads in small steps; a short switch interval
    # lets the event loop take the GIL back between steps sooner (5 ms by default).
    sys.setswitchinterval(_SWITCH_INTERVAL_S)
    asyncio.run(main())
    return 0


async def wait_for_hub(
    url: str, *, timeout_s: float = 30.0, interval_s: float = 0.1, session: Any = None
) -> None:
    """Return once the hub at ``url`` answers ``GET /healthz`` with 200.

    For scripts, benchmarks and tests that start ``python -m swarm hub`` as a process; raises
    ``TransportError`` naming the URL when it is not up within ``timeout_s``.
    """
    import aiohttp

    health = url.rstrip("/") + "/healthz"
    owned = session is None
    client = aiohttp.ClientSession() if owned else session
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    last = "no answer"
    try:
        while True:
            try:
                async with client.get(health) as r:
                    if r.status == 200:
                        return
                    last = f"HTTP {r.status}"
            except aiohttp.ClientError as exc:
                last = f"{type(exc).__name__}: {exc}"
            if loop.time() >= deadline:
                raise TransportError(
                    f"the hub at {url} did not come up within {timeout_s:.0f} s ({last})"
                )
            await asyncio.sleep(interval_s)
    finally:
        if owned:
            await client.close()
