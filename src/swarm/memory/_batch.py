"""Requests issued in the same event-loop tick, served by one trip to a worker thread."""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

__all__ = ["TickBatcher"]

Q = TypeVar("Q")
R = TypeVar("R")


class TickBatcher(Generic[Q, R]):
    """Collects the requests of one loop tick and hands them to ``submit`` at once.

    ``submit(requests)`` starts the work (in a thread pool) and returns a future of one
    result per request, in order; when it raises (the store was closed), every request
    of the batch gets that exception.
    """

    def __init__(self, submit: Callable[[Sequence[Q]], concurrent.futures.Future[list[R]]]) -> None:
        self._submit = submit
        self._pending: list[tuple[Q, asyncio.Future[R]]] = []

    async def __call__(self, request: Q) -> R:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[R] = loop.create_future()
        self._pending.append((request, fut))
        if len(self._pending) == 1:
            loop.call_soon(self._flush)
        return await fut

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        if not batch:
            return
        try:
            cf = self._submit([q for q, _ in batch])
        except Exception as exc:  # the submitter's refusal goes to every waiter
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(exc)
            return

        def deliver(done: asyncio.Future[list[R]]) -> None:
            exc = None if done.cancelled() else done.exception()
            for i, (_, fut) in enumerate(batch):
                if fut.done():
                    continue
                if done.cancelled():
                    fut.cancel()
                elif exc is not None:
                    fut.set_exception(exc)
                else:
                    fut.set_result(done.result()[i])

        asyncio.wrap_future(cf).add_done_callback(deliver)
