"""The one time base of timers, reminders and ringing: the household's wall clock and a sleep.

Timers are kept as absolute due times (they must survive a restart), so waiting is "sleep until
the wall clock reaches ``due``", re-checked in steps of at most :data:`MAX_STEP_S` so a clock
that jumps (NTP, suspend) is noticed within a minute. Tests pass a :class:`ManualClock`: time
moves only when the test moves it, and every sleeper whose deadline passed wakes up.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import heapq
import itertools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final

MAX_STEP_S: Final = 60.0


@dataclass(frozen=True)
class Clock:
    """``now()``: timezone-aware wall time; ``sleep(s)``: wait ``s`` seconds of that clock."""

    now: Callable[[], dt.datetime]
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep

    async def sleep_until(self, due: dt.datetime) -> None:
        while (left := (due - self.now()).total_seconds()) > 0:
            await self.sleep(min(left, MAX_STEP_S))


class ManualClock:
    """A clock for tests: ``await advance(s)`` moves time and runs everything that became due."""

    def __init__(self, start: dt.datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("ManualClock needs a timezone-aware start")
        self.t = start
        self._sleepers: list[tuple[dt.datetime, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def now(self) -> dt.datetime:
        return self.t

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self.t + dt.timedelta(seconds=seconds), next(self._order), future))
        await future

    @property
    def clock(self) -> Clock:
        return Clock(self.now, self.sleep)

    async def settle(self) -> None:
        """Let every task that can run without time passing run."""
        for _ in range(50):
            await asyncio.sleep(0)

    async def advance(self, seconds: float, step: float = 0.5) -> None:
        """Move time by ``seconds`` in steps of at most ``step``, waking sleepers in deadline order."""
        end = self.t + dt.timedelta(seconds=seconds)
        await self.settle()
        while True:
            nxt = self._sleepers[0][0] if self._sleepers else end
            target = min(end, nxt, self.t + dt.timedelta(seconds=step))
            self.t = max(self.t, target)
            while self._sleepers and self._sleepers[0][0] <= self.t:
                _, _, future = heapq.heappop(self._sleepers)
                if not future.done():
                    future.set_result(None)
            await self.settle()
            if self.t >= end and not (self._sleepers and self._sleepers[0][0] <= self.t):
                return
