"""Which storage a hub runs on, chosen by its ``--db``: a SQLite file path (the default)
or a ``postgresql://`` URL (several hub processes on one database)."""

from __future__ import annotations

from pathlib import Path

from swarm.embedding import Embedder
from swarm.hub.tokens import TokenStore
from swarm.memory.local import LocalStore
from swarm.memory.store import HubStore, is_db_url, parse_db_url

__all__ = ["check_db", "open_store", "open_tokens", "shown_db"]


def check_db(db: str | Path) -> None:
    """Raise ConfigError (naming the value, without its password) for a bad URL."""
    if is_db_url(db):
        parse_db_url(str(db))


def shown_db(db: str | Path) -> str:
    """``db`` as it may be logged: a URL without its password."""
    return parse_db_url(str(db)).shown if is_db_url(db) else str(db)


def open_store(
    db: str | Path, *, org: str, embedder: Embedder | None, max_value_bytes: int
) -> HubStore:
    """The (unopened) memory store of ``db``."""
    if is_db_url(db):
        from swarm.memory.postgres import PgStore

        return PgStore(str(db), org=org, embedder=embedder, max_value_bytes=max_value_bytes)
    return LocalStore(db, org=org, embedder=embedder, max_value_bytes=max_value_bytes)


def open_tokens(db: str | Path) -> TokenStore:
    """The auth tables of ``db`` (blocking: call it in a thread from async code)."""
    if is_db_url(db):
        from swarm.hub.authdb_pg import PgAuthDb

        return TokenStore(PgAuthDb(str(db)))
    return TokenStore(db)
