"""The SQL of the SQLite store: schema, and the functions that run inside one
transaction (each takes the connection of the thread that runs it)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from swarm._logging import get_logger
from swarm.memory._keys import KeyPattern, upper_bound
from swarm.memory._records import OutcomeCode
from swarm.memory._vector_index import VectorIndex
from swarm.memory._writes import EmbedPlan, VectorChange

__all__ = [
    "CHUNK",
    "ITEM_COLS",
    "SCHEMA",
    "delete_rows",
    "fetch_by_ids",
    "fetch_items",
    "insert_rows",
    "list_query",
    "sync_index",
    "trim_changes",
    "update_row",
]

log = get_logger(__name__)

CHUNK = 500  # variables per IN (...) query
_CHANGES_KEEP = 200_000  # embedding-change log entries kept for other processes

SCHEMA = """
CREATE TABLE IF NOT EXISTS memories (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    org          TEXT NOT NULL,
    key          TEXT NOT NULL,
    value        TEXT NOT NULL,
    description  TEXT NOT NULL DEFAULT '',
    size         INTEGER NOT NULL,
    created_at   REAL NOT NULL,
    updated_at   REAL NOT NULL,
    embed_source TEXT,
    embedding    BLOB,
    creator      TEXT,
    UNIQUE (org, key)
);
CREATE TABLE IF NOT EXISTS changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    rid INTEGER NOT NULL
);
CREATE TRIGGER IF NOT EXISTS memories_ins AFTER INSERT ON memories
    WHEN NEW.embedding IS NOT NULL
    BEGIN INSERT INTO changes (rid) VALUES (NEW.id); END;
CREATE TRIGGER IF NOT EXISTS memories_upd AFTER UPDATE OF embedding ON memories
    WHEN OLD.embedding IS NOT NULL OR NEW.embedding IS NOT NULL
    BEGIN INSERT INTO changes (rid) VALUES (NEW.id); END;
CREATE TRIGGER IF NOT EXISTS memories_del AFTER DELETE ON memories
    WHEN OLD.embedding IS NOT NULL
    BEGIN INSERT INTO changes (rid) VALUES (OLD.id); END;
"""

ITEM_COLS = "org, key, value, description, created_at, updated_at, embed_source, creator, size"


def trim_changes(conn: sqlite3.Connection, writes: int) -> None:
    """Every 2,000 writes, drop change-log entries other processes no longer need."""
    if writes % 2000:
        return
    try:
        conn.execute(
            "DELETE FROM changes WHERE seq < (SELECT max(seq) FROM changes) - ?",
            (_CHANGES_KEEP,),
        )
    except sqlite3.Error as exc:
        log.warning("local_store_trim_failed", error=str(exc))


def insert_rows(conn: sqlite3.Connection, rows: Sequence[tuple[Any, ...]]) -> list[bool]:
    """INSERT ... ON CONFLICT DO NOTHING per row; whether each was created."""
    out: list[bool] = []
    for row in rows:
        cur = conn.execute(
            "INSERT INTO memories (org, key, value, description, size, created_at, "
            "updated_at, embed_source, embedding, creator) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (org, key) DO NOTHING",
            row,
        )
        out.append(cur.rowcount == 1)
    return out


def delete_rows(
    conn: sqlite3.Connection,
    split: Sequence[tuple[str, str]],
    owners: Sequence[str | None],
) -> list[tuple[OutcomeCode, str | None]]:
    out: list[tuple[OutcomeCode, str | None]] = []
    for (org, key), owner in zip(split, owners, strict=True):
        row = conn.execute(
            "SELECT id, creator FROM memories WHERE org = ? AND key = ?", (org, key)
        ).fetchone()
        if row is None:
            out.append(("not_found", None))
        elif owner is not None and row[1] != owner:
            out.append(("forbidden", row[1]))
        else:
            conn.execute("DELETE FROM memories WHERE id = ?", (row[0],))
            out.append(("ok", None))
    return out


def update_row(
    conn: sqlite3.Connection,
    org: str,
    key: str,
    sets: tuple[str, int, float, str | None],
    owner: str | None,
    change: VectorChange | None,
    decide: Callable[[tuple[str | None, str, str]], EmbedPlan | None],
) -> tuple[str, Any]:
    """Read the row, check its owner, write ``sets`` (value, size, now, description) and
    the embedding ``change``. Returns (code, info): ok/row, not_found, forbidden/creator,
    or embed/plan when ``change`` is None and ``decide`` (given the row's embed_source,
    description, value) says new text must be embedded first; nothing is written then."""
    row = conn.execute(
        "SELECT creator, embed_source, description, value FROM memories WHERE org = ? AND key = ?",
        (org, key),
    ).fetchone()
    if row is None:
        return "not_found", None
    if owner is not None and row[0] != owner:
        return "forbidden", row[0]
    if change is None and (plan := decide((row[1], row[2], row[3]))) is not None:
        return "embed", plan
    sql = (
        "value = ?, size = ?, updated_at = max(created_at, ?), "
        "description = coalesce(?, description)"
    )
    args: list[Any] = list(sets)
    if change is not None:
        source, vec = change
        sql += ", embed_source = ?, embedding = ?"
        args.extend((source, None if vec is None else np.asarray(vec, np.float32).tobytes()))
    conn.execute(f"UPDATE memories SET {sql} WHERE org = ? AND key = ?", (*args, org, key))
    out = conn.execute(
        f"SELECT {ITEM_COLS} FROM memories WHERE org = ? AND key = ?", (org, key)
    ).fetchone()
    return "ok", out


def fetch_items(
    conn: sqlite3.Connection, pairs: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], tuple[Any, ...]]:
    """Rows of the given (org, key) pairs, by pair; missing pairs are absent."""
    by_org: dict[str, set[str]] = {}
    for org, key in pairs:
        by_org.setdefault(org, set()).add(key)
    found: dict[tuple[str, str], tuple[Any, ...]] = {}
    for org, key_set in by_org.items():
        ks = list(key_set)
        for i in range(0, len(ks), CHUNK):
            chunk = ks[i : i + CHUNK]
            marks = ",".join("?" * len(chunk))
            for row in conn.execute(
                f"SELECT {ITEM_COLS} FROM memories WHERE org = ? AND key IN ({marks})",
                (org, *chunk),
            ):
                found[(row[0], row[1])] = row
    return found


def fetch_by_ids(conn: sqlite3.Connection, ids: Sequence[int]) -> dict[int, tuple[Any, ...]]:
    out: dict[int, tuple[Any, ...]] = {}
    for i in range(0, len(ids), CHUNK):
        chunk = ids[i : i + CHUNK]
        marks = ",".join("?" * len(chunk))
        for row in conn.execute(
            f"SELECT id, {ITEM_COLS} FROM memories WHERE id IN ({marks})", chunk
        ):
            out[row[0]] = row[1:]
    return out


def list_query(pattern: KeyPattern, limit: int | None, offset: int) -> tuple[str, tuple[Any, ...]]:
    """The SELECT of a listing: a key range for the literal prefix; LIMIT/OFFSET in SQL
    unless wildcards follow it (then ``collect_page`` applies them)."""
    lo = pattern.literal
    hi = upper_bound(lo)
    sql = (
        "SELECT key, description, size, created_at, updated_at, creator FROM memories "
        "WHERE org = ? AND key >= ?" + (" AND key < ?" if hi is not None else "") + " ORDER BY key"
    )
    args: tuple[Any, ...] = (pattern.org, lo, hi) if hi is not None else (pattern.org, lo)
    if pattern.regex is None and limit is not None:
        sql += " LIMIT ? OFFSET ?"
        args = (*args, int(limit), int(offset))
    elif pattern.regex is None and offset:
        sql += " LIMIT -1 OFFSET ?"
        args = (*args, int(offset))
    return sql, args


def sync_index(conn: sqlite3.Connection, idx: VectorIndex, path: str) -> None:
    """Bring ``idx`` up to date with the file (the caller holds the index lock)."""
    conn.execute("BEGIN")
    try:
        row = conn.execute(
            "SELECT (SELECT min(seq) FROM changes), (SELECT max(seq) FROM changes)"
        ).fetchone()
        lo_seq, hi_seq = row[0], row[1] if row[1] is not None else 0
        if idx.last_seq == hi_seq:
            return
        stale = (
            idx.last_seq < 0
            or hi_seq < idx.last_seq  # the file was replaced
            or (lo_seq is not None and lo_seq > idx.last_seq + 1)  # log trimmed past us
            or hi_seq - idx.last_seq > max(10_000, idx.size)
        )
        if stale:
            rows = conn.execute(
                "SELECT id, org || char(0) || key, embedding FROM memories "
                "WHERE embedding IS NOT NULL ORDER BY org, key"
            ).fetchall()
            idx.reset(rows, hi_seq)
            log.debug("index_reloaded", path=path, vectors=idx.size, seq=hi_seq)
            return
        changed = conn.execute(
            "SELECT c.rid, max(c.seq), m.org || char(0) || m.key, m.embedding "
            "FROM changes c LEFT JOIN memories m ON m.id = c.rid "
            "WHERE c.seq > ? AND c.seq <= ? GROUP BY c.rid",
            (idx.last_seq, hi_seq),
        ).fetchall()
        for rid, _seq, name, blob in changed:
            if blob is None:
                idx.remove(rid)
            else:
                idx.upsert(rid, name, blob)
        idx.last_seq = hi_seq
        idx.maybe_compact()
    finally:
        if conn.in_transaction:
            conn.execute("COMMIT")
