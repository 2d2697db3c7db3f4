"""The hub process's runtime: its event loop (asyncio's; uvloop with HUB_UVLOOP) and one BLAS thread.

Event loop: uvloop (libuv, in Cython) does asyncio's selector, timer and callback work in fewer
instructions, and aiortc (datagram endpoints), aiohttp, aiomqtt and grpc.aio (the vision uplink,
the Household client) run on it unchanged (tests/hub/test_runtime.py). But the hub's CPU per
stream is aiortc's Python RTP path, numpy and the end-of-turn model, not the loop: with uvloop it
measured the same within noise (bench/hub_capacity.py --compare HUB_UVLOOP=true, docs/benchmarks.md
Hub), so asyncio's loop stays the default and uvloop is an option (pip install uvloop). Asked for
but not installed, the hub says so and runs on asyncio's loop.

BLAS: one thread (:func:`shared.threads.one_blas_thread`): numpy's idle OpenBLAS threads spun
0.08-0.1 core at 8 devices, 16-20% of the hub's CPU (bench/hub_capacity.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from shared.threads import one_blas_thread

log = logging.getLogger("naila.hub.runtime")

T = TypeVar("T")


def loop_factory(use_uvloop: bool) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's ``new_event_loop`` when wanted and installed, else None (asyncio's default loop)."""
    if not use_uvloop:
        return None
    try:
        import uvloop
    except ImportError:
        log.warning("HUB_UVLOOP is on but uvloop is not installed: running on asyncio's default loop")
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run(main: Coroutine[Any, Any, T], *, use_uvloop: bool) -> T:
    """``asyncio.run(main)`` with one BLAS thread, on the loop HUB_UVLOOP selects."""
    one_blas_thread()
    with asyncio.Runner(loop_factory=loop_factory(use_uvloop)) as runner:
        return runner.run(main)
