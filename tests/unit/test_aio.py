"""shared.aio: waiting with a deadline without asyncio.wait_for's 3.11 cancel bug; closing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from shared.aio import closing, wait_event

pytestmark = pytest.mark.unit


async def test_wait_event_returns_whether_it_was_set() -> None:
    event = asyncio.Event()
    assert await wait_event(event, 0) is False
    assert await wait_event(event, -1) is False, "a deadline already past waits for nothing"
    asyncio.get_running_loop().call_soon(event.set)
    assert await wait_event(event, 60) is True
    assert await wait_event(event, 0) is True


async def test_a_cancel_that_lands_with_the_event_is_not_swallowed() -> None:
    """The 3.11 wait_for bug: the event set in the same loop iteration as the cancel ate the cancel."""
    for _ in range(50):
        event = asyncio.Event()
        task = asyncio.create_task(wait_event(event, 60))
        await asyncio.sleep(0)  # the task is now waiting on the event
        event.set()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_closing_stops_the_generator_when_the_block_is_left() -> None:
    closed = []

    async def gen() -> AsyncIterator[int]:
        try:
            for i in range(10):
                yield i
        finally:
            closed.append(True)

    async with closing(gen()) as items:
        async for i in items:
            if i == 2:
                break
    assert closed == [True]
