"""Small asyncio helpers shared by the stages."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import TypeVar

T = TypeVar("T")


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
