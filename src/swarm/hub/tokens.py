"""The hub's auth tables (``hub_*`` in its SQLite file): tokens, grants, public prefixes,
invites, settings, and a generation counter that every change bumps (by trigger, so a
change made by any process is seen by every hub on its next request).

Tokens are random strings (``swm_...``) shown once when made; only their SHA-256 is
stored (they carry 256 bits of entropy, so a fast hash is enough). Each token also gets
a random ``ident``: records are owned by ``name#ident``, so a new token issued under a
revoked name owns none of the old token's records.

Invites (``inv_...``) give a role no higher than participant, are used at most
``max_uses`` times before ``expires_at``, can be revoked by id, and stop working when the
admin token that made them is revoked.
"""

from __future__ import annotations

import builtins
import contextlib
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from swarm._logging import get_logger
from swarm.errors import ConfigError
from swarm.hub.auth import (
    NAME_RE,
    ROLES,
    Action,
    AuthSnapshot,
    Principal,
    Role,
    TokenInfo,
    hash_token,
)
from swarm.hub.authdb import AuthConn, AuthDb, SqliteAuthDb

__all__ = ["INVITE_ROLES", "InviteError", "InviteInfo", "TokenStore"]

log = get_logger(__name__)

INVITE_ROLES: tuple[Role, ...] = ("read", "participant")
DEFAULT_INVITE_TTL_S = 7 * 86400.0


class InviteError(Exception):
    """An invite that cannot be claimed (unknown, used up, expired, revoked, orphaned)."""


@dataclass(frozen=True, slots=True)
class InviteInfo:
    """An invite as listed (never its token)."""

    id: str
    role: Role
    created_by: str | None
    created_at: float
    expires_at: float
    max_uses: int
    uses: int
    revoked_at: float | None


def _identity(name: str, ident: str | None) -> str | None:
    return f"{name}#{ident}" if ident else None


class TokenStore:
    """Synchronous access to the ``hub_*`` tables (the CLI uses it directly; the hub in
    a thread). Thread-safe. ``TokenStore(path)`` keeps them in a SQLite file;
    ``TokenStore.open(db)`` takes a database URL or path (``swarm.hub.backends``)."""

    def __init__(self, path: str | Path | AuthDb, *, busy_timeout_s: float = 30.0) -> None:
        if isinstance(path, (str, Path)):
            self._db: AuthDb = SqliteAuthDb(path, busy_timeout_s=busy_timeout_s)
        else:
            self._db = path
        self.where = self._db.where

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> TokenStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _tx(self) -> contextlib.AbstractContextManager[AuthConn]:
        return self._db.tx()

    def generation_nowait(self) -> int | None:
        """The change counter read at once on the caller's thread, or None when that
        cannot be done without waiting (then call ``generation`` in a worker thread)."""
        return self._db.generation_nowait()

    def generation(self) -> int:
        """The change counter: it moves whenever any auth table changes, in any process."""
        return self._db.generation()

    # ---------------------------------------------------------------- tokens

    def add(self, name: str, role: str) -> str:
        """Create a token for ``name``; returns it (shown once, stored hashed)."""
        if not NAME_RE.match(name or ""):
            raise ConfigError(
                f"token name {name!r} must be 1-64 letters, digits, '.', '_', '@' or '-'",
                key="name",
                value=name,
            )
        if role not in ROLES:
            raise ConfigError(
                f"role {role!r} must be one of {', '.join(ROLES)}", key="role", value=role
            )
        token = "swm_" + secrets.token_urlsafe(32)
        with self._tx() as conn:
            row = conn.execute(
                "SELECT revoked_at FROM hub_tokens WHERE name = ?", (name,)
            ).fetchone()
            if row is not None and row[0] is None:
                raise ConfigError(
                    f"a token named {name!r} exists; revoke it first (hub token revoke {name})",
                    key="name",
                    value=name,
                )
            conn.execute(
                "INSERT INTO hub_tokens (name, role, token_hash, created_at, revoked_at, ident) "
                "VALUES (?, ?, ?, ?, NULL, ?) ON CONFLICT (name) DO UPDATE SET "
                "role = excluded.role, token_hash = excluded.token_hash, "
                "created_at = excluded.created_at, revoked_at = NULL, ident = excluded.ident",
                (name, role, hash_token(token), time.time(), secrets.token_hex(6)),
            )
        log.info("hub_token_added", name=name, role=role)
        return token

    def list(self) -> list[TokenInfo]:
        with self._db.read() as conn:
            rows = conn.execute(
                "SELECT name, role, created_at, revoked_at FROM hub_tokens ORDER BY name"
            ).fetchall()
        return [TokenInfo(n, cast(Role, r), c, v) for n, r, c, v in rows]

    def revoke(self, name: str) -> bool:
        """Revoke the token of ``name``; False when there is no live one."""
        with self._tx() as conn:
            cur = conn.execute(
                "UPDATE hub_tokens SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL",
                (time.time(), name),
            )
            done = cur.rowcount == 1
        if done:
            log.info("hub_token_revoked", name=name)
        return done

    # ---------------------------------------------------------------- grants, public

    def grant(self, role: Role, action: Action, pattern: str) -> None:
        with self._tx() as conn:
            conn.execute(
                "INSERT INTO hub_grants (role, action, pattern) VALUES (?, ?, ?) "
                "ON CONFLICT DO NOTHING",
                (role, action, pattern),
            )

    def revoke_grant(self, role: Role, action: Action, pattern: str) -> bool:
        with self._tx() as conn:
            cur = conn.execute(
                "DELETE FROM hub_grants WHERE role = ? AND action = ? AND pattern = ?",
                (role, action, pattern),
            )
            return cur.rowcount == 1

    def make_public(self, pattern: str) -> None:
        with self._tx() as conn:
            conn.execute(
                "INSERT INTO hub_public (pattern) VALUES (?) ON CONFLICT DO NOTHING", (pattern,)
            )

    def make_private(self, pattern: str) -> bool:
        with self._tx() as conn:
            return (
                conn.execute("DELETE FROM hub_public WHERE pattern = ?", (pattern,)).rowcount == 1
            )

    def set_external_role(self, role: Role) -> None:
        if role not in INVITE_ROLES:
            raise ConfigError(
                f"the external group may be read or participant, not {role!r}: invites never "
                "give admin",
                key="group_name",
                value=role,
            )
        with self._tx() as conn:
            conn.execute(
                "INSERT INTO hub_settings (name, value) VALUES ('external_role', ?) "
                "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                (role,),
            )

    # ---------------------------------------------------------------- invites

    def create_invite(
        self,
        role: Role,
        creator: Principal,
        *,
        max_uses: int = 1,
        ttl_s: float = DEFAULT_INVITE_TTL_S,
    ) -> tuple[str, InviteInfo]:
        """A new invite token and its listing. ``role`` must be read or participant and
        not above ``creator``'s own role."""
        if (
            role not in INVITE_ROLES
            or creator.role is None
            or creator.name is None
            or (ROLES.index(role) > ROLES.index(creator.role))
        ):
            raise InviteError(
                f"an invite may give read or participant, at most the creator's "
                f"own role ({creator.role}); not {role!r}"
            )
        token = "inv_" + secrets.token_urlsafe(24)
        now = time.time()
        info = InviteInfo(
            secrets.token_hex(6), role, creator.name, now, now + ttl_s, max_uses, 0, None
        )
        with self._tx() as conn:
            conn.execute(
                "INSERT INTO hub_invites (token_hash, role, created_at, created_by, id, max_uses, "
                "expires_at, creator_ident) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    hash_token(token),
                    role,
                    now,
                    creator.name,
                    info.id,
                    max_uses,
                    info.expires_at,
                    creator.owner,
                ),
            )
        log.info("hub_invite_created", id=info.id, role=role, by=creator.name, max_uses=max_uses)
        return token, info

    def list_invites(self) -> builtins.list[InviteInfo]:
        with self._db.read() as conn:
            rows = conn.execute(
                "SELECT id, role, created_by, created_at, expires_at, max_uses, uses, revoked_at "
                "FROM hub_invites ORDER BY created_at"
            ).fetchall()
        return [
            InviteInfo(
                i or "",
                cast(Role, r),
                by,
                c,
                e if e is not None else c + DEFAULT_INVITE_TTL_S,
                m if m is not None else 1,
                u,
                v,
            )
            for i, r, by, c, e, m, u, v in rows
        ]

    def revoke_invite(self, invite_id: str) -> bool:
        """Revoke the invite with this id; False when there is no such live invite."""
        with self._tx() as conn:
            cur = conn.execute(
                "UPDATE hub_invites SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                (time.time(), invite_id),
            )
            return cur.rowcount == 1

    def _check_invite(self, conn: AuthConn, invite: str) -> Role:
        row = conn.execute(
            "SELECT role, created_at, created_by, uses, max_uses, expires_at, revoked_at, "
            "creator_ident FROM hub_invites WHERE token_hash = ?",
            (hash_token(invite),),
        ).fetchone()
        if row is None:
            raise InviteError("unknown invite token; ask the hub's admin for one")
        role, created_at, by, uses, max_uses, expires_at, revoked_at, creator_ident = row
        if revoked_at is not None:
            raise InviteError("this invite was revoked; ask the hub's admin for a new one")
        expires = expires_at if expires_at is not None else created_at + DEFAULT_INVITE_TTL_S
        if time.time() >= expires:
            raise InviteError("this invite has expired; ask the hub's admin for a new one")
        if uses >= (max_uses if max_uses is not None else 1):
            raise InviteError("this invite was used up; ask the hub's admin for a new one")
        if role not in INVITE_ROLES:
            raise InviteError(f"this invite gives {role!r}; invites give read or participant only")
        maker = conn.execute(
            "SELECT role, ident FROM hub_tokens WHERE name = ? AND revoked_at IS NULL", (by,)
        ).fetchone()
        if (
            maker is None
            or maker[0] != "admin"
            or (creator_ident is not None and creator_ident != _identity(by, maker[1]))
        ):
            raise InviteError(
                "the admin token that made this invite was revoked; the invite no longer works"
            )
        return cast(Role, role)

    def claim_invite(self, invite: str, who: Principal) -> tuple[Role, str | None, str | None]:
        """Use an invite: upgrade ``who`` to the invite's role, or (anonymous) make a new
        token. Returns (role, name, new token or None). Raises InviteError."""
        with self._tx() as conn:
            role = self._check_invite(conn, invite)
            conn.execute(
                "UPDATE hub_invites SET uses = uses + 1 WHERE token_hash = ?", (hash_token(invite),)
            )
            if who.name is not None and who.role is not None:
                if ROLES.index(who.role) < ROLES.index(role):
                    conn.execute(
                        "UPDATE hub_tokens SET role = ? WHERE name = ? AND revoked_at IS NULL",
                        (role, who.name),
                    )
                    return role, who.name, None
                return who.role, who.name, None
            name = "invitee-" + secrets.token_hex(4)
            token = "swm_" + secrets.token_urlsafe(32)
            conn.execute(
                "INSERT INTO hub_tokens (name, role, token_hash, created_at, ident) "
                "VALUES (?, ?, ?, ?, ?)",
                (name, role, hash_token(token), time.time(), secrets.token_hex(6)),
            )
            return role, name, token

    # ---------------------------------------------------------------- snapshot

    def snapshot(self) -> AuthSnapshot:
        with self._db.read() as conn:
            gen = conn.execute("SELECT gen FROM hub_gen WHERE id = 1").fetchone()
            tokens = conn.execute(
                "SELECT token_hash, name, role, ident FROM hub_tokens WHERE revoked_at IS NULL"
            ).fetchall()
            grants = conn.execute("SELECT role, action, pattern FROM hub_grants").fetchall()
            public = conn.execute("SELECT pattern FROM hub_public ORDER BY pattern").fetchall()
            ext = conn.execute(
                "SELECT value FROM hub_settings WHERE name = 'external_role'"
            ).fetchone()
        grant_map: dict[tuple[Role, Action], list[str]] = {}
        for role, action, pattern in grants:
            grant_map.setdefault((cast(Role, role), cast(Action, action)), []).append(pattern)
        external = cast(Role, ext[0]) if ext and ext[0] in INVITE_ROLES else "participant"
        return AuthSnapshot(
            tokens={h: Principal(n, cast(Role, r), _identity(n, i)) for h, n, r, i in tokens},
            grants={k: tuple(v) for k, v in grant_map.items()},
            public=tuple(p for (p,) in public),
            external_role=external,
            loaded_at=time.monotonic(),
            generation=int(gen[0]) if gen else 0,
        )
