"""The memory tools of an Ensue-protocol server, in the caller's terms.

Keys: the client may be bound to an ``org``. Keys without an ``@`` are then sent as
``@org/key`` and every key that comes back for that org is returned without the prefix,
whichever form the server used. Keys of other orgs (``@other/...``) pass through as is.
Per-item failures become ``ItemResult(ok=False, ...)``; large calls are split into
batches of ``MAX_BATCH`` sent a few at a time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import aiohttp
from yarl import URL

from swarm._ensue.policy import RetryPolicy, Sleep
from swarm._ensue.rpc import (
    b64,
    decode_value,
    epoch,
    item_error,
    item_ok,
    like_escape,
    results_list,
    row_code,
    row_exists,
    row_missing,
    tool_error,
)
from swarm._ensue.transport import RpcTransport
from swarm.errors import ConfigError, InvalidRequestError, MemoryStoreError
from swarm.memory import (
    MAX_BATCH,
    EmbedSource,
    ItemResult,
    KeyInfo,
    Memory,
    NewMemory,
    SearchHit,
)

DEFAULT_URL = "https://api.ensue-network.ai/"
"""The hosted Ensue service."""

PAGE_SIZE = 100
"""list_keys' largest page (the protocol's limit)."""

MAX_SEARCH_LIMIT = 100


def _checked_url(url: str, org: str | None, timeout_s: float) -> str:
    """The normalised server URL; ConfigError naming a bad url, org or timeout."""
    try:
        parsed = URL(url)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"memory URL {url!r} is not a URL: {exc}", key="url", value=url) from exc
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
    return str(parsed)


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
        self.url = _checked_url(url, org, timeout_s)
        self.org = org
        self.timeout_s = timeout_s
        self.retry = retry
        self._transport = RpcTransport(
            self.url, api_key, session=session, timeout_s=timeout_s, retry=retry, sleep=sleep
        )
        self._concurrency = max(1, concurrency)
        self._org_prefix = f"@{org}/" if org else None

    # ---- lifecycle

    async def __aenter__(self) -> EnsueClient:
        self._transport.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the session if this client created it."""
        await self._transport.close()

    @property
    def _session(self) -> aiohttp.ClientSession | None:
        return self._transport.session

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

    # ---- calls

    async def call_tool(
        self, name: str, arguments: Mapping[str, Any], *, key: str | None = None
    ) -> Any:
        """Call one tool (with retries) and return its structured result."""
        payload, _ = await self._transport.call(name, arguments, key=key)
        return payload

    async def _batched(
        self, chunks: Sequence[Sequence[Any]], call: Callable[[Sequence[Any]], Awaitable[Any]]
    ) -> list[Any]:
        if len(chunks) == 1:
            return [await call(chunks[0])]
        sem = asyncio.Semaphore(self._concurrency)

        async def one(chunk: Sequence[Any]) -> Any:
            async with sem:
                return await call(chunk)

        try:
            async with asyncio.TaskGroup() as tg:
                tasks = [tg.create_task(one(c)) for c in chunks]
        except BaseExceptionGroup as group:
            # callers handle the package's errors, not groups: a failed chunk (the others
            # are cancelled) surfaces as that chunk's own error; anything else stays a group
            store_errors, rest = group.split(MemoryStoreError)
            if rest is None and store_errors is not None:
                raise _first_leaf(store_errors) from group
            raise
        return [t.result() for t in tasks]

    @staticmethod
    def _chunks(items: Sequence[Any]) -> list[Sequence[Any]]:
        return [items[i : i + MAX_BATCH] for i in range(0, len(items), MAX_BATCH)]

    def _item_results(
        self, tool: str, wire_keys: Sequence[str], payload: Any, *, create: bool
    ) -> list[ItemResult]:
        rows = results_list(tool, payload)
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
            elif item_ok(got):
                out.append(ItemResult(key=k, ok=True))
            else:
                err = item_error(got)
                exists = create and row_exists(got)
                out.append(ItemResult(key=k, ok=False, error=err, exists=exists))
        return out

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
                "value": b64(it.value),
                "base64": True,
                "embed": bool(it.embed),
                "embed_source": it.embed_source,
            }
            for wk, it in zip(wire, items, strict=True)
        ]

        async def call(chunk: Sequence[dict[str, Any]]) -> list[ItemResult]:
            result, attempts = await self._transport.call("create_memory", {"items": list(chunk)})
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
            for row in results_list("get_memory", result):
                name = row.get("key_name") or row.get("key")
                if not isinstance(name, str):
                    continue
                k = self.local_key(name)
                if not item_ok(row) or ("value" not in row and row.get("error")):
                    if row_missing(row):
                        continue
                    err = item_error(row)
                    raise tool_error("get_memory", f"{k}: {err}", k, row_code(row))
                found[k] = Memory(
                    key=k,
                    value=decode_value(k, row),
                    description=str(row.get("description") or ""),
                    created_at=epoch(row.get("created_at")),
                    updated_at=epoch(row.get("updated_at") or row.get("created_at")),
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
        args: dict[str, Any] = {"key_name": wk, "value": b64(value), "base64": True}
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
            if not item_ok(row):
                err = item_error(row)
                raise tool_error("update_memory", f"{key}: {err}", key, row_code(row))

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
            page = results_list("list_keys", result, field="keys")
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
                    created_at=epoch(row.get("created_at")),
                    updated_at=epoch(row.get("updated_at") or row.get("created_at")),
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
        for row in results_list("search_memories", result):
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
                    value=decode_value(k, row),
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


def _first_leaf(group: BaseExceptionGroup[MemoryStoreError]) -> MemoryStoreError:
    """The first error inside ``group`` (groups may nest)."""
    first = group.exceptions[0]
    return _first_leaf(first) if isinstance(first, BaseExceptionGroup) else first
