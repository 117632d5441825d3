"""The hub's tools over a LocalStore: argument checking, permissions, result shapes.

Shapes and error codes are described in ``swarm.hub.protocol``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, cast

from swarm._logging import get_logger
from swarm.embedding import Embedder, get_embedder
from swarm.errors import AuthError, InvalidRequestError, KeyNotFoundError
from swarm.hub.access import AuthState
from swarm.hub.auth import AuthSnapshot, Principal
from swarm.hub.encode import encoded_size
from swarm.hub.limits import MAX_OFFSET, HubLimits, RequestBudget
from swarm.hub.orgtools import OrgTools, forbid, need_token
from swarm.hub.protocol import (
    ERR_INVALID_PARAMS,
    ERR_UNAUTHORIZED,
    MAX_ITEMS,
    MAX_PAGE,
    TOOL_NAMES,
    RpcError,
    ToolFailure,
)
from swarm.memory._types import NewMemory
from swarm.memory.local import (
    MAX_DESCRIPTION_BYTES,
    KeyPattern,
    LocalStore,
    StoredItem,
    check_text,
    parse_like,
    public_key,
    split_key,
)
from swarm.sync import missing_feed_entries

__all__ = ["HubService", "decode_value"]

log = get_logger(__name__)

_INLINE_TEXT = 256 << 10  # characters of values past which replies are measured in a thread

Tool = Callable[[Principal, Mapping[str, Any], RequestBudget], Awaitable[dict[str, Any]]]


# --------------------------------------------------------------------------- arguments


def _bad(message: str) -> RpcError:
    return RpcError(ERR_INVALID_PARAMS, message)


def _opt_str(args: Mapping[str, Any], name: str, where: str) -> str | None:
    v = args.get(name)
    if v is None or isinstance(v, str):
        return v
    raise _bad(f"{where}{name} must be a string, got {type(v).__name__}")


def _req_str(args: Mapping[str, Any], name: str, where: str, tool: str) -> str:
    if name not in args or args[name] is None:
        raise _bad(f"{tool}: missing required argument {where}{name} (a string)")
    v = _opt_str(args, name, where)
    assert v is not None
    return v


def _opt_bool(args: Mapping[str, Any], name: str, where: str) -> bool | None:
    v = args.get(name)
    if v is None or isinstance(v, bool):
        return v
    raise _bad(f"{where}{name} must be true or false, got {v!r}")


def _opt_int(args: Mapping[str, Any], name: str, lo: int, default: int, hi: int = MAX_OFFSET) -> int:
    v = args.get(name)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, int):
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        else:
            raise _bad(f"{name} must be an integer, got {v!r}")
    if v < lo:
        raise _bad(f"{name} must be at least {lo}, got {v}")
    if v > hi:
        raise _bad(f"{name} must be at most {hi}, got {v}")
    return v


def _embed_source(args: Mapping[str, Any], where: str) -> str | None:
    v = args.get("embed_source")
    if v is None:
        return None
    if v not in ("description", "value"):
        raise _bad(f"{where}embed_source must be 'description' or 'value', got {v!r}")
    return cast(str, v)


def _key_list(args: Mapping[str, Any], tool: str) -> list[str]:
    keys = args.get("key_names")
    if keys is None:
        raise _bad(f"{tool}: missing required argument key_names (a list of 1-{MAX_ITEMS} keys)")
    if not isinstance(keys, list):
        raise _bad(f"{tool}: key_names must be a list of strings, got {type(keys).__name__}")
    if not keys:
        raise _bad(f"{tool}: key_names is empty; give 1-{MAX_ITEMS} keys")
    if len(keys) > MAX_ITEMS:
        raise _bad(f"{tool}: {len(keys)} keys in one call; send at most {MAX_ITEMS} per call")
    for i, k in enumerate(keys):
        if not isinstance(k, str):
            raise _bad(f"{tool}: key_names[{i}] must be a string, got {type(k).__name__}")
    return keys


def decode_value(value: str, is_b64: bool, key: str, max_bytes: int) -> str:
    """The text of a wire value (base64-decoded when flagged); InvalidRequestError if bad."""
    if not is_b64:
        return check_text(value, f"value of {key!r}", max_bytes=max_bytes)
    if len(value) > (max_bytes + 2) // 3 * 4 + 4:
        raise InvalidRequestError(
            f"value of {key!r} is over the {max_bytes}-byte limit ({len(value)} base64 characters)"
        )
    try:
        raw = base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise InvalidRequestError(f"value of {key!r} is not valid base64: {exc}") from exc
    if len(raw) > max_bytes:
        raise InvalidRequestError(
            f"value of {key!r} is {len(raw)} bytes, over the {max_bytes}-byte limit"
        )
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidRequestError(
            f"value of {key!r} decodes from base64 to bytes that are not UTF-8 text "
            f"(byte {exc.start}); the hub stores text only"
        ) from exc


async def _fit(
    entries: list[dict[str, Any]], budget: RequestBudget, *, stop_at_first: bool = False
) -> list[int | None]:
    """Each entry's reply cost when it fits in what is left of ``budget`` (taken from it),
    None when it does not (and, with ``stop_at_first``, for every entry after that).
    Large entries are measured in a thread, off the event loop."""

    def run() -> list[int | None]:
        out: list[int | None] = []
        for entry, chars in zip(entries, weights, strict=True):
            hopeless = (stop_at_first and None in out) or (
                budget.replied_values and 2 * chars > budget.reply_left  # 1 byte a char, twice
            )
            cost = None if hopeless else encoded_size(entry)
            out.append(cost if cost is not None and budget.take_reply(cost) else None)
        return out

    weights = [_text_chars(e) for e in entries]
    # 13 bytes a character at worst (\u0001 in structuredContent, \\u0001 in the text)
    # plus the fixed fields: an upper bound of encoded_size, charged when all fit anyway
    bounds = [13 * w + _FIXED_FIELDS for w in weights]
    if sum(bounds) <= budget.reply_left:
        return [cost if budget.take_reply(cost) else None for cost in bounds]
    return await asyncio.to_thread(run) if sum(weights) > _INLINE_TEXT else run()


_FIXED_FIELDS = 1024  # >= the encoded size of an entry's keys, numbers and punctuation
_TEXT_FIELDS = ("key_name", "value", "description")


def _text_chars(entry: dict[str, Any]) -> int:
    """Characters of an entry's text fields (search entries repeat the description)."""
    n = sum(len(entry.get(f) or "") for f in _TEXT_FIELDS)
    return n + len(entry["description"] or "") if "metadata" in entry else n


def _item_error(key: str, code: str, message: str) -> dict[str, Any]:
    return {"key_name": key, "status": "error", "code": code, "error": message}


# --------------------------------------------------------------------------- service


class HubService:
    """Runs tools for principals against one LocalStore."""

    def __init__(
        self,
        store: LocalStore,
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
        self, who: Principal, name: str, args: Mapping[str, Any], budget: RequestBudget | None = None
    ) -> dict[str, Any]:
        tool = self.tools.get(name)
        if tool is None:
            raise _bad(f"unknown tool {name!r}; this hub serves: {', '.join(TOOL_NAMES)}")
        return await tool(who, args, budget or RequestBudget(self.limits))

    # ------------------------------------------------------------------ helpers

    def _take_items(self, tool: str, n: int, budget: RequestBudget) -> None:
        if not budget.take_items(n):
            raise _bad(
                f"{tool}: {n} more items would take this request past its "
                f"{self.limits.max_items_per_request}-item limit (the calls of a batch count "
                "together); send them in another request"
            )

    def _canon(self, key: str) -> str:
        org, k = split_key(key, self.org)
        return public_key(org, k, self.org)

    _need_token = staticmethod(need_token)
    _forbid = staticmethod(forbid)

    def _check_pattern_readable(self, who: Principal, snap: AuthSnapshot, pattern: KeyPattern,
                                tool: str) -> None:
        if not who.anonymous:
            return
        prefix = public_key(pattern.org, pattern.literal, self.org) if pattern.literal else (
            "" if pattern.org == self.org else f"@{pattern.org}/"
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
        items = args.get("items")
        if items is None:
            raise _bad(
                f"{tool}: missing required argument items (a list of 1-{MAX_ITEMS} objects "
                "{key_name, value, description?, base64?, embed?, embed_source?})"
            )
        if not isinstance(items, list):
            raise _bad(f"{tool}: items must be a list, got {type(items).__name__}")
        if not items:
            raise _bad(f"{tool}: items is empty; give 1-{MAX_ITEMS} items")
        if len(items) > MAX_ITEMS:
            raise _bad(f"{tool}: {len(items)} items in one call; send at most {MAX_ITEMS} per call")
        self._take_items(tool, len(items), budget)
        parsed: list[tuple[str, str, str | None, bool, bool, str | None]] = []
        for i, it in enumerate(items):
            where = f"items[{i}]."
            if not isinstance(it, dict):
                raise _bad(f"{tool}: items[{i}] must be an object, got {type(it).__name__}")
            key = _req_str(it, "key_name", where, tool)
            value = _req_str(it, "value", where, tool)
            desc = _opt_str(it, "description", where)
            b64 = bool(_opt_bool(it, "base64", where))
            embed = bool(_opt_bool(it, "embed", where))
            source = _embed_source(it, where)
            parsed.append((key, value, desc, b64, embed, source))
        results: list[dict[str, Any] | None] = [None] * len(parsed)
        todo: list[tuple[int, NewMemory]] = []
        for i, (key, value, desc, b64, embed, source) in enumerate(parsed):
            try:
                canon = self._canon(key)
                text = decode_value(value, b64, key, self.store.max_value_bytes)
                description = check_text(
                    desc or "", f"description of {key!r}", max_bytes=MAX_DESCRIPTION_BYTES
                )
            except InvalidRequestError as exc:
                results[i] = _item_error(key, "invalid", str(exc))
                continue
            if not snap.may_create(who, canon):
                results[i] = _item_error(
                    key, "forbidden", f"token {who.name!r} (role {who.role}) may not create {key!r}"
                )
                continue
            todo.append(
                (
                    i,
                    NewMemory(
                        key=key,
                        value=text,
                        description=description,
                        embed=embed,
                        embed_source=cast(Any, source or "description"),
                    ),
                )
            )
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
                    results[i] = _item_error(mem.key, code, out.error or code)
            await self._index_feed(
                [self._canon(m.key) for (_, m), o in zip(todo, outcomes, strict=True) if o.ok],
                who.creator)
        final = [r for r in results if r is not None]
        created = sum(1 for r in final if r["status"] == "success")
        return {"results": final, "created": created, "failed": len(final) - created}

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
        keys = _key_list(args, "get_memory")
        self._take_items("get_memory", len(keys), budget)
        snap = await self.auth.current()
        results: list[dict[str, Any] | None] = [None] * len(keys)
        fetch: list[int] = []
        for i, key in enumerate(keys):
            try:
                canon = self._canon(key)
            except InvalidRequestError as exc:
                results[i] = _item_error(key, "invalid", str(exc))
                continue
            if not snap.may_read(who, canon):
                results[i] = _item_error(
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
                results[i] = _item_error(key, "not_found", f"key {key!r} not found")
            else:
                hits.append((i, {
                    "key_name": key,
                    "status": "success",
                    "value": item.value,
                    "description": item.description,
                    "created_at": item.created_at,
                    "updated_at": item.updated_at,
                    "embedded": item.embedded,
                    "size": item.size,
                }))
        costs = await _fit([e for _, e in hits], budget)
        for (i, entry), cost in zip(hits, costs, strict=True):
            results[i] = entry if cost is not None else _item_error(
                keys[i], "too_large",
                f"{keys[i]!r} ({entry['size']} bytes) does not fit in what is left of this "
                f"request's {self.limits.max_reply_bytes}-byte reply limit; get it in a "
                "request of its own",
            )
        return {"results": results}

    async def update_memory(
        self, who: Principal, args: Mapping[str, Any], budget: RequestBudget
    ) -> dict[str, Any]:
        tool = "update_memory"
        self._need_token(who, tool)
        key = _req_str(args, "key_name", "", tool)
        value = _req_str(args, "value", "", tool)
        self._take_items(tool, 1, budget)
        desc = _opt_str(args, "description", "")
        b64 = bool(_opt_bool(args, "base64", ""))
        embed = _opt_bool(args, "embed", "")
        source = _embed_source(args, "")
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
            raise ToolFailure("not_found", f"key {key!r} not found; create it first", key=key) from exc
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
        keys = _key_list(args, tool)
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
                results[i] = _item_error(key, "invalid", str(exc))
                continue
            allowed, owner = snap.owner_for(who, "delete", canon, self.policy)
            if not allowed:
                results[i] = _item_error(
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
                    results[i] = _item_error(keys[i], out.code, out.error or out.code)
        final = [r for r in results if r is not None]
        deleted = sum(1 for r in final if r["status"] == "success")
        return {"results": final, "deleted": deleted, "failed": len(final) - deleted}

    async def list_keys(
        self, who: Principal, args: Mapping[str, Any], budget: RequestBudget
    ) -> dict[str, Any]:
        tool = "list_keys"
        prefix = _opt_str(args, "prefix", "") or ""
        limit = min(_opt_int(args, "limit", 1, MAX_PAGE), MAX_PAGE)
        offset = _opt_int(args, "offset", 0, 0)
        try:
            pattern = parse_like(prefix, self.org)
        except InvalidRequestError as exc:
            raise _bad(f"{tool}: {exc}") from exc
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
        costs = await _fit(page, budget, stop_at_first=True)
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
        query = _req_str(args, "query", "", tool)
        if not query.strip():
            raise _bad(f"{tool}: query is empty; give the text to search for")
        try:
            check_text(query, "query", max_bytes=MAX_DESCRIPTION_BYTES)
        except InvalidRequestError as exc:
            raise _bad(f"{tool}: {exc}") from exc
        limit = min(_opt_int(args, "limit", 1, 10), MAX_PAGE)
        prefix = _opt_str(args, "prefix", "") or ""
        try:
            pattern = parse_like(prefix, self.org)
        except InvalidRequestError as exc:
            raise _bad(f"{tool}: {exc}") from exc
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
        costs = await _fit(found, budget, stop_at_first=True)
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
