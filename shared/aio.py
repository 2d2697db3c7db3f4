"""Small asyncio helpers every deployable uses.

Why not ``asyncio.wait_for``: on Python 3.11 it can swallow a cancellation when the awaited
thing completes in the same loop iteration as the ``cancel()`` (fixed in 3.12, where it is built
on ``asyncio.timeout``). On the device that happened for real: the mic track's wait for audio
(set every 10 ms) ate aiortc's cancel of its RTP task, so ``RTCRtpSender.stop()`` and with it
``pc.close()`` and the agent's ``stop()`` hung. ``asyncio.timeout`` does not have that bug, so
waits with a deadline go through :func:`wait_event` or ``async with asyncio.timeout(...)``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import TypeVar

T = TypeVar("T")


async def wait_event(event: asyncio.Event, within_s: float) -> bool:
    """Wait up to ``within_s`` for ``event``; True if it is set."""
    if event.is_set():
        return True
    try:
        async with asyncio.timeout(max(within_s, 0.0)):
            await event.wait()
    except TimeoutError:
        pass
    return event.is_set()


@contextlib.asynccontextmanager
async def closing(it: AsyncIterator[T]) -> AsyncIterator[AsyncIterator[T]]:
    """Like ``contextlib.aclosing`` for any async iterator: close it (stopping the
    producer behind it) as soon as the consumer leaves the block, not at garbage collection."""
    try:
        yield it
    finally:
        aclose = getattr(it, "aclose", None)
        if aclose is not None:
            await aclose()
