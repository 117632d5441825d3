"""The hub's org tools: ``create_invite``, ``claim_invite`` and ``share`` (admin setup).

Invites give read or participant (never admin, whatever the external group says), are
used at most ``max_uses`` times (default 1, at most 1000) within ``expires_in_s``
(default 7 days, at most 90), and stop working when revoked
(``share {"command": "revoke_invite", "invite_id": ...}``) or when the admin token that
made them is revoked.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, cast

from swarm._logging import get_logger
from swarm.errors import ConfigError, InvalidRequestError
from swarm.hub.access import AuthState
from swarm.hub.auth import ACTIONS, Action, Principal, Role, role_of_group
from swarm.hub.protocol import (
    ERR_FORBIDDEN,
    ERR_INVALID_PARAMS,
    ERR_UNAUTHORIZED,
    RpcError,
    ToolFailure,
)
from swarm.hub.tokens import INVITE_ROLES, InviteError, InviteInfo
from swarm.memory.local import parse_like

__all__ = ["OrgTools", "need_token"]

log = get_logger(__name__)

MAX_INVITE_USES = 1000
MAX_INVITE_TTL_S = 90 * 86400


def _bad(message: str) -> RpcError:
    return RpcError(ERR_INVALID_PARAMS, message)


def need_token(who: Principal, tool: str) -> None:
    """RpcError 401 for an anonymous caller of ``tool``."""
    if who.anonymous:
        raise RpcError(
            ERR_UNAUTHORIZED,
            f"{tool} needs a token: send 'Authorization: Bearer <token>'",
            http_status=401,
        )


def forbid(who: Principal, tool: str, why: str) -> RpcError:
    return RpcError(
        ERR_FORBIDDEN, f"{tool}: token {who.name!r} (role {who.role}) {why}", http_status=403
    )


def _need_admin(who: Principal, tool: str) -> None:
    need_token(who, tool)
    if who.role != "admin":
        raise forbid(who, tool, "is not an admin")


def _bounded_int(args: Mapping[str, Any], name: str, lo: int, hi: int, default: int) -> int:
    v = args.get(name)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise _bad(f"{name} must be an integer from {lo} to {hi}, got {v!r}")
    return v


def _invite_json(info: InviteInfo) -> dict[str, Any]:
    return {
        "invite_id": info.id,
        "role": info.role,
        "created_by": info.created_by,
        "created_at": info.created_at,
        "expires_at": info.expires_at,
        "max_uses": info.max_uses,
        "uses": info.uses,
        "revoked": info.revoked_at is not None,
    }


class OrgTools:
    """Invites and the ``share`` command over one AuthState."""

    def __init__(self, auth: AuthState, org: str) -> None:
        self.auth = auth
        self.org = org

    async def create_invite(self, who: Principal, args: Mapping[str, Any]) -> dict[str, Any]:
        tool = "create_invite"
        _need_admin(who, tool)
        auto = args.get("auto_approve")
        if auto is not None and not isinstance(auto, bool):
            raise _bad(f"{tool}: auto_approve must be true or false, got {auto!r}")
        role_arg = args.get("role")
        role: Role = (await self.auth.current()).external_role
        if role_arg is not None:
            if role_arg not in INVITE_ROLES:
                raise _bad(f"{tool}: role must be 'read' or 'participant', got {role_arg!r}")
            role = cast(Role, role_arg)
        max_uses = _bounded_int(args, "max_uses", 1, MAX_INVITE_USES, 1)
        ttl = _bounded_int(args, "expires_in_s", 60, MAX_INVITE_TTL_S, 7 * 86400)
        try:
            token, info = await asyncio.to_thread(
                self.auth.tokens.create_invite, role, who, max_uses=max_uses, ttl_s=float(ttl)
            )
        except InviteError as exc:
            raise ToolFailure("forbidden", str(exc)) from exc
        return {
            "token": token,
            "auto_approve": True if auto is None else auto,
            **_invite_json(info),
        }

    async def claim_invite(self, who: Principal, args: Mapping[str, Any]) -> dict[str, Any]:
        invite = args.get("token")
        if not isinstance(invite, str) or not invite:
            raise _bad("claim_invite: missing required argument token (the invite, a string)")
        try:
            role, name, new_token = await asyncio.to_thread(
                self.auth.tokens.claim_invite, invite, who
            )
        except InviteError as exc:
            raise ToolFailure("invalid", str(exc)) from exc
        self.auth.invalidate()
        out: dict[str, Any] = {"status": "success", "org": self.org, "role": role, "name": name}
        if new_token is not None:
            out["api_key"] = new_token
        return out

    def _pattern(self, cmd: Mapping[str, Any], verb: object) -> str:
        pattern = cmd.get("key_pattern")
        if not isinstance(pattern, str):
            raise _bad(f"share: {verb} needs key_pattern (a string prefix)")
        try:
            parse_like(pattern, self.org)
        except InvalidRequestError as exc:
            raise _bad(f"share: {exc}") from exc
        return pattern

    @staticmethod
    def _group(obj: Any, verb: object, what: str) -> Role:
        name = obj.get("group_name") if isinstance(obj, dict) else None
        if not isinstance(name, str):
            raise _bad(f"share: {verb} needs {what} with a group_name")
        try:
            return role_of_group(name)
        except ValueError as exc:
            raise _bad(f"share: {exc}") from exc

    async def share(
        self, who: Principal, args: Mapping[str, Any], policy: Mapping[str, list[str]]
    ) -> dict[str, Any]:
        tool = "share"
        _need_admin(who, tool)
        cmd = args.get("command")
        if not isinstance(cmd, dict):
            raise _bad(
                f"{tool}: command must be an object such as "
                '{"command": "make_public", "key_pattern": "best/"}'
            )
        verb = cmd.get("command")
        tokens = self.auth.tokens
        out: dict[str, Any] = {"status": "success", "command": verb}
        if verb in ("grant", "revoke"):
            role = self._group(cmd.get("target"), verb, "target")
            action = cmd.get("action")
            if action not in ACTIONS:
                raise _bad(f"{tool}: action must be one of {', '.join(ACTIONS)}, got {action!r}")
            pattern = self._pattern(cmd, verb)
            fn = tokens.grant if verb == "grant" else tokens.revoke_grant
            done = await asyncio.to_thread(fn, role, cast(Action, action), pattern)
            out.update(role=role, action=action, key_pattern=pattern, changed=done is not False)
        elif verb in ("make_public", "make_private"):
            pattern = self._pattern(cmd, verb)
            fn2 = tokens.make_public if verb == "make_public" else tokens.make_private
            done = await asyncio.to_thread(fn2, pattern)
            out.update(key_pattern=pattern, changed=done is not False)
        elif verb == "create_group":
            out.update(group_name=cmd["group_name"], role=self._group(cmd, verb, "group_name"))
        elif verb == "set_external_group":
            role = self._group(cmd, verb, "group_name")
            try:
                await asyncio.to_thread(tokens.set_external_role, role)
            except ConfigError as exc:
                raise ToolFailure("forbidden", str(exc)) from exc
            out.update(role=role)
        elif verb == "revoke_invite":
            invite_id = cmd.get("invite_id")
            if not isinstance(invite_id, str):
                raise _bad(
                    f"{tool}: revoke_invite needs invite_id (from create_invite or list_invites)"
                )
            out.update(
                invite_id=invite_id,
                changed=await asyncio.to_thread(tokens.revoke_invite, invite_id),
            )
        elif verb == "list_invites":
            invites = await asyncio.to_thread(tokens.list_invites)
            out.update(invites=[_invite_json(i) for i in invites])
        elif verb == "list":
            snap = await self.auth.current()
            out.update(
                public=list(snap.public),
                grants=[
                    {"role": r, "action": a, "key_pattern": p}
                    for (r, a), ps in sorted(snap.grants.items())
                    for p in ps
                ],
                policy=dict(policy),
            )
        else:
            raise _bad(
                f"{tool}: unknown command {verb!r}; use grant, revoke, make_public, make_private, "
                "create_group, set_external_group, revoke_invite, list_invites or list"
            )
        self.auth.invalidate()
        log.info("hub_share", by=who.name, command=verb)
        return out
