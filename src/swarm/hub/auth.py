"""Who may do what on the hub: bearer tokens, roles, per-prefix grants, public prefixes.

Tokens are random strings (``swm_...``) shown once when made; only their SHA-256 is
stored (they carry 256 bits of entropy, so a fast hash is enough). Each token has a
name (recorded as the creator of what it writes) and a role:

``read``         reads everything; writes only where a grant allows it
``participant``  reads everything and creates anything; updates and deletes its own
                 records, plus any record under the policy's shared prefixes
                 (default: updates under ``best/``, ``leaderboard``, ``claims/``,
                 ``hypotheses/``; deletes under ``claims/``, so that a dead claim can
                 be taken over) and under grants added with the ``share`` tool
``admin``        everything, including ``share`` and ``create_invite``

Requests without a token may read only keys under a public prefix (``--public-prefix``
or ``share {"command": "make_public", "key_pattern": ...}``). A token that is unknown
or revoked is refused outright (HTTP 401).

Everything is kept in SQLite tables (``hub_*``) of the hub's database file, so the CLI
(``python -m swarm hub token add``) and a running hub share them; the hub re-reads them
every couple of seconds, and at once when it meets a token it does not know.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, cast

from swarm._logging import get_logger
from swarm.errors import ConfigError, MemoryStoreError

__all__ = [
    "ACTIONS",
    "ANONYMOUS",
    "ROLES",
    "Action",
    "AuthSnapshot",
    "HubPolicy",
    "Principal",
    "Role",
    "TokenInfo",
    "TokenStore",
    "hash_token",
]

log = get_logger(__name__)

Role = Literal["read", "participant", "admin"]
Action = Literal["read", "create", "update", "delete"]
ROLES: tuple[Role, ...] = ("read", "participant", "admin")
ACTIONS: tuple[Action, ...] = ("read", "create", "update", "delete")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}\Z")
_GROUP_ALIASES: dict[str, Role] = {
    "read": "read",
    "reader": "read",
    "readers": "read",
    "participant": "participant",
    "participants": "participant",
    "admin": "admin",
    "admins": "admin",
}

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS hub_tokens (
        name TEXT PRIMARY KEY,
        role TEXT NOT NULL,
        token_hash TEXT NOT NULL UNIQUE,
        created_at REAL NOT NULL,
        revoked_at REAL
    )""",
    """CREATE TABLE IF NOT EXISTS hub_grants (
        role TEXT NOT NULL, action TEXT NOT NULL, pattern TEXT NOT NULL,
        PRIMARY KEY (role, action, pattern)
    )""",
    "CREATE TABLE IF NOT EXISTS hub_public (pattern TEXT PRIMARY KEY)",
    """CREATE TABLE IF NOT EXISTS hub_invites (
        token_hash TEXT PRIMARY KEY, role TEXT NOT NULL, created_at REAL NOT NULL,
        created_by TEXT, uses INTEGER NOT NULL DEFAULT 0
    )""",
    "CREATE TABLE IF NOT EXISTS hub_settings (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
)


def hash_token(token: str) -> str:
    """The stored form of a token."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def role_of_group(group: str) -> Role:
    """The role a share-tool group name stands for (the hub's groups are its roles)."""
    role = _GROUP_ALIASES.get(group.strip().lower())
    if role is None:
        raise ValueError(
            f"unknown group {group!r}: this hub's groups are its roles: read, participant, admin"
        )
    return role


@dataclass(frozen=True, slots=True)
class Principal:
    """Who made a request. ``role`` None means anonymous."""

    name: str | None
    role: Role | None

    @property
    def anonymous(self) -> bool:
        return self.role is None


ANONYMOUS = Principal(None, None)


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """A token as listed (never the token itself)."""

    name: str
    role: Role
    created_at: float
    revoked_at: float | None


@dataclass(frozen=True, slots=True)
class HubPolicy:
    """Shared prefixes participants may update/delete whoever created the record."""

    shared_update_prefixes: tuple[str, ...] = ("best/", "leaderboard", "claims/", "hypotheses/")
    shared_delete_prefixes: tuple[str, ...] = ("claims/", "locks/mutex/", "best/pending/")
    public_prefixes: tuple[str, ...] = ()


def _under(key: str, patterns: Iterable[str]) -> bool:
    return any(key.startswith(p) for p in patterns)


@dataclass(frozen=True, slots=True)
class AuthSnapshot:
    """An immutable view of tokens, grants and public prefixes at one moment."""

    tokens: dict[str, Principal] = field(default_factory=dict)  # token hash -> principal
    grants: dict[tuple[Role, Action], tuple[str, ...]] = field(default_factory=dict)
    public: tuple[str, ...] = ()
    external_role: Role = "participant"
    loaded_at: float = 0.0

    def principal(self, token: str | None) -> Principal | None:
        """The principal of ``token``: ANONYMOUS for None, None for an unknown token."""
        if token is None:
            return ANONYMOUS
        return self.tokens.get(hash_token(token))

    def is_public(self, key: str) -> bool:
        return _under(key, self.public)

    def prefix_is_public(self, prefix: str) -> bool:
        """Whether everything under ``prefix`` is public."""
        return _under(prefix, self.public)

    def granted(self, role: Role, action: Action, key: str) -> bool:
        return _under(key, self.grants.get((role, action), ()))

    def has_any_grant(self, role: Role, action: Action) -> bool:
        return bool(self.grants.get((role, action)))

    def may_read(self, who: Principal, key: str) -> bool:
        return who.role is not None or self.is_public(key)

    def may_create(self, who: Principal, key: str) -> bool:
        if who.role in ("admin", "participant"):
            return True
        return who.role == "read" and self.granted("read", "create", key)

    def owner_for(
        self, who: Principal, action: Literal["update", "delete"], key: str, policy: HubPolicy
    ) -> tuple[bool, str | None]:
        """(allowed at all, creator the record must have or None for any)."""
        if who.role == "admin":
            return True, None
        if who.role is None:
            return False, None
        shared = policy.shared_update_prefixes if action == "update" else policy.shared_delete_prefixes
        if (who.role == "participant" and _under(key, shared)) or self.granted(who.role, action, key):
            return True, None
        if who.role == "participant":
            return True, who.name
        return False, None


class TokenStore:
    """Synchronous access to the ``hub_*`` tables (the CLI uses it directly; the hub in
    a thread). Thread-safe: one connection guarded by a lock."""

    def __init__(self, path: str | Path, *, busy_timeout_s: float = 30.0) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(
                str(self.path), timeout=busy_timeout_s, isolation_level=None, check_same_thread=False
            )
            self._conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
            self._conn.execute("PRAGMA journal_mode = WAL")
            with self._tx():
                for stmt in _SCHEMA:
                    self._conn.execute(stmt)
        except (sqlite3.Error, OSError) as exc:
            raise MemoryStoreError(f"cannot open the hub's auth tables in {self.path}: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> TokenStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    class _Tx:
        def __init__(self, store: TokenStore) -> None:
            self.store = store

        def __enter__(self) -> sqlite3.Connection:
            self.store._lock.acquire()
            try:
                self.store._conn.execute("BEGIN IMMEDIATE")
            except BaseException:
                self.store._lock.release()
                raise
            return self.store._conn

        def __exit__(self, exc_type: object, *rest: object) -> None:
            conn = self.store._conn
            try:
                conn.execute("COMMIT" if exc_type is None else "ROLLBACK")
            finally:
                self.store._lock.release()

    def _tx(self) -> TokenStore._Tx:
        return TokenStore._Tx(self)

    # ---------------------------------------------------------------- tokens

    def add(self, name: str, role: str) -> str:
        """Create a token for ``name``; returns it (shown once, stored hashed)."""
        if not _NAME.match(name or ""):
            raise ConfigError(
                f"token name {name!r} must be 1-64 letters, digits, '.', '_', '@' or '-'",
                key="name",
                value=name,
            )
        if role not in ROLES:
            raise ConfigError(f"role {role!r} must be one of {', '.join(ROLES)}", key="role", value=role)
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
                "INSERT OR REPLACE INTO hub_tokens (name, role, token_hash, created_at, revoked_at) "
                "VALUES (?, ?, ?, ?, NULL)",
                (name, role, hash_token(token), time.time()),
            )
        log.info("hub.token_added", name=name, role=role)
        return token

    def list(self) -> list[TokenInfo]:
        with self._lock:
            rows = self._conn.execute(
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
            log.info("hub.token_revoked", name=name)
        return done

    def set_role(self, name: str, role: Role) -> None:
        with self._tx() as conn:
            conn.execute("UPDATE hub_tokens SET role = ? WHERE name = ?", (role, name))

    # ---------------------------------------------------------------- grants, public

    def grant(self, role: Role, action: Action, pattern: str) -> None:
        with self._tx() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO hub_grants (role, action, pattern) VALUES (?, ?, ?)",
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
            conn.execute("INSERT OR IGNORE INTO hub_public (pattern) VALUES (?)", (pattern,))

    def make_private(self, pattern: str) -> bool:
        with self._tx() as conn:
            return conn.execute("DELETE FROM hub_public WHERE pattern = ?", (pattern,)).rowcount == 1

    def set_external_role(self, role: Role) -> None:
        with self._tx() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO hub_settings (name, value) VALUES ('external_role', ?)",
                (role,),
            )

    # ---------------------------------------------------------------- invites

    def create_invite(self, role: Role, created_by: str | None) -> str:
        token = "inv_" + secrets.token_urlsafe(24)
        with self._tx() as conn:
            conn.execute(
                "INSERT INTO hub_invites (token_hash, role, created_at, created_by) VALUES (?, ?, ?, ?)",
                (hash_token(token), role, time.time(), created_by),
            )
        return token

    def claim_invite(self, invite: str, who: Principal) -> tuple[Role, str | None, str | None]:
        """Use an invite: upgrade ``who`` to the invite's role, or (anonymous) make a new
        token. Returns (role, name, new token or None). Raises KeyError for a bad invite."""
        with self._tx() as conn:
            row = conn.execute(
                "SELECT role FROM hub_invites WHERE token_hash = ?", (hash_token(invite),)
            ).fetchone()
            if row is None:
                raise KeyError("unknown invite token")
            role = cast(Role, row[0])
            conn.execute(
                "UPDATE hub_invites SET uses = uses + 1 WHERE token_hash = ?", (hash_token(invite),)
            )
            if who.name is not None and who.role is not None:
                if ROLES.index(who.role) < ROLES.index(role):
                    conn.execute("UPDATE hub_tokens SET role = ? WHERE name = ?", (role, who.name))
                    return role, who.name, None
                return who.role, who.name, None
            name = "invitee-" + secrets.token_hex(4)
            token = "swm_" + secrets.token_urlsafe(32)
            conn.execute(
                "INSERT INTO hub_tokens (name, role, token_hash, created_at) VALUES (?, ?, ?, ?)",
                (name, role, hash_token(token), time.time()),
            )
            return role, name, token

    # ---------------------------------------------------------------- snapshot

    def snapshot(self) -> AuthSnapshot:
        with self._lock:
            conn = self._conn
            conn.execute("BEGIN")
            try:
                tokens = conn.execute(
                    "SELECT token_hash, name, role FROM hub_tokens WHERE revoked_at IS NULL"
                ).fetchall()
                grants = conn.execute("SELECT role, action, pattern FROM hub_grants").fetchall()
                public = conn.execute("SELECT pattern FROM hub_public ORDER BY pattern").fetchall()
                ext = conn.execute(
                    "SELECT value FROM hub_settings WHERE name = 'external_role'"
                ).fetchone()
            finally:
                conn.execute("COMMIT")
        grant_map: dict[tuple[Role, Action], list[str]] = {}
        for role, action, pattern in grants:
            grant_map.setdefault((cast(Role, role), cast(Action, action)), []).append(pattern)
        return AuthSnapshot(
            tokens={h: Principal(n, cast(Role, r)) for h, n, r in tokens},
            grants={k: tuple(v) for k, v in grant_map.items()},
            public=tuple(p for (p,) in public),
            external_role=cast(Role, ext[0]) if ext else "participant",
            loaded_at=time.monotonic(),
        )
