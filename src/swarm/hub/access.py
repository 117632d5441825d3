"""The hub's view of its auth tables: a cached AuthSnapshot, checked for freshness on
every request.

Each request reads the tables' generation counter (one tiny SQLite read in a thread,
shared by all requests that arrive in the same event-loop tick, and started after they
arrived) and reloads the snapshot when it moved. So a ``token revoke`` that has returned
is in force for the next request in every hub process using the file.
"""

from __future__ import annotations

import asyncio

from swarm.hub.auth import AuthSnapshot, HubPolicy, Principal
from swarm.hub.protocol import ERR_UNAUTHORIZED, RpcError
from swarm.hub.tokens import TokenStore

__all__ = ["AuthState"]


class AuthState:
    """The current AuthSnapshot of ``tokens`` under ``policy``."""

    def __init__(self, tokens: TokenStore, policy: HubPolicy, *, open_access: bool = False) -> None:
        self.tokens = tokens
        self.policy = policy
        self.open_access = open_access
        self._snap: AuthSnapshot | None = None
        self._pending: asyncio.Future[int] | None = None
        self._lock = asyncio.Lock()

    def invalidate(self) -> None:
        """Forget the snapshot: the next request reloads it."""
        self._snap = None

    async def _generation(self) -> int:
        """The counter as read after this call began (reads are shared within a tick)."""
        fut = self._pending
        if fut is None:
            loop = asyncio.get_running_loop()
            fut = self._pending = loop.create_future()
            loop.call_soon(self._start_read, fut)
        return await asyncio.shield(fut)

    def _start_read(self, fut: asyncio.Future[int]) -> None:
        self._pending = None  # later arrivals start a read of their own
        task = asyncio.ensure_future(asyncio.to_thread(self.tokens.generation))

        def done(t: asyncio.Future[int]) -> None:
            if fut.done():
                return
            if t.cancelled():
                fut.cancel()
            elif (exc := t.exception()) is not None:
                fut.set_exception(exc)
            else:
                fut.set_result(t.result())

        task.add_done_callback(done)

    async def _load(self, gen: int) -> AuthSnapshot:
        async with self._lock:
            snap = self._snap
            if snap is not None and snap.generation >= gen:
                return snap  # loaded by someone else meanwhile
            loaded = await asyncio.to_thread(self.tokens.snapshot)
            if self.policy.public_prefixes:
                loaded = AuthSnapshot(
                    tokens=loaded.tokens,
                    grants=loaded.grants,
                    public=tuple(dict.fromkeys((*loaded.public, *self.policy.public_prefixes))),
                    external_role=loaded.external_role,
                    loaded_at=loaded.loaded_at,
                    generation=loaded.generation,
                )
            self._snap = loaded
            return loaded

    async def snapshot(self) -> AuthSnapshot:
        """A snapshot at least as new as the tables were when this call began."""
        gen = await self._generation()
        snap = self._snap
        if snap is None or snap.generation < gen:
            snap = await self._load(gen)
        return snap

    async def current(self) -> AuthSnapshot:
        """The snapshot the request in hand was resolved with (or a newer one)."""
        snap = self._snap
        return snap if snap is not None else await self.snapshot()

    async def resolve(self, token: str | None) -> Principal:
        """The principal of a bearer token; RpcError(-32001, HTTP 401) for a bad one."""
        who = (await self.snapshot()).principal(token)
        if self.open_access:
            return Principal(who.name if who and who.name else "open-access", "admin",
                             who.owner if who else None)
        if who is None:
            raise RpcError(
                ERR_UNAUTHORIZED,
                "unknown or revoked token; ask the hub's admin for one "
                "(python -m swarm hub token add NAME --role participant)",
                http_status=401,
            )
        return who
