"""Helpers of the namespace tests: real backends (SQLite file, hub over HTTP), fake clocks."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from swarm.namespace import SwarmMemory

SWARM_ORG = "autoresearch-at-home"
BACKENDS = ("local", "hub")


class FakeClock:
    """Epoch seconds that only move when a test says so."""

    def __init__(self, start: float = 1_760_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


async def no_sleep(_seconds: float) -> None:
    """A sleep that returns at once (mutex back-off under a fake clock)."""
    return None


def experiment(i: int, parent: str = "parent") -> tuple[str, str]:
    """(parent_hash, code_hash) of the i-th test experiment."""
    p = hashlib.sha256(parent.encode()).hexdigest()
    c = hashlib.sha256(f"experiment-{i}".encode()).hexdigest()
    return p, c


@dataclass
class Swarm:
    """A running store and a way to open more clients of it (one per 'machine')."""

    kind: str
    tmp: Path
    stack: AsyncExitStack
    url: str = ""
    hub: Any = None
    db: Path = field(default_factory=Path)

    def token(self, name: str, role: str = "participant") -> str:
        return str(self.hub.add_token(name, role)) if self.hub is not None else ""

    async def backend(self, name: str = "client") -> Any:
        """A new, entered backend client of the same store."""
        if self.kind == "local":
            from swarm.memory.local import LocalStore

            return await self.stack.enter_async_context(LocalStore(self.db, org=SWARM_ORG))
        from swarm.memory.ensue import EnsueBackend

        return await self.stack.enter_async_context(
            EnsueBackend(self.url, self.token(name), name="hub")
        )

    async def memory(self, agent_id: str, backend: Any = None, **kw: Any) -> SwarmMemory:
        b = backend if backend is not None else await self.backend(agent_id)
        kw.setdefault("embed_records", False)
        return SwarmMemory(b, agent_id=agent_id, host="test-host", **kw)


@asynccontextmanager
async def open_swarm(kind: str, tmp: Path) -> AsyncIterator[Swarm]:
    async with AsyncExitStack() as stack:
        if kind == "local":
            yield Swarm(kind, tmp, stack, db=tmp / "swarm.sqlite")
            return
        from swarm.hub import serve_hub

        hub = await stack.enter_async_context(serve_hub(tmp / "hub.sqlite", port=0, org=SWARM_ORG))
        yield Swarm(kind, tmp, stack, url=hub.url, hub=hub, db=tmp / "hub.sqlite")
