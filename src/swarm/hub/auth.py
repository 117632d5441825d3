"""Who may do what on the hub: bearer tokens, roles, per-prefix grants, public prefixes.

Tokens are random strings (``swm_...``) shown once when made; only their SHA-256 is
stored (they carry 256 bits of entropy, so a fast hash is enough). Each token has a
name (recorded as the creator of what it writes) and a role:

``read``         reads everything; writes only where a grant allows it
``participant``  reads everything and creates in the hub's org (another org only by
                 grant); updates and deletes its own records (those made with this
                 very token: a new token under a revoked name owns nothing), plus
                 any record under the policy's shared prefixes (default: updates
                 under ``best/``, ``leaderboard``, ``leaderboard/``, ``claims/``,
                 ``hypotheses/``; deletes under ``claims/``, ``locks/mutex/`` and
                 ``best/pending/``, so that a dead worker's claim, mutex or pending
                 improvement can be taken over) and under grants added with ``share``
``admin``        everything, including ``share`` and ``create_invite``

Requests without a token may read only keys under a public prefix (``--public-prefix``
or ``share {"command": "make_public", "key_pattern": ...}``). A token that is unknown
or revoked is refused outright (HTTP 401).

Everything is kept in SQLite tables (``hub_*``) of the hub's database file, so the CLI
(``python -m swarm hub token add``) and a running hub share them (``swarm.hub.tokens``).
Every change bumps a generation counter; each request checks it, so a revoke is in
force for the next request in every hub process.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from swarm.errors import ConfigError

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
    "hash_token",
    "role_of_group",
]

Role = Literal["read", "participant", "admin"]
Action = Literal["read", "create", "update", "delete"]
ROLES: tuple[Role, ...] = ("read", "participant", "admin")
ACTIONS: tuple[Action, ...] = ("read", "create", "update", "delete")
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}\Z")
_GROUP_ALIASES: dict[str, Role] = {
    "read": "read",
    "reader": "read",
    "readers": "read",
    "participant": "participant",
    "participants": "participant",
    "admin": "admin",
    "admins": "admin",
}


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
    """Who made a request. ``role`` None means anonymous. ``owner`` is the identity its
    records are stored under: the token's own (``name#id``), so that a later token under
    the same name does not own them; None falls back to ``name``."""

    name: str | None
    role: Role | None
    owner: str | None = None

    @property
    def anonymous(self) -> bool:
        return self.role is None

    @property
    def creator(self) -> str | None:
        """What is recorded as the creator of what this principal writes."""
        return self.owner or self.name


ANONYMOUS = Principal(None, None)


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """A token as listed (never the token itself)."""

    name: str
    role: Role
    created_at: float
    revoked_at: float | None


DEFAULT_SHARED_UPDATE: tuple[str, ...] = (
    "best/",
    "leaderboard",
    "leaderboard/",
    "claims/",
    "hypotheses/",
)
DEFAULT_SHARED_DELETE: tuple[str, ...] = ("claims/", "locks/mutex/", "best/pending/")


@dataclass(frozen=True, slots=True)
class HubPolicy:
    """Shared prefixes participants may update/delete whoever created the record.

    An entry ending in ``/`` covers every key under it; any other entry is one exact key
    (``leaderboard`` covers ``leaderboard``, not ``leaderboards-of-mine``).
    """

    shared_update_prefixes: tuple[str, ...] = DEFAULT_SHARED_UPDATE
    shared_delete_prefixes: tuple[str, ...] = DEFAULT_SHARED_DELETE
    public_prefixes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for what in ("shared_update_prefixes", "shared_delete_prefixes"):
            for p in getattr(self, what):
                if not p or p.startswith("@") or p == "/":
                    raise ConfigError(
                        f"{what}: {p!r} is not a key prefix of this hub's org; give a prefix "
                        "ending in '/' (such as 'claims/') or one exact key",
                        key=what,
                        value=p,
                    )

    def shared(self, action: Literal["update", "delete"], key: str) -> bool:
        """Whether ``key`` (of the hub's org) is shared for ``action``."""
        entries = self.shared_update_prefixes if action == "update" else self.shared_delete_prefixes
        return any(key.startswith(p) if p.endswith("/") else key == p for p in entries)


def _under(key: str, patterns: Iterable[str]) -> bool:
    return any(key.startswith(p) for p in patterns)


def _foreign(key: str) -> bool:
    """Whether a canonical key belongs to another org than the hub's (``@org/...``)."""
    return key.startswith("@")


@dataclass(frozen=True, slots=True)
class AuthSnapshot:
    """An immutable view of tokens, grants and public prefixes at one moment."""

    tokens: dict[str, Principal] = field(default_factory=dict)  # token hash -> principal
    grants: dict[tuple[Role, Action], tuple[str, ...]] = field(default_factory=dict)
    public: tuple[str, ...] = ()
    external_role: Role = "participant"
    loaded_at: float = 0.0
    generation: int = -1  # the auth tables' change counter when this was read

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
        """Admins anywhere; participants in the hub's org (elsewhere by grant); readers
        by grant."""
        if who.role == "admin":
            return True
        if who.role == "participant" and not _foreign(key):
            return True
        return who.role is not None and self.granted(who.role, "create", key)

    def owner_for(
        self, who: Principal, action: Literal["update", "delete"], key: str, policy: HubPolicy
    ) -> tuple[bool, str | None]:
        """(allowed at all, creator the record must have or None for any)."""
        if who.role == "admin":
            return True, None
        if who.role is None:
            return False, None
        if self.granted(who.role, action, key):
            return True, None
        if who.role != "participant" or _foreign(key):
            return False, None
        if policy.shared(action, key):
            return True, None
        return True, who.creator
