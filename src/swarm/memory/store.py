"""What a server needs from a store (the hub's side of :mod:`swarm.memory`).

The hub serves any :class:`HubStore` (:class:`swarm.memory.local.LocalStore` on SQLite,
:class:`swarm.memory.postgres.PgStore` on PostgreSQL) and checks what clients send with the
same rules the stores apply: key and prefix syntax, text limits, org-qualified keys.
"""

from __future__ import annotations

from swarm.memory._keys import (
    MAX_DESCRIPTION_BYTES,
    KeyPattern,
    check_text,
    parse_like,
    public_key,
    split_key,
)
from swarm.memory._pg import ensure_schema, import_asyncpg, is_db_url, parse_db_url, pg_errors
from swarm.memory._records import StoredItem
from swarm.memory._store import HubStore

__all__ = [
    "MAX_DESCRIPTION_BYTES",
    "HubStore",
    "KeyPattern",
    "StoredItem",
    "check_text",
    "ensure_schema",
    "import_asyncpg",
    "is_db_url",
    "parse_db_url",
    "parse_like",
    "pg_errors",
    "public_key",
    "split_key",
]
