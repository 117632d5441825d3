"""The SQL of the PostgreSQL store, and the row conversions around it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from swarm.memory._keys import KeyPattern, public_key, upper_bound
from swarm.memory._records import StoredItem
from swarm.memory._types import NewMemory
from swarm.memory._writes import EmbedPlan, VectorChange

__all__ = [
    "DELETE",
    "GET",
    "INSERT",
    "UPDATE_PLAIN",
    "UpdateSets",
    "create_columns",
    "item",
    "list_query",
    "list_row",
    "search_query",
    "update_locked",
    "vector_text",
]

_COLS = "org, key, value, description, created_at, updated_at, embed_source, creator, size"

GET = (
    f"SELECT {_COLS} FROM memories m "
    "JOIN unnest($1::text[], $2::text[]) AS w(org, key) USING (org, key)"
)

INSERT = (
    "INSERT INTO memories (org, key, value, description, size, created_at, updated_at, "
    "embed_source, embedding, creator) "
    "SELECT r.org, r.key, r.value, r.description, octet_length(r.value), $7, $7, r.src, "
    "r.vec::vector, $8 "
    "FROM unnest($1::text[], $2::text[], $3::bytea[], $4::bytea[], $5::text[], $6::text[]) "
    "WITH ORDINALITY AS r(org, key, value, description, src, vec, n) ORDER BY r.n "
    "ON CONFLICT (org, key) DO NOTHING RETURNING org, key"
)

_SETS = (
    "value = $3::bytea, size = octet_length($3::bytea), "
    "updated_at = greatest(created_at, $5::float8), description = coalesce($4::bytea, description)"
)

UPDATE_PLAIN = (
    f"UPDATE memories SET {_SETS} WHERE org = $1 AND key = $2 AND embed_source IS NULL "
    f"AND ($6::text IS NULL OR creator = $6) RETURNING {_COLS}"
)
"""The one-statement update of a record without embedding (no row: not found, not
the owner's, or embedded; the caller then takes the locked path)."""

_UPDATE_KEEP = f"UPDATE memories SET {_SETS} WHERE org = $1 AND key = $2 RETURNING {_COLS}"
_UPDATE_VEC = (
    f"UPDATE memories SET {_SETS}, embed_source = $6, embedding = $7::vector "
    f"WHERE org = $1 AND key = $2 RETURNING {_COLS}"
)

DELETE = (
    "WITH req AS (SELECT * FROM unnest($1::text[], $2::text[], $3::text[]) AS r(org, key, owner)), "
    "del AS (DELETE FROM memories m USING req WHERE m.org = req.org AND m.key = req.key "
    "AND (req.owner IS NULL OR m.creator = req.owner) RETURNING m.org, m.key) "
    "SELECT org, key, NULL::text AS creator, false AS found FROM del "
    "UNION ALL SELECT DISTINCT m.org, m.key, m.creator, true FROM memories m "
    "JOIN req ON m.org = req.org AND m.key = req.key "
    "WHERE (m.org, m.key) NOT IN (SELECT org, key FROM del)"
)
"""Rows deleted (``found`` false) and rows kept because their creator differs (``found``
true, with the creator); a key in neither was not there."""


def _text(raw: bytes | None) -> str:
    return "" if raw is None else bytes(raw).decode("utf-8", "surrogatepass")


def item(row: Any, default_org: str) -> StoredItem:
    return StoredItem(
        key=public_key(row["org"], row["key"], default_org),
        value=_text(row["value"]),
        description=_text(row["description"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        embedded=row["embed_source"] is not None,
        embed_source=row["embed_source"],
        creator=row["creator"],
        size=row["size"],
    )


def vector_text(vec: np.ndarray) -> str:
    """pgvector's text form of a float32 vector (exact: each float32 printed in full)."""
    return "[" + ",".join(map(str, np.asarray(vec, dtype=np.float32).tolist())) + "]"


def _utf8(text: str) -> bytes:
    return text.encode("utf-8")


def create_columns(
    split: Sequence[tuple[str, str]],
    items: Sequence[NewMemory],
    vecs: Sequence[np.ndarray | None],
    sources: Sequence[str | None],
) -> tuple[list[Any], ...]:
    """The six arrays INSERT unnests."""
    return (
        [o for o, _ in split],
        [k for _, k in split],
        [_utf8(it.value) for it in items],
        [_utf8(it.description) for it in items],
        list(sources),
        [None if v is None else vector_text(v) for v in vecs],
    )


@dataclass(frozen=True, slots=True)
class UpdateSets:
    """What every update writes: the value, the description (None: kept), the time."""

    value: str
    description: str | None
    now: float

    def args(self) -> tuple[bytes, bytes | None, float]:
        desc = None if self.description is None else _utf8(self.description)
        return _utf8(self.value), desc, self.now


async def update_locked(
    conn: Any,
    org: str,
    key: str,
    sets: UpdateSets,
    owner: str | None,
    change: VectorChange | None,
    decide: Callable[[tuple[str | None, str, str]], EmbedPlan | None],
) -> tuple[str, Any]:
    """The update in one transaction with the row locked; returns (code, info) as the
    SQLite store's ``update_row`` does."""
    async with conn.transaction():
        row = await conn.fetchrow(
            "SELECT creator, embed_source, description, value FROM memories "
            "WHERE org = $1 AND key = $2 FOR UPDATE",
            org,
            key,
        )
        if row is None:
            return "not_found", None
        if owner is not None and row["creator"] != owner:
            return "forbidden", row["creator"]
        current = (row["embed_source"], _text(row["description"]), _text(row["value"]))
        if change is None and (plan := decide(current)) is not None:
            return "embed", plan
        if change is None:
            out = await conn.fetchrow(_UPDATE_KEEP, org, key, *sets.args())
        else:
            source, vec = change
            text = None if vec is None else vector_text(vec)
            out = await conn.fetchrow(_UPDATE_VEC, org, key, *sets.args(), source, text)
        return "ok", out


def _like_literal(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _prefix_where(pattern: KeyPattern, first: int) -> tuple[str, list[Any]]:
    """``org = $n AND key LIKE 'literal%'`` plus the key range that bounds it (so a
    generic prepared plan uses the index too)."""
    n = first
    where = f"org = ${n} AND key LIKE ${n + 1} ESCAPE '\\' AND key >= ${n + 2}"
    args: list[Any] = [pattern.org, _like_literal(pattern.literal) + "%", pattern.literal]
    hi = upper_bound(pattern.literal)
    if hi is not None:
        where += f" AND key < ${n + 3}"
        args.append(hi)
    return where, args


def list_query(pattern: KeyPattern, limit: int | None, offset: int) -> tuple[str, list[Any]]:
    """The SELECT of a listing; LIMIT/OFFSET in SQL unless wildcards follow the literal."""
    where, args = _prefix_where(pattern, 1)
    query = (
        "SELECT key, description, size, created_at, updated_at, creator FROM memories "
        f"WHERE {where} ORDER BY key"
    )
    if pattern.regex is None and limit is not None:
        query += f" LIMIT ${len(args) + 1} OFFSET ${len(args) + 2}"
        args += [int(limit), int(offset)]
    elif pattern.regex is None and offset:
        query += f" OFFSET ${len(args) + 1}"
        args.append(int(offset))
    return query, args


def list_row(row: Any) -> tuple[str, str, int, float, float, str | None]:
    return (row[0], _text(row[1]), row[2], row[3], row[4], row[5])


def search_query(pattern: KeyPattern, vec: str, dim: int, limit: int) -> tuple[str, list[Any]]:
    """Embedded rows under ``pattern`` by descending inner product with ``vec``."""
    where, args = _prefix_where(pattern, 3)
    query = (
        f"SELECT {_COLS}, -(embedding <#> $1::vector) AS score FROM memories "
        f"WHERE embedding IS NOT NULL AND vector_dims(embedding) = $2 AND {where} "
        "ORDER BY embedding <#> $1::vector, key"
    )
    args = [vec, dim, *args]
    if pattern.regex is None:
        query += f" LIMIT ${len(args) + 1}"
        args.append(int(limit))
    return query, args
