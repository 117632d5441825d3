"""Fixtures of the namespace tests (helpers live in ns_support)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from ns_support import BACKENDS, FakeClock, Swarm, open_swarm


@pytest.fixture(params=BACKENDS)
async def swarm(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Swarm]:
    """The store under test: the local SQLite file or the hub over real HTTP."""
    async with open_swarm(request.param, tmp_path) as s:
        yield s


@pytest.fixture
async def local_swarm(tmp_path: Path) -> AsyncIterator[Swarm]:
    """The local SQLite store only (record-level tests that do not depend on transport)."""
    async with open_swarm("local", tmp_path) as s:
        yield s


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()
