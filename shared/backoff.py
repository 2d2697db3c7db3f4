"""Reconnect delays: exponential backoff with full jitter (AWS architecture blog's "Full Jitter").

One policy for every reconnecting client: the hub's gRPC link, the device's WebRTC and MQTT links.

Pure: the random source is injected, nothing sleeps, so tests check the delays directly.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable


class Backoff:
    """``next_delay()`` returns uniform(0, min(max_s, initial_s * 2**attempt)).

    Full jitter spreads many hubs (or one hub's retries) so they do not hammer a restarting
    AI server in lock-step. A tiny floor (``initial_s / 10``) keeps a zero draw from
    turning into a busy loop.

    A connection resets the schedule only once it has stayed up ``stable_s`` (on the
    injected ``clock``): a server that accepts and then drops every stream at once must
    not be retried at the initial rate forever.
    """

    def __init__(
        self,
        initial_s: float,
        max_s: float,
        *,
        factor: float = 2.0,
        stable_s: float = 5.0,
        rand: Callable[[], float] = random.random,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if initial_s <= 0 or max_s <= 0 or factor < 1:
            raise ValueError("backoff needs initial_s > 0, max_s > 0, factor >= 1")
        self.initial_s = initial_s
        self.max_s = max(max_s, initial_s)
        self.factor = factor
        self.stable_s = stable_s
        self._rand = rand
        self._clock = clock
        self._connected_at: float | None = None
        self.attempt = 0

    def ceiling(self, attempt: int) -> float:
        """The largest delay for the given attempt number (0-based), before jitter."""
        # Cap the exponent so huge attempt counts cannot overflow a float.
        return min(self.max_s, self.initial_s * self.factor ** min(attempt, 64))

    def next_delay(self) -> float:
        cap = self.ceiling(self.attempt)
        self.attempt += 1
        return max(self.initial_s / 10.0, cap * self._rand())

    def reset(self) -> None:
        self.attempt = 0

    def connected(self) -> None:
        """A connection is up: remember when, to judge whether it was stable."""
        self._connected_at = self._clock()

    def disconnected(self) -> None:
        """The connection is gone: start over if it had been stable, else keep backing off."""
        if self._connected_at is not None and self._clock() - self._connected_at >= self.stable_s:
            self.reset()
        self._connected_at = None
