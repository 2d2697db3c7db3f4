"""shared.threads.iterate_in_thread: a blocking generator on a worker thread, stopped by its consumer."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from shared.threads import MAX_ENGINE_THREADS, engine_threads, iterate_in_thread

pytestmark = pytest.mark.unit


class Producer:
    """An endless blocking generator that records how far it got and whether it was closed."""

    def __init__(self) -> None:
        self.produced = 0
        self.closed = threading.Event()
        self.thread: str | None = None

    def __call__(self) -> Iterator[int]:
        self.thread = threading.current_thread().name
        try:
            while True:
                self.produced += 1
                yield self.produced
        finally:
            self.closed.set()


async def test_items_arrive_in_order_from_a_worker_thread() -> None:
    with ThreadPoolExecutor(1, thread_name_prefix="bridge") as pool:
        got = [x async for x in iterate_in_thread(lambda: iter(range(5)), pool)]
        producer = Producer()
        # aclosing: breaking out of an async generator does not close it until it is collected.
        async with contextlib.aclosing(iterate_in_thread(producer, pool)) as items:
            async for x in items:
                if x == 3:
                    break
    assert got == [0, 1, 2, 3, 4]
    assert producer.thread is not None and producer.thread.startswith("bridge")
    assert producer.closed.is_set(), "breaking out closed the generator"


async def test_cancelling_the_consumer_stops_the_producer() -> None:
    producer = Producer()
    seen = asyncio.Event()

    async def consume() -> None:
        async for x in iterate_in_thread(producer, lookahead=2):
            if x >= 3:
                seen.set()

    task = asyncio.create_task(consume())
    await seen.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # The bridge waited for the worker: the generator is closed by the time the cancel lands.
    assert producer.closed.is_set()
    stopped_at = producer.produced
    await asyncio.sleep(0)
    assert producer.produced == stopped_at, "nothing produced after the consumer left"


async def test_lookahead_bounds_how_far_the_producer_runs_ahead() -> None:
    producer = Producer()
    items = iterate_in_thread(producer, lookahead=3)
    assert await anext(items) == 1
    await asyncio.to_thread(lambda: None)  # let the worker run until it blocks
    assert producer.produced <= 1 + 3 + 1, "read + lookahead + the one it is waiting to hand over"
    await items.aclose()
    assert producer.closed.is_set()


async def test_a_producer_error_is_raised_to_the_consumer_wrapped_if_asked() -> None:
    def failing() -> Iterator[int]:
        yield 1
        raise ValueError("model broke")

    with pytest.raises(ValueError, match="model broke"):
        [x async for x in iterate_in_thread(failing)]
    with pytest.raises(RuntimeError, match="engine failed: model broke") as info:
        [x async for x in iterate_in_thread(failing, error=lambda e: RuntimeError(f"engine failed: {e}"))]
    assert isinstance(info.value.__cause__, ValueError)


def test_engine_threads_takes_a_setting_or_a_share_of_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    assert engine_threads(3) == 3  # configured: used as is, even above the cap
    for cores, alone, half in ((1, 1, 1), (2, 2, 1), (4, 4, 2), (16, MAX_ENGINE_THREADS, MAX_ENGINE_THREADS)):
        monkeypatch.setattr("os.cpu_count", lambda cores=cores: cores)
        assert (engine_threads(), engine_threads(0, share=2)) == (alone, half)
    monkeypatch.setattr("os.cpu_count", lambda: None)  # unknown: one thread
    assert engine_threads(share=2) == 1
