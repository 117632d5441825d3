"""Fixtures of the hub tests: a store and a running hub with tokens of every role, each
on a SQLite file and on a PostgreSQL database, and a small raw JSON-RPC client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from hub_helpers import Hub, Rpc

from swarm.embedding import Embedder, get_embedder
from swarm.hub import serve_hub
from swarm.memory.local import LocalStore
from swarm.memory.postgres import PgStore


@pytest.fixture(scope="session")
def embedder() -> Embedder:
    """The real all-MiniLM-L6-v2 embedder, shared by the session."""
    return get_embedder()


@pytest.fixture(params=("sqlite", "postgres"))
async def store(
    request: pytest.FixtureRequest, tmp_path: Path, embedder: Embedder
) -> AsyncIterator[Any]:
    """A store on a fresh SQLite file, and on a fresh PostgreSQL database."""
    if request.param == "postgres":
        async with PgStore(request.getfixturevalue("pg_url"), embedder=embedder) as pg:
            yield pg
        return
    async with LocalStore(tmp_path / "store.db", embedder=embedder) as s:
        yield s


HUB_DBS = ("sqlite", "postgres")


@pytest.fixture(params=HUB_DBS)
async def hub(
    request: pytest.FixtureRequest, tmp_path: Path, embedder: Embedder
) -> AsyncIterator[Hub]:
    """A hub on a free port with tokens: reader (read), alice and bob (participant), root
    (admin); once on a SQLite file and once on a PostgreSQL database."""
    db = request.getfixturevalue("pg_url") if request.param == "postgres" else tmp_path / "hub.db"
    async with serve_hub(db, embedder=embedder) as handle:
        tokens = {
            "reader": handle.add_token("reader", "read"),
            "alice": handle.add_token("alice", "participant"),
            "bob": handle.add_token("bob", "participant"),
            "root": handle.add_token("root", "admin"),
        }
        async with aiohttp.ClientSession() as session:
            yield Hub(handle, Rpc(session, handle.url), tokens, db)
