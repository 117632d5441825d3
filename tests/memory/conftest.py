"""Fixtures of the memory tests: stub servers, fake sleep, the three contract backends."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from memory_stubs import FakeSleep, Handler, Stub, run_stub


@pytest.fixture
async def stub_factory() -> AsyncIterator[Callable[..., Awaitable[Stub]]]:
    """Start stub servers inside a test; all are stopped at its end."""
    async with AsyncExitStack() as stack:

        async def make(handler: Handler, **kw: Any) -> Stub:
            return await stack.enter_async_context(run_stub(handler, **kw))

        yield make


@pytest.fixture
def fake_sleep() -> FakeSleep:
    return FakeSleep()


# --------------------------------------------------------------------------- contract backends

BACKENDS = ("local", "hub", "hub-hosted-like", "postgres", "hub-postgres")
"""``hub-hosted-like``: a hub whose default org differs from the client's, so every key is
addressed as ``@autoresearch-at-home/...`` as against the hosted service. ``postgres``:
the PostgreSQL store itself; ``hub-postgres``: a hub serving a PostgreSQL database (both
on the session's PostgreSQL server, tests/pg_support.py)."""

SWARM_ORG = "autoresearch-at-home"


@asynccontextmanager
async def open_backend(kind: str, tmp: Path, pg_url: str = "") -> AsyncIterator[Any]:
    """One of the backends of the contract suite, entered, on fresh storage."""
    if kind == "postgres":
        from swarm.memory.postgres import PgStore

        async with PgStore(pg_url, org=SWARM_ORG) as store:
            yield store
        return
    if kind == "local":
        from swarm.memory.local import LocalStore

        async with LocalStore(tmp / "local.sqlite", org=SWARM_ORG) as store:
            yield store
        return
    from swarm.hub import serve_hub
    from swarm.memory.ensue import EnsueBackend

    if kind in ("hub", "hub-postgres"):
        db = pg_url if kind == "hub-postgres" else tmp / "hub.sqlite"
        async with serve_hub(db, port=0, org=SWARM_ORG) as hub:
            token = hub.add_token("contract-admin", "admin")
            async with EnsueBackend(hub.url, token, name="hub") as backend:
                yield backend
        return
    if kind == "hub-hosted-like":
        async with serve_hub(tmp / "hub.sqlite", port=0, org="someone-elses-default") as hub:
            token = hub.add_token("contract-admin", "admin")
            async with EnsueBackend(hub.url, token, org=SWARM_ORG, name="ensue") as backend:
                yield backend
        return
    raise ValueError(kind)


@pytest.fixture(params=BACKENDS)
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    """Each contract test runs once per backend."""
    pg_url = request.getfixturevalue("pg_url") if "postgres" in request.param else ""
    async with open_backend(request.param, tmp_path, pg_url) as b:
        yield b
