"""One HTTP endpoint that answers JSON-RPC ``tools/call``: the session, retries, statuses.

The one boundary where aiohttp's failures become ``swarm.errors``: connection failures
-> ``TransportError``; deadlines -> ``MemoryTimeout``; HTTP 401/403 -> ``AuthError`` (the
message says how to get and verify a key); HTTP 429/5xx -> ``ServerError`` (retried,
honouring ``Retry-After``); other statuses and JSON-RPC errors -> ``ProtocolError``.

Retries (tenacity): jittered exponential backoff on retryable errors only
(``TransportError``, ``MemoryTimeout``, ``ServerError``), bounded by attempts and by total
time, each retry logged before sleeping.
"""

from __future__ import annotations

import itertools
import random
import time
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp
import orjson
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
)

from swarm._ensue.policy import RetryPolicy, Sleep
from swarm._ensue.rpc import (
    decode_body,
    encode_request,
    is_retryable,
    result_payload,
    retry_after_s,
    rpc_error,
)
from swarm._logging import get_logger
from swarm.errors import (
    AuthError,
    ConfigError,
    MemoryTimeout,
    ProtocolError,
    ServerError,
    TransportError,
)

log = get_logger("swarm.ensue_async")

AUTH_HELP = (
    "get a key with `python -m swarm register NAME`, have a person verify it at the "
    "claim URL that command prints, then set ENSUE_API_KEY (or keep the key file it writes)"
)


class RpcTransport:
    """Posts ``tools/call`` requests to ``url`` with a bearer key, retrying per ``retry``.

    ``session`` is borrowed when given (the caller closes it), else created by
    :meth:`open` and closed by :meth:`close`.
    """

    def __init__(
        self,
        url: str,
        api_key: str | None,
        *,
        session: aiohttp.ClientSession | None,
        timeout_s: float,
        retry: RetryPolicy,
        sleep: Sleep,
    ) -> None:
        self.url = url
        self.api_key = api_key or None
        self.session = session
        self._owns_session = session is None
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.timeout_s = timeout_s
        self.retry = retry
        self._sleep = sleep
        self._ids = itertools.count(1)

    def open(self) -> None:
        """Create the session unless one was given."""
        if self.session is None:
            self.session = aiohttp.ClientSession(
                json_serialize=lambda o: orjson.dumps(o).decode(),
                connector=aiohttp.TCPConnector(limit=64),
            )
            self._owns_session = True

    async def close(self) -> None:
        """Close the session if this transport created it."""
        if self._owns_session and self.session is not None:
            await self.session.close()
            self.session = None

    async def call(
        self, tool: str, arguments: Mapping[str, Any], *, key: str | None = None
    ) -> tuple[Any, int]:
        """``(result, attempts)``: how many requests it took (more than 1 after a retry)."""
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.retry.attempts) | stop_after_delay(self.retry.total_s),
            wait=self._wait,
            retry=retry_if_exception(is_retryable),
            before_sleep=self._log_retry(tool),
            sleep=self._sleep,
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                payload = await self._call_once(tool, arguments, key)
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
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers

    async def _call_once(self, tool: str, arguments: Mapping[str, Any], key: str | None) -> Any:
        if self.session is None:
            raise ConfigError("EnsueClient used outside `async with` (no HTTP session)")
        request_id = next(self._ids)
        body = encode_request(tool, arguments, request_id)
        try:
            async with self.session.post(
                self.url, data=body, headers=self._headers(), timeout=self._timeout
            ) as resp:
                raw = await resp.read()
                status = resp.status
                content_type = resp.headers.get("Content-Type", "")
                retry_after = retry_after_s(resp.headers)
        except TimeoutError as exc:
            raise MemoryTimeout(
                f"{tool}: no answer from {self.url} within {self.timeout_s:g}s"
            ) from exc
        except aiohttp.ClientError as exc:  # connection refused/reset, payload broken, ...
            raise TransportError(f"{tool}: cannot talk to {self.url}: {exc!r}") from exc
        if status >= 300:
            self._raise_for_status(tool, status, raw, content_type, retry_after, request_id)
        response = decode_body(raw, content_type, request_id)
        error = response.get("error")
        if error is not None:
            raise rpc_error(tool, error)
        return result_payload(tool, response.get("result"), key)

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
            if not self.api_key:
                what = "needs a key (none was given)"
            elif status == 403:
                what = "refused this key the permission (ask the org admin for access)"
            else:
                what = "rejected the key (wrong, revoked or not yet verified)"
            raise AuthError(f"{tool}: {self.url} {what} (HTTP {status}: {snippet}); {AUTH_HELP}")
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
            doc = decode_body(raw, content_type, request_id)
        except ProtocolError:
            doc = None
        if doc and isinstance(doc.get("error"), dict):
            err = doc["error"]
            message = str(err.get("message") or snippet)
            code = err.get("code") if isinstance(err.get("code"), int) else status
        raise ProtocolError(f"{tool}: HTTP {status}: {message}", code=code)
