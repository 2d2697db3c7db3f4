"""Reconnect delays: exponential backoff with full jitter (pure; the clock and randomness are injected).

Full jitter (a uniform draw between 0 and the exponential cap) spreads the reconnects of many
devices after a hub restart instead of having them all retry in lock-step.
"""

from __future__ import annotations

import random
from collections.abc import Callable


class Backoff:
    """``next_delay()`` = uniform(0, min(max_s, initial_s * multiplier**attempt)); ``reset()`` on success."""

    def __init__(
        self,
        initial_s: float = 0.5,
        max_s: float = 10.0,
        *,
        multiplier: float = 2.0,
        rng: Callable[[], float] = random.random,
    ) -> None:
        if initial_s <= 0 or max_s <= 0 or multiplier < 1:
            raise ValueError("backoff needs initial_s > 0, max_s > 0, multiplier >= 1")
        self.initial_s = initial_s
        self.max_s = max_s
        self.multiplier = multiplier
        self._rng = rng
        self.attempt = 0

    def cap(self, attempt: int | None = None) -> float:
        """The upper bound of the delay drawn at ``attempt`` (default: the next one)."""
        a = self.attempt if attempt is None else attempt
        # Clamp the exponent so a long outage cannot overflow the float.
        return min(self.max_s, self.initial_s * self.multiplier ** min(a, 64))

    def next_delay(self) -> float:
        delay = self._rng() * self.cap()
        self.attempt += 1
        return delay

    def reset(self) -> None:
        self.attempt = 0
