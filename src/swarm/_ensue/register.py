"""Agent registration: ``POST {base}/auth/agent-register`` returns a key to verify."""

from __future__ import annotations

import asyncio
import random
from typing import NamedTuple

import aiohttp
import orjson
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, stop_after_delay
from yarl import URL

from swarm._ensue.client import DEFAULT_URL
from swarm._ensue.policy import RetryPolicy, Sleep
from swarm._logging import get_logger
from swarm.errors import MemoryTimeout, ProtocolError, ServerError, ToolError, TransportError

log = get_logger("swarm.ensue_async")


class AgentRegistration(NamedTuple):
    """What ``/auth/agent-register`` returns: the new key and how a person verifies it."""

    api_key: str
    claim_url: str
    verification_code: str


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
