"""The hub's view of its auth tables: a cached AuthSnapshot, checked for freshness on
every request.

Each request reads the tables' generation counter (one indexed row of a WAL file, a few
microseconds; in a thread, shared with other requests, when the file is busy) and reloads the snapshot when it moved. So a ``token revoke`` that has returned
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
        self._next: asyncio.Future[int] | None = None  # the read that starts after the current
        self._reading = False
        self._seen: int | None = None  # the counter as read in this loop iteration
        self._lock = asyncio.Lock()

    def invalidate(self) -> None:
        """Forget the snapshot: the next request reloads it."""
        self._snap = None

    async def _generation(self) -> int:
        """The counter as read after this call began: read at once when the file is not
        busy; else in a thread, at most one read at a time, callers that arrive meanwhile
        sharing the next one, which starts when it ends."""
        if self._seen is not None:
            return self._seen
        now = self.tokens.generation_nowait()
        if now is not None:
            # Valid for the rest of this loop iteration: every request handled in it was
            # received before the read ran, so a change committed before any of them was
            # sent is seen. call_soon clears it at the start of the next iteration.
            self._seen = now
            asyncio.get_running_loop().call_soon(self._forget_seen)
            return now
        fut = self._next
        if fut is None:
            fut = self._next = asyncio.get_running_loop().create_future()
            if not self._reading:
                self._start_read()
        return await asyncio.shield(fut)

    def _forget_seen(self) -> None:
        self._seen = None

    def _start_read(self) -> None:
        fut, self._next = self._next, None
        if fut is None:
            self._reading = False
            return
        self._reading = True
        task = asyncio.ensure_future(asyncio.to_thread(self.tokens.generation))

        def done(t: asyncio.Future[int]) -> None:
            if not fut.done():
                if t.cancelled():
                    fut.cancel()
                elif (exc := t.exception()) is not None:
                    fut.set_exception(exc)
                else:
                    fut.set_result(t.result())
            self._start_read()

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
            return Principal(
                who.name if who and who.name else "open-access", "admin", who.owner if who else None
            )
        if who is None:
            raise RpcError(
                ERR_UNAUTHORIZED,
                "unknown or revoked token; ask the hub's admin for one "
                "(python -m swarm hub token add NAME --role participant)",
                http_status=401,
            )
        return who
