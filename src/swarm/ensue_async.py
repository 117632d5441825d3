"""Async client for the Ensue memory network (and for our hub, which speaks the same protocol).

Wire protocol (see DESIGN.md): ``POST <url>`` with a bearer key and a JSON-RPC 2.0
``tools/call`` body; the answer is plain JSON or server-sent events (``data: {...}``
lines); the tool's result is ``result.structuredContent`` or, as text,
``result.content[0].text``.

This module is the one boundary where foreign failures become ``swarm.errors``:

* aiohttp connection failures -> ``TransportError``; deadlines -> ``MemoryTimeout``;
* HTTP 401/403 -> ``AuthError`` (the message says how to get and verify a key);
* HTTP 429/5xx -> ``ServerError`` (retried, honouring ``Retry-After``);
* bad JSON, wrong shapes, JSON-RPC errors, other HTTP statuses -> ``ProtocolError``;
* ``result.isError`` -> ``ToolError`` (``KeyExistsError``/``KeyNotFoundError`` when the
  message says so); per-item failures -> ``ItemResult(ok=False, ...)``.

Retries (tenacity): jittered exponential backoff on retryable errors only
(``TransportError``, ``MemoryTimeout``, ``ServerError``), bounded by attempts and by total
time, each retry logged before sleeping; the sleep function is injectable for tests.

Keys: the client may be bound to an ``org``. Keys without an ``@`` are then sent as
``@org/key`` and every key that comes back for that org is returned without the prefix,
whichever form the server used. Keys of other orgs (``@other/...``) pass through as is.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import itertools
import math
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

import aiohttp
import orjson
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
)
from yarl import URL

from swarm._logging import get_logger
from swarm.errors import (
    AuthError,
    ConfigError,
    InvalidRequestError,
    KeyExistsError,
    KeyNotFoundError,
    MemoryStoreError,
    MemoryTimeout,
    ProtocolError,
    ServerError,
    ToolError,
    TransportError,
)
from swarm.memory._types import (
    MAX_BATCH,
    EmbedSource,
    ItemResult,
    KeyInfo,
    Memory,
    NewMemory,
    SearchHit,
)

__all__ = [
    "DEFAULT_URL",
    "AgentRegistration",
    "EnsueClient",
    "RetryPolicy",
    "like_escape",
    "register_agent",
]

log = get_logger(__name__)

DEFAULT_URL = "https://api.ensue-network.ai/"
"""The hosted Ensue service."""

PAGE_SIZE = 100
"""list_keys' largest page (the protocol's limit)."""

MAX_SEARCH_LIMIT = 100

_AUTH_HELP = (
    "get a key with `python -m swarm register NAME`, have a person verify it at the "
    "claim URL that command prints, then set ENSUE_API_KEY (or keep the key file it writes)"
)

Sleep = Callable[[float], Awaitable[None]]


# --------------------------------------------------------------------------- policy


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How hard to retry retryable failures (connection, timeout, 429, 5xx).

    ``attempts`` counts the first try; ``total_s`` bounds the whole call including sleeps;
    sleeps grow as ``initial_s * 2**n`` (capped at ``max_backoff_s``) with full jitter.
    A ``Retry-After`` header on 429/503 is honoured up to ``max_retry_after_s``.
    """

    attempts: int = 5
    total_s: float = 60.0
    initial_s: float = 0.25
    max_backoff_s: float = 8.0
    max_retry_after_s: float = 30.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ConfigError("retry attempts must be >= 1", key="attempts", value=self.attempts)
        if self.total_s <= 0 or self.initial_s < 0 or self.max_backoff_s < 0:
            raise ConfigError("retry times must be positive", key="total_s", value=self.total_s)


NO_RETRY = RetryPolicy(attempts=1)


class AgentRegistration(NamedTuple):
    """What ``/auth/agent-register`` returns: the new key and how a person verifies it."""

    api_key: str
    claim_url: str
    verification_code: str


# --------------------------------------------------------------------------- helpers


def like_escape(prefix: str) -> str:
    r"""Escape SQL LIKE wildcards (``\``, ``%``, ``_``) so ``prefix`` matches literally."""
    return prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _b64(text: str) -> str:
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def _epoch(value: object) -> float:
    """Timestamps arrive as epoch seconds (int/float/numeric string), ms, or ISO text."""
    if value is None or isinstance(value, bool):
        return 0.0
    if isinstance(value, int | float):
        v = float(value)
    elif isinstance(value, str):
        text = value.strip()
        if not text:
            return 0.0
        try:
            v = float(text)
        except ValueError:
            try:
                dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
            except ValueError:
                return 0.0
            return dt.timestamp()
    else:
        return 0.0
    if not math.isfinite(v):
        return 0.0
    return v / 1000.0 if v > 1e11 else v  # milliseconds -> seconds


def _lower(value: object) -> str:
    return str(value or "").strip().lower()


def _says_missing(text: str) -> bool:
    t = text.lower()
    return any(
        s in t
        for s in ("not found", "not exist", "doesn't exist", "no such", "missing", "unknown key")
    )


def _says_exists(text: str) -> bool:
    t = text.lower()
    if _says_missing(t):
        return False
    return any(s in t for s in ("already", "exists", "duplicate", "conflict"))


def _item_ok(item: Mapping[str, Any]) -> bool:
    status = _lower(item.get("status"))
    if status:
        return status in ("success", "ok", "created", "updated", "deleted")
    return not item.get("error")


def _item_error(item: Mapping[str, Any]) -> str:
    err = item.get("error") or item.get("message") or item.get("status") or "failed"
    return str(err)


def _retry_after_s(headers: Mapping[str, str]) -> float | None:
    raw = headers.get("Retry-After")
    if not raw:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        from email.utils import parsedate_to_datetime

        return max(0.0, parsedate_to_datetime(raw).timestamp() - time.time())
    except (TypeError, ValueError, IndexError):
        return None


def _parse_sse(text: str) -> list[Any]:
    """All JSON payloads of the ``data:`` events of a server-sent-event stream."""
    events: list[Any] = []
    data: list[str] = []

    def flush() -> None:
        if data:
            payload = "\n".join(data)
            data.clear()
            try:
                events.append(orjson.loads(payload))
            except orjson.JSONDecodeError:
                pass  # a non-JSON event (keep-alive text) is not ours

    for line in text.splitlines():
        if not line.strip():
            flush()
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
        # event:, id:, retry: and comments (":...") carry nothing we need
    flush()
    return events


def _pick_response(payloads: Sequence[Any], request_id: int) -> dict[str, Any]:
    candidates = [p for p in payloads if isinstance(p, dict)]
    for p in candidates:
        if p.get("id") == request_id and ("result" in p or "error" in p):
            return p
    for p in candidates:  # servers that drop or rewrite the id
        if p.get("id") is None and ("result" in p or "error" in p):
            return p
    raise ProtocolError(f"no JSON-RPC response with id {request_id} in the reply")


def _decode_body(body: bytes, content_type: str, request_id: int) -> dict[str, Any]:
    text_start = body.lstrip()[:6]
    if "text/event-stream" in content_type or text_start.startswith((b"data:", b"event:", b":")):
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ProtocolError(f"event stream is not UTF-8: {exc}") from exc
        return _pick_response(_parse_sse(text), request_id)
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        snippet = body[:200].decode("utf-8", "replace")
        raise ProtocolError(f"reply is not JSON ({exc}): {snippet!r}") from exc
    return _pick_response(doc if isinstance(doc, list) else [doc], request_id)


def _result_payload(tool: str, result: Any, key: str | None) -> Any:
    """The tool's data: ``structuredContent``, else ``content[0].text`` parsed as JSON."""
    if not isinstance(result, dict):
        raise ProtocolError(f"{tool}: result is not an object: {result!r:.200}")
    content = result.get("content")
    text = ""
    if isinstance(content, list):
        text = " ".join(
            str(c.get("text", "")) for c in content if isinstance(c, dict) and c.get("text")
        )
    if result.get("isError"):
        sc = result.get("structuredContent")
        code = sc.get("code") if isinstance(sc, dict) else None
        if not text and isinstance(sc, dict):
            text = str(sc.get("error") or "")
        raise _tool_error(tool, text or "tool reported an error", key, code)
    structured = result.get("structuredContent")
    if structured is not None:
        return structured
    if isinstance(content, list):
        for c in content:
            if isinstance(c, dict) and isinstance(c.get("text"), str):
                try:
                    return orjson.loads(c["text"])
                except orjson.JSONDecodeError:
                    continue
    raise ProtocolError(f"{tool}: result has neither structuredContent nor JSON text content")


_EXISTS_CODES = ("exists", "already_exists", "conflict", "duplicate")
_MISSING_CODES = ("not_found", "missing", "no_such_key")


def _tool_error(tool: str, message: str, key: str | None, code: object = None) -> ToolError:
    msg = f"{tool}: {message}"
    c = _lower(code)
    if c in _EXISTS_CODES or (not c and _says_exists(message)):
        return KeyExistsError(msg, key=key)
    if c in _MISSING_CODES or (not c and _says_missing(message)):
        return KeyNotFoundError(msg, key=key)
    return ToolError(msg, key=key)


def _row_code(row: Mapping[str, Any]) -> str:
    """A per-item failure's machine code (``code``, else a non-generic ``status``)."""
    code = _lower(row.get("code"))
    if code:
        return code
    status = _lower(row.get("status"))
    return "" if status in ("error", "failed", "failure") else status


def _row_exists(row: Mapping[str, Any]) -> bool:
    code = _row_code(row)
    return code in _EXISTS_CODES if code else _says_exists(_item_error(row))


def _row_missing(row: Mapping[str, Any]) -> bool:
    code = _row_code(row)
    return code in _MISSING_CODES if code else _says_missing(_item_error(row))


def _is_retryable(exc: BaseException) -> bool:
    return isinstance(exc, MemoryStoreError) and exc.retryable


# --------------------------------------------------------------------------- client


class EnsueClient:
    """One connection to an Ensue-protocol server; use as ``async with``.

    ``session`` is borrowed when given (the caller closes it), else created on entry and
    closed on exit. ``org`` binds keys to that org (see the module docstring).
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        api_key: str | None = None,
        *,
        org: str | None = None,
        session: aiohttp.ClientSession | None = None,
        timeout_s: float = 30.0,
        retry: RetryPolicy = RetryPolicy(),
        sleep: Sleep = asyncio.sleep,
        concurrency: int = 4,
    ) -> None:
        try:
            parsed = URL(url)
        except (TypeError, ValueError) as exc:
            raise ConfigError(
                f"memory URL {url!r} is not a URL: {exc}", key="url", value=url
            ) from exc
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise ConfigError(
                f"memory URL {url!r} must be http(s)://HOST[:PORT]/...", key="url", value=url
            )
        if org is not None and (not org or "/" in org or org.startswith("@")):
            raise ConfigError(
                f"org {org!r} must be a bare org name like 'autoresearch-at-home'",
                key="org",
                value=org,
            )
        if timeout_s <= 0:
            raise ConfigError("timeout_s must be positive", key="timeout_s", value=timeout_s)
        self.url = str(parsed)
        self.org = org
        self._api_key = api_key or None
        self._session = session
        self._owns_session = session is None
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.timeout_s = timeout_s
        self.retry = retry
        self._sleep = sleep
        self._ids = itertools.count(1)
        self._concurrency = max(1, concurrency)
        self._org_prefix = f"@{org}/" if org else None

    # ---- lifecycle

    async def __aenter__(self) -> EnsueClient:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                json_serialize=lambda o: orjson.dumps(o).decode(),
                connector=aiohttp.TCPConnector(limit=64),
            )
            self._owns_session = True
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the session if this client created it."""
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    # ---- keys

    def wire_key(self, key: str) -> str:
        """The key as sent: ``@org/key`` for a bound client, unchanged otherwise."""
        if self._org_prefix and not key.startswith("@"):
            return self._org_prefix + key
        return key

    def local_key(self, key: str) -> str:
        """The key as returned to callers: without the ``@org/`` of this client's org."""
        if self._org_prefix and key.startswith(self._org_prefix):
            return key[len(self._org_prefix) :]
        return key

    @staticmethod
    def _check_key(key: object) -> str:
        if not isinstance(key, str) or not key:
            raise InvalidRequestError(f"memory key must be a non-empty string, got {key!r}")
        if any(ord(c) < 32 or ord(c) == 127 for c in key):
            raise InvalidRequestError(f"memory key {key!r} contains control characters")
        return key

    # ---- transport

    async def call_tool(
        self, name: str, arguments: Mapping[str, Any], *, key: str | None = None
    ) -> Any:
        """Call one tool (with retries) and return its structured result."""
        payload, _ = await self._call_tool_counted(name, arguments, key=key)
        return payload

    async def _call_tool_counted(
        self, name: str, arguments: Mapping[str, Any], *, key: str | None = None
    ) -> tuple[Any, int]:
        """``(result, attempts)``: how many requests it took (more than 1 after a retry)."""
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.retry.attempts) | stop_after_delay(self.retry.total_s),
            wait=self._wait,
            retry=retry_if_exception(_is_retryable),
            before_sleep=self._log_retry(name),
            sleep=self._sleep,
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                payload = await self._call_once(name, arguments, key)
                return payload, attempt.retry_state.attempt_number
        raise AssertionError("unreachable")  # pragma: no cover

    def _wait(self, state: RetryCallState) -> float:
        p = self.retry
        n = max(0, state.attempt_number - 1)
        backoff = random.uniform(0, min(p.max_backoff_s, p.initial_s * (2**n)))
        exc = state.outcome.exception() if state.outcome else None
        hinted = getattr(exc, "retry_after", None)
        if isinstance(hinted, int | float) and hinted > 0:
            backoff = max(backoff, min(float(hinted), p.max_retry_after_s))
        elapsed = time.monotonic() - state.start_time
        return max(0.0, min(backoff, p.total_s - elapsed))

    def _log_retry(self, tool: str) -> Callable[[RetryCallState], None]:
        def before_sleep(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            log.warning(
                "ensue.retry",
                tool=tool,
                url=self.url,
                attempt=state.attempt_number,
                of=self.retry.attempts,
                sleep_s=round(state.upcoming_sleep, 3),
                error_type=type(exc).__name__,
                error=str(exc),
            )

        return before_sleep

    def _headers(self) -> dict[str, str]:
        headers = {
            "Content-Type": "application/json",
            "Accept": "application/json, text/event-stream",
        }
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        return headers

    async def _call_once(self, tool: str, arguments: Mapping[str, Any], key: str | None) -> Any:
        if self._session is None:
            raise ConfigError("EnsueClient used outside `async with` (no HTTP session)")
        request_id = next(self._ids)
        body = orjson.dumps(
            {
                "jsonrpc": "2.0",
                "method": "tools/call",
                "params": {"name": tool, "arguments": arguments},
                "id": request_id,
            }
        )
        try:
            async with self._session.post(
                self.url, data=body, headers=self._headers(), timeout=self._timeout
            ) as resp:
                raw = await resp.read()
                status = resp.status
                content_type = resp.headers.get("Content-Type", "")
                retry_after = _retry_after_s(resp.headers)
        except TimeoutError as exc:
            raise MemoryTimeout(
                f"{tool}: no answer from {self.url} within {self.timeout_s:g}s"
            ) from exc
        except aiohttp.ClientError as exc:  # connection refused/reset, payload broken, ...
            raise TransportError(f"{tool}: cannot talk to {self.url}: {exc!r}") from exc
        if status >= 300:
            self._raise_for_status(tool, status, raw, content_type, retry_after, request_id)
        response = _decode_body(raw, content_type, request_id)
        error = response.get("error")
        if error is not None:
            if isinstance(error, dict):
                code = error.get("code")
                message = error.get("message") or "JSON-RPC error"
                data = error.get("data")
                detail = f" ({data})" if data else ""
                raise ProtocolError(
                    f"{tool}: {message}{detail}", code=code if isinstance(code, int) else None
                )
            raise ProtocolError(f"{tool}: JSON-RPC error {error!r:.200}")
        return _result_payload(tool, response.get("result"), key)

    def _raise_for_status(
        self,
        tool: str,
        status: int,
        raw: bytes,
        content_type: str,
        retry_after: float | None,
        request_id: int,
    ) -> None:
        snippet = raw[:300].decode("utf-8", "replace").strip()
        if status in (401, 403):
            if not self._api_key:
                what = "needs a key (none was given)"
            elif status == 403:
                what = "refused this key the permission (ask the org admin for access)"
            else:
                what = "rejected the key (wrong, revoked or not yet verified)"
            raise AuthError(f"{tool}: {self.url} {what} (HTTP {status}: {snippet}); {_AUTH_HELP}")
        if status == 429 or status >= 500:
            exc = ServerError(
                f"{tool}: {self.url} answered HTTP {status}: {snippet}", status=status
            )
            exc.retry_after = retry_after  # type: ignore[attr-defined]
            raise exc
        # Another 4xx: maybe a JSON-RPC error body, maybe not.
        code: int | None = status
        message = snippet
        try:
            doc = _decode_body(raw, content_type, request_id)
        except ProtocolError:
            doc = None
        if doc and isinstance(doc.get("error"), dict):
            err = doc["error"]
            message = str(err.get("message") or snippet)
            code = err.get("code") if isinstance(err.get("code"), int) else status
        raise ProtocolError(f"{tool}: HTTP {status}: {message}", code=code)

    async def _batched(
        self, chunks: Sequence[Sequence[Any]], call: Callable[[Sequence[Any]], Awaitable[Any]]
    ) -> list[Any]:
        if len(chunks) == 1:
            return [await call(chunks[0])]
        sem = asyncio.Semaphore(self._concurrency)

        async def one(chunk: Sequence[Any]) -> Any:
            async with sem:
                return await call(chunk)

        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(one(c)) for c in chunks]
        return [t.result() for t in tasks]

    @staticmethod
    def _chunks(items: Sequence[Any]) -> list[Sequence[Any]]:
        return [items[i : i + MAX_BATCH] for i in range(0, len(items), MAX_BATCH)]

    def _results_list(
        self, tool: str, payload: Any, field: str = "results"
    ) -> list[dict[str, Any]]:
        rows: Any
        if isinstance(payload, list):
            rows = payload
        elif isinstance(payload, dict):
            rows = payload.get(field)
            if rows is None:
                rows = []
        else:
            raise ProtocolError(f"{tool}: expected an object with {field!r}, got {payload!r:.200}")
        if not isinstance(rows, list):
            raise ProtocolError(f"{tool}: {field!r} is not a list")
        return [r for r in rows if isinstance(r, dict)]

    def _item_results(
        self, tool: str, wire_keys: Sequence[str], payload: Any, *, create: bool
    ) -> list[ItemResult]:
        rows = self._results_list(tool, payload)
        by_key: dict[str, dict[str, Any]] = {}
        for i, row in enumerate(rows):
            name = row.get("key_name") or row.get("key")
            if isinstance(name, str):
                by_key.setdefault(self.local_key(name), row)
            elif i < len(wire_keys):  # positional fallback
                by_key.setdefault(self.local_key(wire_keys[i]), row)
        out: list[ItemResult] = []
        for wk in wire_keys:
            k = self.local_key(wk)
            got = by_key.get(k)
            if got is None:
                out.append(ItemResult(key=k, ok=False, error=f"{tool}: no result for this key"))
            elif _item_ok(got):
                out.append(ItemResult(key=k, ok=True))
            else:
                err = _item_error(got)
                exists = create and _row_exists(got)
                out.append(ItemResult(key=k, ok=False, error=err, exists=exists))
        return out

    def _decode_value(self, key: str, row: Mapping[str, Any]) -> str:
        value = row.get("value")
        if value is None:
            return ""
        if not isinstance(value, str):
            return orjson.dumps(value).decode()  # a server that hands back parsed JSON
        if row.get("base64") is True or _lower(row.get("encoding")) == "base64":
            try:
                return base64.b64decode(value, validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError) as exc:
                raise ProtocolError(
                    f"value of {key!r} is flagged base64 but is not: {exc}"
                ) from exc
        return value

    # ---- tools

    async def create_memory(self, items: Sequence[NewMemory]) -> list[ItemResult]:
        """Create-if-absent each item; results in the order given (``exists`` on a taken key)."""
        wire = [self.wire_key(self._check_key(it.key)) for it in items]
        if len(set(wire)) != len(wire):
            raise InvalidRequestError("create_memory: the same key appears twice in one call")
        payload = [
            {
                "key_name": wk,
                "description": it.description,
                "value": _b64(it.value),
                "base64": True,
                "embed": bool(it.embed),
                "embed_source": it.embed_source,
            }
            for wk, it in zip(wire, items, strict=True)
        ]

        async def call(chunk: Sequence[dict[str, Any]]) -> list[ItemResult]:
            result, attempts = await self._call_tool_counted(
                "create_memory", {"items": list(chunk)}
            )
            out = self._item_results(
                "create_memory", [c["key_name"] for c in chunk], result, create=True
            )
            if attempts > 1:
                # An earlier attempt may have reached the server before its reply was lost:
                # "exists" can then be this very call's own work. Say so; callers verify.
                out = [
                    ItemResult(
                        r.key,
                        r.ok,
                        f"{r.error} (after {attempts} attempts: an "
                        "earlier attempt of this client may have created it)",
                        r.exists,
                    )
                    if r.exists
                    else r
                    for r in out
                ]
            return out

        if not payload:
            return []
        parts = await self._batched(self._chunks(payload), call)
        return [r for part in parts for r in part]

    async def get_memory(self, keys: Sequence[str]) -> dict[str, Memory]:
        """Items by key (callers' form); missing keys are absent."""
        wire = list(dict.fromkeys(self.wire_key(self._check_key(k)) for k in keys))
        if not wire:
            return {}

        async def call(chunk: Sequence[str]) -> dict[str, Memory]:
            result = await self.call_tool("get_memory", {"key_names": list(chunk)})
            found: dict[str, Memory] = {}
            for row in self._results_list("get_memory", result):
                name = row.get("key_name") or row.get("key")
                if not isinstance(name, str):
                    continue
                k = self.local_key(name)
                if not _item_ok(row) or ("value" not in row and row.get("error")):
                    if _row_missing(row):
                        continue
                    err = _item_error(row)
                    raise _tool_error("get_memory", f"{k}: {err}", k, _row_code(row))
                found[k] = Memory(
                    key=k,
                    value=self._decode_value(k, row),
                    description=str(row.get("description") or ""),
                    created_at=_epoch(row.get("created_at")),
                    updated_at=_epoch(row.get("updated_at") or row.get("created_at")),
                    embedded=bool(row.get("embed") or row.get("embedded")),
                )
            return found

        out: dict[str, Memory] = {}
        for part in await self._batched(self._chunks(wire), call):
            out.update(part)
        return out

    async def update_memory(
        self,
        key: str,
        value: str,
        *,
        description: str | None = None,
        embed: bool | None = None,
        embed_source: EmbedSource | None = None,
    ) -> None:
        """Replace an existing key's value; ``KeyNotFoundError`` when it is absent."""
        wk = self.wire_key(self._check_key(key))
        args: dict[str, Any] = {"key_name": wk, "value": _b64(value), "base64": True}
        if description is not None:
            args["description"] = description
        if embed is not None:
            args["embed"] = embed
        if embed_source is not None:
            args["embed_source"] = embed_source
        result = await self.call_tool("update_memory", args, key=key)
        rows: list[dict[str, Any]] = []
        if isinstance(result, dict):
            if isinstance(result.get("results"), list):
                rows = [r for r in result["results"] if isinstance(r, dict)]
            elif "status" in result or "error" in result:
                rows = [result]
        for row in rows:
            if not _item_ok(row):
                err = _item_error(row)
                raise _tool_error("update_memory", f"{key}: {err}", key, _row_code(row))

    async def delete_memory(self, keys: Sequence[str]) -> list[ItemResult]:
        """Delete keys; a missing key is a failed item, not an exception."""
        wire = list(dict.fromkeys(self.wire_key(self._check_key(k)) for k in keys))
        if not wire:
            return []

        async def call(chunk: Sequence[str]) -> list[ItemResult]:
            result = await self.call_tool("delete_memory", {"key_names": list(chunk)})
            return self._item_results("delete_memory", chunk, result, create=False)

        parts = await self._batched(self._chunks(wire), call)
        return [r for part in parts for r in part]

    async def list_keys(self, prefix: str = "", *, limit: int | None = None) -> list[KeyInfo]:
        """Every key starting with ``prefix`` (literally), all pages, sorted by key."""
        if limit is not None and limit < 1:
            raise InvalidRequestError(f"list_keys limit must be >= 1, got {limit}")
        if prefix:
            self._check_key(prefix)
        wire_prefix = self.wire_key(prefix) if prefix else (self._org_prefix or "")
        escaped = like_escape(wire_prefix)
        found: dict[str, KeyInfo] = {}
        offset = 0
        while True:
            result = await self.call_tool(
                "list_keys", {"prefix": escaped, "limit": PAGE_SIZE, "offset": offset}
            )
            page = self._results_list("list_keys", result, field="keys")
            for row in page:
                name = row.get("key_name") or row.get("key")
                if not isinstance(name, str):
                    continue
                k = self.local_key(name)
                if not k.startswith(prefix):  # LIKE surprises never widen the answer
                    continue
                if not prefix and self._org_prefix and name.startswith("@") and k == name:
                    continue  # another org's key while listing our whole org
                found[k] = KeyInfo(
                    key=k,
                    description=str(row.get("description") or ""),
                    created_at=_epoch(row.get("created_at")),
                    updated_at=_epoch(row.get("updated_at") or row.get("created_at")),
                )
            if len(page) < PAGE_SIZE or (limit is not None and len(found) >= limit):
                break
            offset += len(page)
        rows = sorted(found.values(), key=lambda r: r.key)
        return rows if limit is None else rows[:limit]

    async def search_memories(
        self, query: str, *, limit: int = 10, prefix: str | None = None
    ) -> list[SearchHit]:
        """Embedded items closest to ``query``, best first (cosine, higher is closer)."""
        if not isinstance(query, str) or not query.strip():
            raise InvalidRequestError("search query must be non-empty text")
        if limit < 1:
            raise InvalidRequestError(f"search limit must be >= 1, got {limit}")
        args: dict[str, Any] = {"query": query, "limit": min(limit, MAX_SEARCH_LIMIT)}
        if prefix:
            args["prefix"] = self.wire_key(self._check_key(prefix))
        elif self._org_prefix:
            args["prefix"] = self._org_prefix  # a bound client searches its org only
        result = await self.call_tool("search_memories", args)
        hits: list[SearchHit] = []
        for row in self._results_list("search_memories", result):
            name = row.get("key_name") or row.get("key")
            if not isinstance(name, str):
                continue
            k = self.local_key(name)
            if prefix and not k.startswith(prefix):
                continue
            if not prefix and self._org_prefix and name.startswith("@") and k == name:
                continue  # another org's item
            score = row.get("score", row.get("similarity", 0.0))
            hits.append(
                SearchHit(
                    key=k,
                    score=float(score) if isinstance(score, int | float) else 0.0,
                    value=self._decode_value(k, row),
                    description=str(row.get("description") or ""),
                )
            )
        hits.sort(key=lambda h: -h.score)
        return hits[:limit]

    async def claim_invite(self, token: str) -> Any:
        """Join an org through an invite token."""
        return await self.call_tool("claim_invite", {"token": token})

    async def create_invite(self, *, auto_approve: bool = True) -> Any:
        """Create an invite link for this key's org."""
        return await self.call_tool("create_invite", {"auto_approve": auto_approve})

    async def share(self, command: Mapping[str, Any]) -> Any:
        """Org administration (users, groups, grants): ``{"command": "...", ...}``."""
        return await self.call_tool("share", {"command": dict(command)})


# --------------------------------------------------------------------------- registration


async def register_agent(
    name: str,
    *,
    base_url: str = DEFAULT_URL,
    session: aiohttp.ClientSession | None = None,
    timeout_s: float = 30.0,
    retry: RetryPolicy = RetryPolicy(attempts=3),
    sleep: Sleep = asyncio.sleep,
) -> AgentRegistration:
    """Register an agent: ``POST {base}/auth/agent-register {"name": name}``.

    Retries only answers that show the server did not act (429, 503) and connection
    refusals; a half-finished registration is not repeated blindly.
    """
    url = str(URL(base_url.rstrip("/") + "/auth/agent-register"))
    own = session is None
    sess = session or aiohttp.ClientSession()
    try:
        retrying = AsyncRetrying(
            stop=stop_after_attempt(retry.attempts) | stop_after_delay(retry.total_s),
            wait=lambda s: random.uniform(
                0, min(retry.max_backoff_s, retry.initial_s * 2 ** (s.attempt_number - 1))
            ),
            retry=retry_if_exception(
                lambda e: (
                    (isinstance(e, ServerError) and e.status in (429, 503))
                    or (isinstance(e, TransportError) and "refused" in str(e).lower())
                )
            ),
            before_sleep=lambda s: log.warning(
                "ensue.register.retry",
                url=url,
                attempt=s.attempt_number,
                sleep_s=round(s.upcoming_sleep, 3),
                error=str(s.outcome.exception() if s.outcome else ""),
            ),
            sleep=sleep,
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                return await _register_once(sess, url, name, timeout_s)
        raise AssertionError("unreachable")  # pragma: no cover
    finally:
        if own:
            await sess.close()


async def _register_once(
    session: aiohttp.ClientSession, url: str, name: str, timeout_s: float
) -> AgentRegistration:
    try:
        async with session.post(
            url,
            data=orjson.dumps({"name": name}),
            headers={"Content-Type": "application/json", "Accept": "application/json"},
            timeout=aiohttp.ClientTimeout(total=timeout_s),
        ) as resp:
            raw = await resp.read()
            status = resp.status
    except TimeoutError as exc:
        raise MemoryTimeout(f"agent-register: no answer from {url} within {timeout_s:g}s") from exc
    except aiohttp.ClientConnectorError as exc:
        raise TransportError(f"agent-register: connection refused by {url}: {exc!r}") from exc
    except aiohttp.ClientError as exc:
        raise TransportError(f"agent-register: cannot talk to {url}: {exc!r}") from exc
    snippet = raw[:300].decode("utf-8", "replace").strip()
    if status == 429 or status >= 500:
        raise ServerError(f"agent-register: {url} answered HTTP {status}: {snippet}", status=status)
    try:
        doc = orjson.loads(raw) if raw else {}
    except orjson.JSONDecodeError as exc:
        if status >= 400:
            doc = {}
        else:
            raise ProtocolError(f"agent-register: reply is not JSON: {snippet!r}") from exc
    if status >= 400:
        why = ""
        if isinstance(doc, dict):
            why = str(doc.get("error") or doc.get("message") or doc.get("detail") or "")
        raise ToolError(
            f"agent-register refused name {name!r} (HTTP {status}): {why or snippet}", key=name
        )
    if not isinstance(doc, dict) or not isinstance(doc.get("api_key"), str) or not doc["api_key"]:
        raise ProtocolError(f"agent-register: reply has no api_key: {snippet!r}")
    return AgentRegistration(
        api_key=doc["api_key"],
        claim_url=str(doc.get("claim_url") or ""),
        verification_code=str(doc.get("verification_code") or ""),
    )
