"""The hub's connection edge: a connection cap, a request-head timeout, bounded body reads,
and logs that never carry a secret.

``Listener`` owns the listening socket. Each accepted connection gets a ``_Guard``
protocol wrapped around aiohttp's own request handler: it counts the connection, closes
the oldest idle one when the cap is reached (or answers 503 when every connection is
busy), and closes a connection whose request head is not complete ``header_timeout_s``
after its first byte (a sweep every quarter of that timeout, at most a second, finds
them). ``read_body`` reads a request body with a size cap, a deadline and
bounded gzip/deflate inflation. ``RedactingLog`` is the logger handed to aiohttp.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import resource
import zlib
from collections.abc import Callable
from typing import Any

from aiohttp import web

from swarm._logging import get_logger
from swarm.hub.limits import HubLimits

__all__ = ["GUARDS", "BodyError", "Listener", "RedactingLog", "mark_busy", "read_body", "redact"]

log = get_logger(__name__)

_SECRET = re.compile(
    r"(?i)(authorization\s*[:=]\s*)[^\r\n'\"]*|(bearer\s+)[^\s'\"\\]+|\b(?:swm|inv)_[A-Za-z0-9_-]+"
)


def redact(text: str) -> str:
    """``text`` with bearer tokens, invite tokens and Authorization values replaced."""

    def sub(m: re.Match[str]) -> str:
        if m.group(1) is not None:
            return m.group(1) + "[redacted]"
        if m.group(2) is not None:
            return m.group(2) + "[redacted]"
        return "[redacted]"

    return _SECRET.sub(sub, text)


class RedactingLog:
    """Stands in for aiohttp's server logger: one structured line per event, secrets
    removed, no traceback for what a client sent wrong."""

    def _emit(self, level: str, msg: str, *args: Any, **kw: Any) -> None:
        try:
            text = msg % args if args else msg
        except (TypeError, ValueError):
            text = f"{msg} {args!r}"
        exc = kw.get("exc_info")
        error = f"{type(exc).__name__}: {exc}" if isinstance(exc, BaseException) else None
        getattr(log, level)(
            "hub.http", message=redact(text), error=redact(error) if error else None
        )

    def debug(self, msg: str, *args: Any, **kw: Any) -> None:
        self._emit("debug", msg, *args, **kw)

    def info(self, msg: str, *args: Any, **kw: Any) -> None:
        self._emit("info", msg, *args, **kw)

    def warning(self, msg: str, *args: Any, **kw: Any) -> None:
        self._emit("warning", msg, *args, **kw)

    def error(self, msg: str, *args: Any, **kw: Any) -> None:
        self._emit("warning", msg, *args, **kw)

    def exception(self, msg: str, *args: Any, **kw: Any) -> None:
        self._emit("warning", msg, *args, **kw)


# --------------------------------------------------------------------------- bodies


class BodyError(Exception):
    """A body the hub will not read: ``status`` (400, 408, 413, 415) and a message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


async def read_body(request: web.Request, *, limit: int, timeout_s: float) -> bytes:
    """The request body, inflated when ``Content-Encoding`` is gzip or deflate.

    Raises BodyError: 413 past ``limit`` bytes (declared, received or inflated), 408
    past ``timeout_s``, 415 for another encoding, 400 for a corrupt compressed body.
    """
    encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding not in ("", "identity", *_WBITS):
        raise BodyError(
            415, f"Content-Encoding {encoding!r} is not supported; send identity, gzip or deflate"
        )
    declared = request.content_length
    if declared is not None and declared > limit:
        raise BodyError(
            413,
            f"request body too large: {declared} bytes, over this hub's "
            f"{limit}-byte limit; send fewer or smaller items per call",
        )
    if encoding not in _WBITS and declared is not None and request.content.is_eof():
        return await request.read()  # all of it arrived with the head: nothing to wait for
    inflater = zlib.decompressobj(_WBITS[encoding]) if encoding in _WBITS else None
    parts: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout_s):
            async for chunk in request.content.iter_any():
                if inflater is not None:
                    try:
                        chunk = inflater.decompress(chunk, limit - size + 1)
                    except zlib.error as exc:
                        raise BodyError(400, f"the {encoding} body is corrupt: {exc}") from exc
                    if inflater.unconsumed_tail:
                        size = limit + 1
                size += len(chunk)
                if size > limit:
                    raise BodyError(
                        413,
                        f"request body too large: over this hub's {limit}-byte "
                        "limit (after decompression); send fewer or smaller "
                        "items per call",
                    )
                parts.append(chunk)
    except TimeoutError as exc:
        raise BodyError(408, f"the request body was not received within {timeout_s:g} s") from exc
    if inflater is not None and not inflater.eof:
        raise BodyError(400, f"the {encoding} body is truncated")
    return b"".join(parts)


# --------------------------------------------------------------------------- connections


def mark_busy(request: web.Request, busy: bool) -> None:
    """Tell the connection's guard whether a handler is running on it."""
    guard = request.app[GUARDS].get(id(request.protocol))
    if guard is not None:
        guard.set_busy(busy)


_BUSY_REPLY = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
    b"Connection: close\r\nRetry-After: 1\r\nContent-Length: %d\r\n\r\n%s"
)
_BUSY_BODY = (
    b'{"jsonrpc":"2.0","id":null,"error":{"code":-32000,'
    b'"message":"the hub is at its connection limit; retry shortly"}}'
)


class _Guard(asyncio.Protocol):
    """Wraps aiohttp's protocol for one connection: admission, head timeout, busy state."""

    def __init__(self, listener: Listener, inner: asyncio.Protocol) -> None:
        self.listener = listener
        self.inner = inner
        self.transport: asyncio.Transport | None = None
        self.busy = 0
        self.head_since: float | None = None  # when a request head began to arrive

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        if not self.listener.admit(self):
            body = _BUSY_BODY
            transport.write(_BUSY_REPLY % (len(body), body))
            transport.close()
            return
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if not self.busy and self.head_since is None:
            self.head_since = self.listener.now()
        self.inner.data_received(data)

    def set_busy(self, busy: bool) -> None:
        self.busy += 1 if busy else -1
        self.head_since = None

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.listener.release(self):
            self.inner.connection_lost(exc)


class Listener:
    """The listening socket of one hub: hands connections to ``factory`` (aiohttp's
    server) within ``limits.max_connections``."""

    def __init__(
        self, factory: Callable[[], asyncio.Protocol], limits: HubLimits, guards: dict[int, _Guard]
    ) -> None:
        self.factory = factory
        self.limits = limits
        self.live: dict[_Guard, None] = {}  # insertion order: oldest first
        self.guards = guards  # id(aiohttp's protocol) -> its guard, for mark_busy
        self.server: asyncio.Server | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        self.now = asyncio.get_running_loop().time

    def _sweep_s(self) -> float:
        return min(self.limits.header_timeout_s / 4, 1.0)

    def _sweep(self) -> None:
        """Close connections whose request head is older than the head timeout; runs
        every quarter of that timeout (at most a second) while the listener is open."""
        timeout = self.limits.header_timeout_s
        cutoff = self.now() - timeout
        for guard in [
            g
            for g in self.live
            if g.head_since is not None and not g.busy and g.head_since < cutoff
        ]:
            log.info("hub_slow_request_head", timeout_s=timeout)
            if guard.transport is not None:
                guard.transport.abort()
        self._sweeper = asyncio.get_running_loop().call_later(self._sweep_s(), self._sweep)

    def _ensure_fds(self) -> None:
        """Raise the soft open-file limit to fit the connection cap (accept() failing on
        EMFILE would otherwise log a traceback per attempt)."""
        need = self.limits.max_connections + 256
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft >= need:
            return
        target = need if hard == resource.RLIM_INFINITY else min(need, hard)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if soft < need:
            log.warning(
                "hub.few_file_descriptors",
                open_files=soft,
                max_connections=self.limits.max_connections,
                fix="raise the open-file limit (ulimit -n) or lower --max-connections",
            )

    async def start(self, host: str, port: int) -> int:
        """Listen on ``host:port``; returns the bound port. OSError when it cannot."""
        self._ensure_fds()
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(
            lambda: _Guard(self, self.factory()), host, port, reuse_address=True, backlog=512
        )
        self._sweeper = loop.call_later(self._sweep_s(), self._sweep)
        return int(self.server.sockets[0].getsockname()[1])

    def admit(self, guard: _Guard) -> bool:
        if len(self.live) >= self.limits.max_connections:
            idle = next((g for g in self.live if not g.busy), None)
            if idle is None:
                log.warning("hub_connection_refused", live=len(self.live))
                return False
            self.release(idle)
            if idle.transport is not None:
                idle.transport.abort()
            idle.inner.connection_lost(None)
        self.live[guard] = None
        self.guards[id(guard.inner)] = guard
        return True

    def release(self, guard: _Guard) -> bool:
        """Forget ``guard``; False when it was never admitted or already evicted."""
        self.guards.pop(id(guard.inner), None)
        return self.live.pop(guard, False) is None

    def stop_listening(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        if self.server is not None:
            self.server.close()

    def abort_all(self) -> None:
        """Drop whatever connection is still open (after aiohttp's graceful shutdown)."""
        for guard in list(self.live):
            if guard.transport is not None:
                guard.transport.abort()


GUARDS: web.AppKey[dict[int, _Guard]] = web.AppKey("hub_guards", dict)
