"""Async client for the Ensue memory network (and for our hub, which speaks the same protocol).

Wire protocol (see DESIGN.md): ``POST <url>`` with a bearer key and a JSON-RPC 2.0
``tools/call`` body; the answer is plain JSON or server-sent events (``data: {...}``
lines); the tool's result is ``result.structuredContent`` or, as text,
``result.content[0].text``.

This package is the one boundary where foreign failures become ``swarm.errors``:

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

This module is the public surface; the parts live in the private package ``swarm._ensue``:
``policy`` (retry policy), ``rpc`` (request and answer encoding, no I/O), ``transport``
(session, retries, HTTP statuses), ``client`` (the memory tools, :class:`EnsueClient`),
``register`` (agent registration).
"""

from swarm._ensue.client import DEFAULT_URL, MAX_SEARCH_LIMIT, PAGE_SIZE, EnsueClient
from swarm._ensue.policy import NO_RETRY, RetryPolicy, Sleep
from swarm._ensue.register import AgentRegistration, register_agent
from swarm._ensue.rpc import like_escape

__all__ = [
    "DEFAULT_URL",
    "MAX_SEARCH_LIMIT",
    "NO_RETRY",
    "PAGE_SIZE",
    "AgentRegistration",
    "EnsueClient",
    "RetryPolicy",
    "Sleep",
    "like_escape",
    "register_agent",
]
