"""Run control: the one "wait for X (or sleep) unless stopped" helper, and the budget."""

from __future__ import annotations

import asyncio
import time

import pytest

from swarm.worker import Slots, StopControl, unless_stopped


async def test_returns_the_awaitables_result() -> None:
    """Without a stop, the awaitable's result comes back."""
    stop = asyncio.Event()

    async def answer() -> int:
        await asyncio.sleep(0.01)
        return 42

    assert await unless_stopped(stop, answer(), limit_s=5) == 42


async def test_stop_cancels_the_awaitable_and_returns_none() -> None:
    """A stop while waiting returns None at once and cancels what was awaited."""
    stop = asyncio.Event()
    cancelled = asyncio.Event()

    async def forever() -> int:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return 1

    asyncio.get_running_loop().call_later(0.05, stop.set)
    t0 = time.monotonic()
    assert await unless_stopped(stop, forever()) is None
    assert time.monotonic() - t0 < 2 and cancelled.is_set()


async def test_time_limit_returns_none() -> None:
    """When the limit passes first the result is None and the awaitable is cancelled."""
    stop = asyncio.Event()
    fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    assert await unless_stopped(stop, fut, limit_s=0.05) is None
    assert fut.cancelled()


async def test_result_arriving_with_the_stop_is_not_lost() -> None:
    """A result that lands in the same instant as the stop is returned, not dropped (a
    queue item taken then would otherwise vanish)."""
    stop = asyncio.Event()
    fut: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    def both() -> None:
        fut.set_result("item")
        stop.set()

    asyncio.get_running_loop().call_soon(both)
    assert await unless_stopped(stop, fut) == "item"


async def test_already_stopped_closes_the_coroutine_unrun() -> None:
    """When already stopped the coroutine is closed without running (no warning)."""
    stop = asyncio.Event()
    stop.set()
    ran = []

    async def body() -> None:
        ran.append(1)

    coro = body()
    assert await unless_stopped(stop, coro) is None
    assert ran == [] and coro.cr_frame is None


async def test_exception_of_the_awaitable_propagates() -> None:
    """An error of the awaited work is not swallowed."""
    stop = asyncio.Event()

    async def boom() -> None:
        raise ValueError("bad")

    with pytest.raises(ValueError, match="bad"):
        await unless_stopped(stop, boom())


async def test_sleep_ends_early_on_stop_and_says_so() -> None:
    """StopControl.sleep returns True as soon as a stop is requested, False after a full
    sleep."""
    control = StopControl()
    assert await control.sleep(0.01) is False
    asyncio.get_running_loop().call_later(0.05, control.request_stop, "test")
    t0 = time.monotonic()
    assert await control.sleep(30) is True
    assert time.monotonic() - t0 < 2 and control.reason == "test"


def test_slots_budget() -> None:
    """The experiment budget hands out at most ``limit`` slots; a slot given back is
    reusable; 0 means unlimited."""
    slots = Slots(2)
    assert slots.take() and slots.take() and not slots.take() and slots.exhausted
    slots.give_back()
    assert not slots.exhausted and slots.take()
    unlimited = Slots(0)
    assert all(unlimited.take() for _ in range(100)) and not unlimited.exhausted
