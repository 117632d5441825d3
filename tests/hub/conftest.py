"""Fixtures of the hub tests: a LocalStore in a tmp dir, a running hub with tokens of
every role (on SQLite and on PostgreSQL), and a small raw JSON-RPC client over aiohttp."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from hub_helpers import Hub, Rpc

from swarm.embedding import Embedder, get_embedder
from swarm.hub import serve_hub
from swarm.memory.local import LocalStore


@pytest.fixture(scope="session")
def embedder() -> Embedder:
    """The real all-MiniLM-L6-v2 embedder, shared by the session."""
    return get_embedder()


@pytest.fixture
async def store(tmp_path: Path, embedder: Embedder) -> AsyncIterator[LocalStore]:
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
