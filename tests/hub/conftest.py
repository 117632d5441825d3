"""Fixtures of the hub tests: a LocalStore in a tmp dir, a running hub with tokens of
every role, and a small raw JSON-RPC client over aiohttp."""

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


@pytest.fixture
async def hub(tmp_path: Path, embedder: Embedder) -> AsyncIterator[Hub]:
    """A hub on a free port with tokens: reader (read), alice and bob (participant), root (admin)."""
    async with serve_hub(tmp_path / "hub.db", embedder=embedder) as handle:
        tokens = {
            "reader": handle.add_token("reader", "read"),
            "alice": handle.add_token("alice", "participant"),
            "bob": handle.add_token("bob", "participant"),
            "root": handle.add_token("root", "admin"),
        }
        async with aiohttp.ClientSession() as session:
            yield Hub(handle, Rpc(session, handle.url), tokens)
