"""Thread -> asyncio bridge: iterate a blocking generator in a worker thread.

Engines such as piper (TTS) and llama.cpp (LLM) produce their output from a blocking Python
generator that holds the GIL only between native calls. :func:`iterate_in_thread` runs that
generator on an executor and hands each item to the event loop as it comes, so the first
audio chunk or token is used while the rest is still being computed.

Leaving early stops the producer: when the consumer breaks out, is closed or is cancelled, the
worker sees a stop flag after the item it is producing, closes the generator (its ``finally``
blocks run in the worker thread) and the consumer waits for that, shielded from its own
cancellation, so no native call is still running on a model that the next request uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from collections.abc import AsyncGenerator, Callable, Iterator
from concurrent.futures import Executor
from typing import Final, TypeVar

T = TypeVar("T")

log = logging.getLogger(__name__)

_END: Final = object()

#: Most threads an engine gets unless configured: the engines (whisper, piper, llama.cpp) have
#: always been capped here, so a big machine's other rooms and the hub keep cores to run on.
MAX_ENGINE_THREADS: Final = 4


def engine_threads(requested: int = 0, *, share: int = 1) -> int:
    """The threads a CPU engine runs with: ``requested`` when set (> 0), else the cores divided
    by ``share`` (how many engines compute at once: TTS speaks while the LLM still generates, so each
    gets half), between 1 and :data:`MAX_ENGINE_THREADS`."""
    if requested > 0:
        return requested
    return max(1, min(MAX_ENGINE_THREADS, (os.cpu_count() or 1) // share))


def one_blas_thread() -> None:
    """Limit numpy's BLAS to one thread for the rest of the process.

    numpy's OpenBLAS starts one thread per core, and after each matrix product those threads
    spin-wait for more work (2^28 cycles, ~0.1 s): a product of ~1 ms costs a whole core for
    0.1 s. In the hub (the end-of-turn model's log-mel filterbank, hub/log_mel.py) that measured
    0.08-0.1 core of pure spinning at 8 devices (bench/hub_capacity.py). In the AI server Whisper's
    feature extractor is such a product: each transcription kept the second core spinning for ~90
    ms, while the LLM and piper waited for it (issue 20, docs/benchmarks.md). Our processes'
    parallelism is their streams and their engines' own thread pools (CTranslate2, llama.cpp, ONNX
    Runtime), not numpy's matrices."""
    try:
        from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]
    except ImportError:
        log.warning("threadpoolctl is not installed: numpy's BLAS keeps one (spinning) thread per core")
        return
    threadpool_limits(limits=1, user_api="blas")


class _Failed:
    __slots__ = ("error",)

    def __init__(self, error: Exception) -> None:
        self.error = error


async def iterate_in_thread(
    make: Callable[[], Iterator[T]],
    executor: Executor | None = None,
    *,
    lookahead: int | None = None,
    error: Callable[[Exception], Exception] | None = None,
) -> AsyncGenerator[T, None]:
    """Yield the items of ``make()``, which is called and iterated on ``executor`` (None: the loop's default).

    ``lookahead``: the producer waits once this many items are unread (then one more has been
    produced, waiting to be handed over): backpressure for a producer that should not run on
    while nobody reads; None: unbounded.
    ``error``: turns an exception of the producer into the one raised here (chained to it).
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[object] = asyncio.Queue()
    stop = threading.Event()
    room = threading.Semaphore(lookahead) if lookahead else None

    def put(item: object) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is already closed at shutdown
            loop.call_soon_threadsafe(queue.put_nowait, item)

    def work() -> None:
        try:
            if stop.is_set():
                return
            items = make()
            try:
                for item in items:
                    put(item)
                    if room is not None:
                        room.acquire()  # wait while the consumer is not reading
                    if stop.is_set():
                        break
            finally:
                close = getattr(items, "close", None)
                if close is not None:
                    close()
        except Exception as exc:
            put(_Failed(exc))
        finally:
            put(_END)

    worker = loop.run_in_executor(executor, work)
    try:
        while True:
            got = await queue.get()
            if got is _END:
                break
            if isinstance(got, _Failed):
                if error is None:
                    raise got.error
                raise error(got.error) from got.error
            if room is not None:
                room.release()
            yield got  # type: ignore[misc]  # anything but the two markers is an item of make()
    finally:
        stop.set()
        if room is not None:
            room.release()  # wake a worker waiting for room, so it sees the stop flag
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.shield(worker)
