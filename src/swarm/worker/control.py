"""Run control shared by a supervisor and its workers: stop flags, the experiment budget,
the counters, and the one helper for "wait for X (or sleep) unless stopped".

:func:`unless_stopped` is the only place that races an awaitable against a stop event;
every "sleep unless stopped" and "wait for X unless stopped" in the package goes through it
(or through :meth:`StopControl.sleep`, which is the same helper bound to ``stopping``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from dataclasses import replace
from typing import TypeVar

from swarm.status import Counters

__all__ = ["CounterBox", "Slots", "StopControl", "unless_stopped"]

T = TypeVar("T")


async def unless_stopped(
    stop: asyncio.Event, awaitable: Awaitable[T] | None = None, *, limit_s: float | None = None
) -> T | None:
    """Wait for ``awaitable`` until ``stop`` is set or ``limit_s`` seconds pass.

    Returns the awaitable's result, or None when ``stop`` was set first or the time ran
    out (the awaitable is then cancelled; a result that arrived in the same instant is
    still returned, never lost). Without an awaitable it is "sleep ``limit_s`` seconds
    unless stopped". An exception of the awaitable propagates.
    """
    if stop.is_set():
        if awaitable is not None:
            _discard(awaitable)
        return None
    stopper = asyncio.ensure_future(stop.wait())
    waited = asyncio.ensure_future(awaitable) if awaitable is not None else None
    pending = {stopper} if waited is None else {stopper, waited}
    try:
        await asyncio.wait(pending, timeout=limit_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopper.cancel()
        if waited is not None and not waited.done():
            waited.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await waited
    if waited is not None and waited.done() and not waited.cancelled():
        return waited.result()
    return None


def _discard(awaitable: Awaitable[object]) -> None:
    """Close a coroutine that will never be awaited (no 'never awaited' warning)."""
    if asyncio.iscoroutine(awaitable):
        awaitable.close()


class StopControl:
    """Shutdown flags shared by the supervisor and its workers (set from signal handlers).

    ``stopping``: claim nothing new, let running experiments finish.
    ``abort``: cancel running experiments now (grace period over, or forced).
    """

    def __init__(self) -> None:
        self.stopping = asyncio.Event()
        self.abort = asyncio.Event()
        self.forced = asyncio.Event()
        self.reason: str | None = None
        self.aborted_runs = 0

    def request_stop(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason
        self.stopping.set()

    def force(self, reason: str) -> None:
        self.request_stop(reason)
        self.forced.set()

    async def sleep(self, seconds: float) -> bool:
        """Sleep ``seconds`` unless a stop is requested first; True when stopping."""
        await unless_stopped(self.stopping, limit_s=seconds)
        return self.stopping.is_set()

    async def wait_for(self, awaitable: Awaitable[T], *, limit_s: float | None = None) -> T | None:
        """:func:`unless_stopped` on ``stopping``: the result, or None (stopped, timed out)."""
        return await unless_stopped(self.stopping, awaitable, limit_s=limit_s)


class Slots:
    """The machine-wide experiment budget (``max_experiments``; 0 = unlimited)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.taken = 0

    def take(self) -> bool:
        if self.limit and self.taken >= self.limit:
            return False
        self.taken += 1
        return True

    def give_back(self) -> None:
        self.taken = max(0, self.taken - 1)

    @property
    def exhausted(self) -> bool:
        return bool(self.limit) and self.taken >= self.limit


class CounterBox:
    """Mutable holder of the machine's counters (one event loop: no lock needed)."""

    def __init__(self) -> None:
        self.value = Counters()

    def add_result(self, status: str) -> None:
        self.value = self.value.add(status)

    def bump(self, name: str) -> None:
        self.value = replace(self.value, **{name: getattr(self.value, name) + 1})
