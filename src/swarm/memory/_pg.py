"""PostgreSQL plumbing shared by the PostgreSQL store and the hub's auth tables: the
lazy import of asyncpg, database URLs (checked, and shown without their password),
the schema (created under an advisory lock, so hubs starting together do not race),
and the translation of asyncpg's exceptions."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from swarm.errors import ConfigError, InvalidRequestError, MemoryStoreError

__all__ = [
    "MEMORY_SCHEMA",
    "PgUrl",
    "ensure_schema",
    "import_asyncpg",
    "is_db_url",
    "parse_db_url",
    "pg_errors",
]

_SCHEMES = ("postgresql", "postgres")
_SCHEMA_LOCK = 0x5357_524D  # advisory lock key of schema creation ("SWRM")

MEMORY_SCHEMA: tuple[str, ...] = (
    "CREATE EXTENSION IF NOT EXISTS vector",
    """CREATE TABLE IF NOT EXISTS memories (
        id           bigserial PRIMARY KEY,
        org          text COLLATE "C" NOT NULL,
        key          text COLLATE "C" NOT NULL,
        value        bytea NOT NULL,
        description  bytea NOT NULL,
        size         integer NOT NULL,
        created_at   double precision NOT NULL,
        updated_at   double precision NOT NULL,
        embed_source text,
        embedding    vector,
        creator      text,
        UNIQUE (org, key)
    )""",
    "CREATE INDEX IF NOT EXISTS memories_key_prefix ON memories (org, key text_pattern_ops)",
)
"""Values and descriptions are stored as UTF-8 bytes: text may hold NUL characters,
which a PostgreSQL ``text`` cannot."""


def is_db_url(db: object) -> bool:
    """Whether ``db`` names a database by URL (``scheme://...``) rather than a file."""
    return isinstance(db, str) and "://" in db


@dataclass(frozen=True, slots=True)
class PgUrl:
    """A checked ``postgresql://`` URL; ``shown`` is safe to log (no password)."""

    url: str
    shown: str


def parse_db_url(url: str, *, key: str = "db") -> PgUrl:
    """``url`` checked as a PostgreSQL URL; ConfigError naming the value and the fix."""
    fix = "give postgresql://USER:PASSWORD@HOST:PORT/DATABASE, or a SQLite file path"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ConfigError(
            f"{key}: {_redact(url)!r} is not a valid URL ({exc}); {fix}",
            key=key,
            value=_redact(url),
        ) from exc
    shown = _redact(url)
    if parts.scheme not in _SCHEMES:
        raise ConfigError(
            f"{key}: {shown!r} has the scheme {parts.scheme!r}; only PostgreSQL URLs "
            f"(postgresql://) or SQLite file paths are supported: {fix}",
            key=key,
            value=shown,
        )
    if not parts.path.strip("/") and "dbname=" not in parts.query:
        raise ConfigError(f"{key}: {shown!r} names no database; {fix}", key=key, value=shown)
    if port == 0:
        raise ConfigError(f"{key}: {shown!r} has port 0; {fix}", key=key, value=shown)
    return PgUrl(url, shown)


def _redact(url: str) -> str:
    """``url`` with the password replaced by ``***``."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    netloc, slash, tail = rest.partition("/")
    userinfo, at, hostport = netloc.rpartition("@")
    if at and ":" in userinfo:
        userinfo = userinfo.split(":", 1)[0] + ":***"
    shown_tail = tail
    if "password=" in tail:
        shown_tail = "&".join(
            "password=***" if p.startswith("password=") else p
            for p in tail.replace("?", "&", 1).split("&")
        ).replace("&", "?", 1)
    return f"{scheme}://{userinfo}{at}{hostport}{slash}{shown_tail}"


def import_asyncpg() -> Any:
    """The asyncpg module; ConfigError (exit 2) telling how to install it when absent."""
    try:
        import asyncpg
    except ImportError as exc:
        raise ConfigError(
            "a postgresql:// database needs the asyncpg package: pip install 'swarm[postgres]'",
            key="db",
            value="postgresql://",
        ) from exc
    return asyncpg


@contextlib.contextmanager
def pg_errors(what: str, where: str) -> Iterator[None]:
    """Translate asyncpg's and the socket's exceptions into swarm's, naming ``where``."""
    asyncpg = import_asyncpg()
    try:
        yield
    except asyncpg.DataError as exc:
        raise InvalidRequestError(f"{what}: {exc}") from exc
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
        raise MemoryStoreError(f"PostgreSQL {what} at {where} failed: {exc}") from exc


async def ensure_schema(conn: Any, statements: Sequence[str]) -> None:
    """Run ``statements`` (idempotent DDL) in one transaction under an advisory lock."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _SCHEMA_LOCK)
        for stmt in statements:
            await conn.execute(stmt)
