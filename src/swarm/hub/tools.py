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
from swarm.hub.auth import (
    ACTIONS,
    Action,
    AuthSnapshot,
    HubPolicy,
    Principal,
    Role,
    TokenStore,
    role_of_group,
)
from swarm.hub.protocol import (
    ERR_FORBIDDEN,
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

__all__ = ["AuthState", "HubService", "decode_value"]

log = get_logger(__name__)

Tool = Callable[[Principal, Mapping[str, Any]], Awaitable[dict[str, Any]]]


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


def _opt_int(args: Mapping[str, Any], name: str, lo: int, default: int) -> int:
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


def _item_error(key: str, code: str, message: str) -> dict[str, Any]:
    return {"key_name": key, "status": "error", "code": code, "error": message}


# --------------------------------------------------------------------------- auth state


class AuthState:
    """A cached AuthSnapshot, refreshed every ``refresh_s`` and on unknown tokens."""

    def __init__(
        self,
        tokens: TokenStore,
        policy: HubPolicy,
        *,
        open_access: bool = False,
        refresh_s: float = 2.0,
    ) -> None:
        self.tokens = tokens
        self.policy = policy
        self.open_access = open_access
        self.refresh_s = refresh_s
        self._snap: AuthSnapshot | None = None
        self._snap_gen = -1
        self._gen = 0  # bumped by every local change (token added, share, invite)
        self._lock = asyncio.Lock()
        self._last_forced = 0.0

    def invalidate(self) -> None:
        """Forget the snapshot: the next request reloads it."""
        self._gen += 1

    def _fresh(self, snap: AuthSnapshot | None) -> bool:
        return (
            snap is not None
            and self._snap_gen == self._gen
            and time.monotonic() - snap.loaded_at <= self.refresh_s
        )

    async def _load(self) -> AuthSnapshot:
        async with self._lock:
            while True:
                if self._snap is not None and self._fresh(self._snap):
                    return self._snap  # loaded by someone else meanwhile
                gen = self._gen
                loaded = await asyncio.to_thread(self.tokens.snapshot)
                if self.policy.public_prefixes:
                    loaded = AuthSnapshot(
                        tokens=loaded.tokens,
                        grants=loaded.grants,
                        public=tuple(
                            dict.fromkeys((*loaded.public, *self.policy.public_prefixes))
                        ),
                        external_role=loaded.external_role,
                        loaded_at=loaded.loaded_at,
                    )
                self._snap, self._snap_gen = loaded, gen
                if gen == self._gen:
                    return loaded

    async def snapshot(self) -> AuthSnapshot:
        snap = self._snap
        if snap is None or not self._fresh(snap):
            snap = await self._load()
        return snap

    async def resolve(self, token: str | None) -> Principal:
        """The principal of a bearer token; RpcError(-32001, HTTP 401) for a bad one."""
        snap = await self.snapshot()
        who = snap.principal(token)
        if who is None and time.monotonic() - self._last_forced > 0.2:
            self._last_forced = time.monotonic()
            self.invalidate()
            who = (await self.snapshot()).principal(token)
        if self.open_access:
            return Principal(who.name if who and who.name else "open-access", "admin")
        if who is None:
            raise RpcError(
                ERR_UNAUTHORIZED,
                "unknown or revoked token; ask the hub's admin for one "
                "(python -m swarm hub token add NAME --role participant)",
                http_status=401,
            )
        return who


# --------------------------------------------------------------------------- service


class HubService:
    """Runs tools for principals against one LocalStore."""

    def __init__(
        self,
        store: LocalStore,
        auth: AuthState,
        *,
        embedder: Embedder | None = None,
    ) -> None:
        self.store = store
        self.auth = auth
        self.org = store.org
        self.policy = auth.policy
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

    async def call(self, who: Principal, name: str, args: Mapping[str, Any]) -> dict[str, Any]:
        tool = self.tools.get(name)
        if tool is None:
            raise _bad(f"unknown tool {name!r}; this hub serves: {', '.join(TOOL_NAMES)}")
        return await tool(who, args)

    # ------------------------------------------------------------------ helpers

    def _canon(self, key: str) -> str:
        org, k = split_key(key, self.org)
        return public_key(org, k, self.org)

    @staticmethod
    def _need_token(who: Principal, tool: str) -> None:
        if who.anonymous:
            raise RpcError(
                ERR_UNAUTHORIZED,
                f"{tool} needs a token: send 'Authorization: Bearer <token>'",
                http_status=401,
            )

    @staticmethod
    def _forbid(who: Principal, tool: str, why: str) -> RpcError:
        return RpcError(
            ERR_FORBIDDEN, f"{tool}: token {who.name!r} (role {who.role}) {why}", http_status=403
        )

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

    async def create_memory(self, who: Principal, args: Mapping[str, Any]) -> dict[str, Any]:
        tool = "create_memory"
        self._need_token(who, tool)
        snap = await self.auth.snapshot()
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
            outcomes = await self.store.create_checked([m for _, m in todo], creator=who.name)
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
                who.name)
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

    async def get_memory(self, who: Principal, args: Mapping[str, Any]) -> dict[str, Any]:
        keys = _key_list(args, "get_memory")
        snap = await self.auth.snapshot()
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
        for i in fetch:
            key = keys[i]
            item = found.get(key)
            if item is None:
                results[i] = _item_error(key, "not_found", f"key {key!r} not found")
            else:
                results[i] = {
                    "key_name": key,
                    "status": "success",
                    "value": item.value,
                    "description": item.description,
                    "created_at": item.created_at,
                    "updated_at": item.updated_at,
                    "embedded": item.embedded,
                    "size": item.size,
                }
        return {"results": results}

    async def update_memory(self, who: Principal, args: Mapping[str, Any]) -> dict[str, Any]:
        tool = "update_memory"
        self._need_token(who, tool)
        key = _req_str(args, "key_name", "", tool)
        value = _req_str(args, "value", "", tool)
        desc = _opt_str(args, "description", "")
        b64 = bool(_opt_bool(args, "base64", ""))
        embed = _opt_bool(args, "embed", "")
        source = _embed_source(args, "")
        snap = await self.auth.snapshot()
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

    async def delete_memory(self, who: Principal, args: Mapping[str, Any]) -> dict[str, Any]:
        tool = "delete_memory"
        self._need_token(who, tool)
        keys = _key_list(args, tool)
        snap = await self.auth.snapshot()
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

    async def list_keys(self, who: Principal, args: Mapping[str, Any]) -> dict[str, Any]:
        tool = "list_keys"
        prefix = _opt_str(args, "prefix", "") or ""
        limit = min(_opt_int(args, "limit", 1, MAX_PAGE), MAX_PAGE)
        offset = _opt_int(args, "offset", 0, 0)
        try:
            pattern = parse_like(prefix, self.org)
        except InvalidRequestError as exc:
            raise _bad(f"{tool}: {exc}") from exc
        snap = await self.auth.snapshot()
        self._check_pattern_readable(who, snap, pattern, tool)
        rows = await self.store.list_page(pattern, limit=limit + 1, offset=offset)
        has_more = len(rows) > limit
        rows = rows[:limit]
        return {
            "keys": [
                {
                    "key_name": r.key,
                    "description": r.description,
                    "size": r.size,
                    "created_at": r.created_at,
                    "updated_at": r.updated_at,
                }
                for r in rows
            ],
            "count": len(rows),
            "offset": offset,
            "limit": limit,
            "has_more": has_more,
        }

    async def search_memories(self, who: Principal, args: Mapping[str, Any]) -> dict[str, Any]:
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
        snap = await self.auth.snapshot()
        self._check_pattern_readable(who, snap, pattern, tool)
        vec = (await self.embedder.aembed([query]))[0]
        hits = await self.store.search_vector(vec, limit=limit, prefix=pattern)
        return {
            "results": [
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
        }

    # ------------------------------------------------------------------ org tools

    def _need_admin(self, who: Principal, tool: str) -> None:
        self._need_token(who, tool)
        if who.role != "admin":
            raise self._forbid(who, tool, "is not an admin")

    async def create_invite(self, who: Principal, args: Mapping[str, Any]) -> dict[str, Any]:
        tool = "create_invite"
        self._need_admin(who, tool)
        auto = _opt_bool(args, "auto_approve", "")
        role_arg = _opt_str(args, "role", "")
        snap = await self.auth.snapshot()
        role: Role = snap.external_role
        if role_arg is not None:
            if role_arg not in ("read", "participant"):
                raise _bad(f"{tool}: role must be 'read' or 'participant', got {role_arg!r}")
            role = cast(Role, role_arg)
        token = await asyncio.to_thread(self.auth.tokens.create_invite, role, who.name)
        return {"token": token, "role": role, "auto_approve": True if auto is None else auto}

    async def claim_invite(self, who: Principal, args: Mapping[str, Any]) -> dict[str, Any]:
        tool = "claim_invite"
        invite = _req_str(args, "token", "", tool)
        try:
            role, name, new_token = await asyncio.to_thread(
                self.auth.tokens.claim_invite, invite, who
            )
        except KeyError as exc:
            raise ToolFailure("invalid", "unknown invite token; ask the hub's admin for one") from exc
        self.auth.invalidate()
        out: dict[str, Any] = {"status": "success", "org": self.org, "role": role, "name": name}
        if new_token is not None:
            out["api_key"] = new_token
        return out

    async def share(self, who: Principal, args: Mapping[str, Any]) -> dict[str, Any]:
        tool = "share"
        self._need_admin(who, tool)
        cmd = args.get("command")
        if not isinstance(cmd, dict):
            raise _bad(f"{tool}: command must be an object such as "
                       '{"command": "make_public", "key_pattern": "best/"}')
        verb = cmd.get("command")
        tokens = self.auth.tokens

        def pattern_arg() -> str:
            pattern = cmd.get("key_pattern")
            if not isinstance(pattern, str):
                raise _bad(f"{tool}: {verb} needs key_pattern (a string prefix)")
            try:
                parse_like(pattern, self.org)
            except InvalidRequestError as exc:
                raise _bad(f"{tool}: {exc}") from exc
            return pattern

        def group_arg(obj: Any, what: str) -> Role:
            name = obj.get("group_name") if isinstance(obj, dict) else None
            if not isinstance(name, str):
                raise _bad(f"{tool}: {verb} needs {what} with a group_name")
            try:
                return role_of_group(name)
            except ValueError as exc:
                raise _bad(f"{tool}: {exc}") from exc

        if verb in ("grant", "revoke"):
            role = group_arg(cmd.get("target"), "target")
            action = cmd.get("action")
            if action not in ACTIONS:
                raise _bad(f"{tool}: action must be one of {', '.join(ACTIONS)}, got {action!r}")
            pattern = pattern_arg()
            if verb == "grant":
                await asyncio.to_thread(tokens.grant, role, cast(Action, action), pattern)
                done = True
            else:
                done = await asyncio.to_thread(
                    tokens.revoke_grant, role, cast(Action, action), pattern
                )
            out: dict[str, Any] = {"status": "success", "command": verb, "role": role,
                                   "action": action, "key_pattern": pattern, "changed": done}
        elif verb in ("make_public", "make_private"):
            pattern = pattern_arg()
            if verb == "make_public":
                await asyncio.to_thread(tokens.make_public, pattern)
                done = True
            else:
                done = await asyncio.to_thread(tokens.make_private, pattern)
            out = {"status": "success", "command": verb, "key_pattern": pattern, "changed": done}
        elif verb == "create_group":
            role = group_arg(cmd, "group_name")
            out = {"status": "success", "command": verb, "group_name": cmd["group_name"],
                   "role": role}
        elif verb == "set_external_group":
            role = group_arg(cmd, "group_name")
            await asyncio.to_thread(tokens.set_external_role, role)
            out = {"status": "success", "command": verb, "role": role}
        elif verb == "list":
            snap = await self.auth.snapshot()
            out = {
                "status": "success",
                "command": verb,
                "public": list(snap.public),
                "grants": [
                    {"role": r, "action": a, "key_pattern": p}
                    for (r, a), ps in sorted(snap.grants.items())
                    for p in ps
                ],
                "policy": {
                    "shared_update_prefixes": list(self.policy.shared_update_prefixes),
                    "shared_delete_prefixes": list(self.policy.shared_delete_prefixes),
                },
            }
        else:
            raise _bad(
                f"{tool}: unknown command {verb!r}; use grant, revoke, make_public, make_private, "
                "create_group, set_external_group or list"
            )
        self.auth.invalidate()
        log.info("hub.share", by=who.name, command=verb)
        return out

