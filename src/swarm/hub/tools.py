"""The hub's tools over a store (``swarm.memory._store.HubStore``: SQLite or PostgreSQL):
permissions and result shapes. Argument checking lives in ``swarm.hub.toolargs``.

Shapes and error codes are described in ``swarm.hub.protocol``.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, cast

from swarm._logging import get_logger
from swarm.embedding import Embedder, get_embedder
from swarm.errors import AuthError, InvalidRequestError, KeyNotFoundError
from swarm.hub.access import AuthState
from swarm.hub.auth import AuthSnapshot, Principal
from swarm.hub.limits import HubLimits, RequestBudget
from swarm.hub.orgtools import OrgTools, forbid, need_token
from swarm.hub.protocol import ERR_UNAUTHORIZED, MAX_PAGE, TOOL_NAMES, RpcError, ToolFailure
from swarm.hub.toolargs import (
    ItemArgs,
    bad,
    decode_value,
    embed_source_arg,
    fit,
    item_error,
    key_list,
    opt_bool,
    opt_int,
    opt_str,
    parse_items,
    req_str,
)
from swarm.memory import NewMemory
from swarm.memory.store import (
    MAX_DESCRIPTION_BYTES,
    HubStore,
    KeyPattern,
    StoredItem,
    check_text,
    parse_like,
    public_key,
    split_key,
)
from swarm.sync import missing_feed_entries

__all__ = ["HubService", "decode_value"]

log = get_logger(__name__)

Tool = Callable[[Principal, Mapping[str, Any], RequestBudget], Awaitable[dict[str, Any]]]


# --------------------------------------------------------------------------- service


class HubService:
    """Runs tools for principals against one store (SQLite or PostgreSQL)."""

    def __init__(
        self,
        store: HubStore,
        auth: AuthState,
        *,
        embedder: Embedder | None = None,
        limits: HubLimits | None = None,
    ) -> None:
        self.store = store
        self.limits = limits or HubLimits()
        self.auth = auth
        self.org = store.org
        self.policy = auth.policy
        self.org_tools = OrgTools(auth, self.org)
        self._embedder = embedder
        self.tools: dict[str, Tool] = {
            "create_memory": self.create_memory,
            "get_memory": self.get_memory,
            "update_memory": self.update_memory,
            "delete_memory": self.delete_memory,
            "list_keys": self.list_keys,
            "search_memories": self.search_memories,
            "create_invite": self.create_invite,
            "claim_invite": self.claim_invite,
            "share": self.share,
        }
        assert tuple(self.tools) == TOOL_NAMES

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = get_embedder()
        return self._embedder

    async def call(
        self,
        who: Principal,
        name: str,
        args: Mapping[str, Any],
        budget: RequestBudget | None = None,
    ) -> dict[str, Any]:
        tool = self.tools.get(name)
        if tool is None:
            raise bad(f"unknown tool {name!r}; this hub serves: {', '.join(TOOL_NAMES)}")
        return await tool(who, args, budget or RequestBudget(self.limits))

    # ------------------------------------------------------------------ helpers

    def _take_items(self, tool: str, n: int, budget: RequestBudget) -> None:
        if not budget.take_items(n):
            raise bad(
                f"{tool}: {n} more items would take this request past its "
                f"{self.limits.max_items_per_request}-item limit (the calls of a batch count "
                "together); send them in another request"
            )

    def _canon(self, key: str) -> str:
        org, k = split_key(key, self.org)
        return public_key(org, k, self.org)

    _need_token = staticmethod(need_token)
    _forbid = staticmethod(forbid)

    def _check_pattern_readable(
        self, who: Principal, snap: AuthSnapshot, pattern: KeyPattern, tool: str
    ) -> None:
        if not who.anonymous:
            return
        prefix = (
            public_key(pattern.org, pattern.literal, self.org)
            if pattern.literal
            else ("" if pattern.org == self.org else f"@{pattern.org}/")
        )
        if not snap.prefix_is_public(prefix):
            public = ", ".join(snap.public) or "none"
            raise RpcError(
                ERR_UNAUTHORIZED,
                f"{tool} of prefix {prefix!r} needs a token; public prefixes: {public}",
                http_status=401,
            )

    # ------------------------------------------------------------------ memory tools

    async def create_memory(
        self, who: Principal, args: Mapping[str, Any], budget: RequestBudget
    ) -> dict[str, Any]:
        tool = "create_memory"
        self._need_token(who, tool)
        snap = await self.auth.current()
        if who.role == "read" and not snap.has_any_grant("read", "create"):
            raise self._forbid(who, tool, "may not create items")
        parsed = parse_items(args.get("items"), tool)
        self._take_items(tool, len(parsed), budget)
        results: list[dict[str, Any] | None] = [None] * len(parsed)
        todo: list[tuple[int, NewMemory]] = []
        for i, item in enumerate(parsed):
            checked = self._new_memory(who, snap, item)
            if isinstance(checked, NewMemory):
                todo.append((i, checked))
            else:
                results[i] = checked
        if todo:
            outcomes = await self.store.create_checked([m for _, m in todo], creator=who.creator)
            for (i, mem), out in zip(todo, outcomes, strict=True):
                if out.ok:
                    results[i] = {
                        "key_name": mem.key,
                        "status": "success",
                        "created_at": out.at,
                        "updated_at": out.at,
                    }
                else:
                    code = "already_exists" if out.code == "exists" else out.code
                    results[i] = item_error(mem.key, code, out.error or code)
            await self._index_feed(
                [self._canon(m.key) for (_, m), o in zip(todo, outcomes, strict=True) if o.ok],
                who.creator,
            )
        final = [r for r in results if r is not None]
        created = sum(1 for r in final if r["status"] == "success")
        return {"results": final, "created": created, "failed": len(final) - created}

    def _new_memory(
        self, who: Principal, snap: AuthSnapshot, item: ItemArgs
    ) -> NewMemory | dict[str, Any]:
        """The item to create, or its error entry (invalid, or not allowed)."""
        key, value, desc, b64, embed, source = item
        try:
            canon = self._canon(key)
            text = decode_value(value, b64, key, self.store.max_value_bytes)
            description = check_text(
                desc or "", f"description of {key!r}", max_bytes=MAX_DESCRIPTION_BYTES
            )
        except InvalidRequestError as exc:
            return item_error(key, "invalid", str(exc))
        if not snap.may_create(who, canon):
            return item_error(
                key, "forbidden", f"token {who.name!r} (role {who.role}) may not create {key!r}"
            )
        return NewMemory(
            key=key,
            value=text,
            description=description,
            embed=embed,
            embed_source=cast(Any, source or "description"),
        )

    async def _index_feed(self, created: list[str], creator: str | None) -> None:
        """Write the feed entries of results created without one (clients of the original
        fork, older clients), so that readers see them by the incremental path (swarm.sync)."""
        extra = missing_feed_entries(created, time.time())
        if extra:
            outcomes = await self.store.create_checked(extra, creator=creator)
            for mem, out in zip(extra, outcomes, strict=True):
                if not out.ok and out.code != "exists":
                    log.warning("feed_index_failed", key=mem.key, error=out.error)

    async def get_memory(
        self, who: Principal, args: Mapping[str, Any], budget: RequestBudget
    ) -> dict[str, Any]:
        keys = key_list(args, "get_memory")
        self._take_items("get_memory", len(keys), budget)
        snap = await self.auth.current()
        results: list[dict[str, Any] | None] = [None] * len(keys)
        fetch: list[int] = []
        for i, key in enumerate(keys):
            try:
                canon = self._canon(key)
            except InvalidRequestError as exc:
                results[i] = item_error(key, "invalid", str(exc))
                continue
            if not snap.may_read(who, canon):
                results[i] = item_error(
                    key, "forbidden", f"{key!r} is not public; reading it needs a token"
                )
                continue
            fetch.append(i)
        found: dict[str, StoredItem] = (
            await self.store.get_items([keys[i] for i in fetch]) if fetch else {}
        )
        hits: list[tuple[int, dict[str, Any]]] = []
        for i in fetch:
            key = keys[i]
            item = found.get(key)
            if item is None:
                results[i] = item_error(key, "not_found", f"key {key!r} not found")
            else:
                hits.append(
                    (
                        i,
                        {
                            "key_name": key,
                            "status": "success",
                            "value": item.value,
                            "description": item.description,
                            "created_at": item.created_at,
                            "updated_at": item.updated_at,
                            "embedded": item.embedded,
                            "size": item.size,
                        },
                    )
                )
        costs = await fit([e for _, e in hits], budget)
        for (i, entry), cost in zip(hits, costs, strict=True):
            results[i] = (
                entry
                if cost is not None
                else item_error(
                    keys[i],
                    "too_large",
                    f"{keys[i]!r} ({entry['size']} bytes) does not fit in what is left of this "
                    f"request's {self.limits.max_reply_bytes}-byte reply limit; get it in a "
                    "request of its own",
                )
            )
        return {"results": results}

    async def update_memory(
        self, who: Principal, args: Mapping[str, Any], budget: RequestBudget
    ) -> dict[str, Any]:
        tool = "update_memory"
        self._need_token(who, tool)
        key = req_str(args, "key_name", "", tool)
        value = req_str(args, "value", "", tool)
        self._take_items(tool, 1, budget)
        desc = opt_str(args, "description", "")
        b64 = bool(opt_bool(args, "base64", ""))
        embed = opt_bool(args, "embed", "")
        source = embed_source_arg(args, "")
        snap = await self.auth.current()
        assert who.role is not None
        if who.role == "read" and not snap.has_any_grant("read", "update"):
            raise self._forbid(who, tool, "may not update items")
        try:
            canon = self._canon(key)
            text = decode_value(value, b64, key, self.store.max_value_bytes)
        except InvalidRequestError as exc:
            raise ToolFailure("invalid", str(exc), key=key) from exc
        allowed, owner = snap.owner_for(who, "update", canon, self.policy)
        if not allowed:
            raise ToolFailure(
                "forbidden", f"token {who.name!r} (role {who.role}) may not update {key!r}", key=key
            )
        try:
            item = await self.store.update(
                key,
                text,
                description=desc,
                embed=embed,
                embed_source=cast(Any, source),
                owner=owner,
            )
        except KeyNotFoundError as exc:
            raise ToolFailure(
                "not_found", f"key {key!r} not found; create it first", key=key
            ) from exc
        except AuthError as exc:
            raise ToolFailure("forbidden", str(exc), key=key) from exc
        except InvalidRequestError as exc:
            raise ToolFailure("invalid", str(exc), key=key) from exc
        return {
            "key_name": key,
            "status": "success",
            "created_at": item.created_at,
            "updated_at": item.updated_at,
        }

    async def delete_memory(
        self, who: Principal, args: Mapping[str, Any], budget: RequestBudget
    ) -> dict[str, Any]:
        tool = "delete_memory"
        self._need_token(who, tool)
        keys = key_list(args, tool)
        self._take_items(tool, len(keys), budget)
        snap = await self.auth.current()
        assert who.role is not None
        if who.role == "read" and not snap.has_any_grant("read", "delete"):
            raise self._forbid(who, tool, "may not delete items")
        results: list[dict[str, Any] | None] = [None] * len(keys)
        todo: list[int] = []
        owners: list[str | None] = []
        for i, key in enumerate(keys):
            try:
                canon = self._canon(key)
            except InvalidRequestError as exc:
                results[i] = item_error(key, "invalid", str(exc))
                continue
            allowed, owner = snap.owner_for(who, "delete", canon, self.policy)
            if not allowed:
                results[i] = item_error(
                    key, "forbidden", f"token {who.name!r} (role {who.role}) may not delete {key!r}"
                )
                continue
            todo.append(i)
            owners.append(owner)
        if todo:
            outcomes = await self.store.delete_checked([keys[i] for i in todo], owners=owners)
            for i, out in zip(todo, outcomes, strict=True):
                if out.ok:
                    results[i] = {"key_name": keys[i], "status": "success"}
                else:
                    results[i] = item_error(keys[i], out.code, out.error or out.code)
        final = [r for r in results if r is not None]
        deleted = sum(1 for r in final if r["status"] == "success")
        return {"results": final, "deleted": deleted, "failed": len(final) - deleted}

    async def list_keys(
        self, who: Principal, args: Mapping[str, Any], budget: RequestBudget
    ) -> dict[str, Any]:
        tool = "list_keys"
        prefix = opt_str(args, "prefix", "") or ""
        limit = min(opt_int(args, "limit", 1, MAX_PAGE), MAX_PAGE)
        offset = opt_int(args, "offset", 0, 0)
        try:
            pattern = parse_like(prefix, self.org)
        except InvalidRequestError as exc:
            raise bad(f"{tool}: {exc}") from exc
        snap = await self.auth.current()
        self._check_pattern_readable(who, snap, pattern, tool)
        rows = await self.store.list_page(pattern, limit=limit + 1, offset=offset)
        has_more = len(rows) > limit
        page = [
            {
                "key_name": r.key,
                "description": r.description,
                "size": r.size,
                "created_at": r.created_at,
                "updated_at": r.updated_at,
            }
            for r in rows[:limit]
        ]
        costs = await fit(page, budget, stop_at_first=True)
        keys = [e for e, c in zip(page, costs, strict=True) if c is not None]
        if len(keys) < len(page):
            has_more = True  # the rest of the page comes with the next offset
        return {
            "keys": keys,
            "count": len(keys),
            "offset": offset,
            "limit": limit,
            "has_more": has_more,
        }

    async def search_memories(
        self, who: Principal, args: Mapping[str, Any], budget: RequestBudget
    ) -> dict[str, Any]:
        tool = "search_memories"
        query = req_str(args, "query", "", tool)
        if not query.strip():
            raise bad(f"{tool}: query is empty; give the text to search for")
        try:
            check_text(query, "query", max_bytes=MAX_DESCRIPTION_BYTES)
        except InvalidRequestError as exc:
            raise bad(f"{tool}: {exc}") from exc
        limit = min(opt_int(args, "limit", 1, 10), MAX_PAGE)
        prefix = opt_str(args, "prefix", "") or ""
        try:
            pattern = parse_like(prefix, self.org)
        except InvalidRequestError as exc:
            raise bad(f"{tool}: {exc}") from exc
        snap = await self.auth.current()
        self._check_pattern_readable(who, snap, pattern, tool)
        vec = (await self.embedder.aembed([query]))[0]
        hits = await self.store.search_vector(vec, limit=limit, prefix=pattern)
        found = [
            {
                "key_name": item.key,
                "score": round(score, 6),
                "value": item.value,
                "description": item.description,
                "created_at": item.created_at,
                "updated_at": item.updated_at,
                "metadata": {
                    "description": item.description,
                    "created_at": item.created_at,
                    "updated_at": item.updated_at,
                },
            }
            for item, score in hits
        ]
        costs = await fit(found, budget, stop_at_first=True)
        results = [e for e, c in zip(found, costs, strict=True) if c is not None]
        if len(results) < len(found):
            return {"results": results, "truncated": True}
        return {"results": results}

    # ------------------------------------------------------------------ org tools

    async def create_invite(
        self, who: Principal, args: Mapping[str, Any], budget: RequestBudget
    ) -> dict[str, Any]:
        return await self.org_tools.create_invite(who, args)

    async def claim_invite(
        self, who: Principal, args: Mapping[str, Any], budget: RequestBudget
    ) -> dict[str, Any]:
        return await self.org_tools.claim_invite(who, args)

    async def share(
        self, who: Principal, args: Mapping[str, Any], budget: RequestBudget
    ) -> dict[str, Any]:
        policy = {
            "shared_update_prefixes": list(self.policy.shared_update_prefixes),
            "shared_delete_prefixes": list(self.policy.shared_delete_prefixes),
        }
        return await self.org_tools.share(who, args, policy)
