"""Per-key token buckets: how many messages a device (or session) may send, with bursts.

Why hand-written: the libraries (``limits``, ``aiolimiter``) either read the wall clock
themselves or make the caller wait; the control plane must *drop* over-limit messages
immediately and be testable on an injected clock. This is a dozen lines of arithmetic.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Bucket:
    tokens: float
    stamp: float


class RateLimiter:
    """``allow(key)`` is True while ``key`` stays under ``rate_per_s`` on average, with ``burst`` headroom.

    Buckets of keys idle long enough to be full again are forgotten, so a flood of made-up
    ids cannot grow memory without bound (at most ``max_keys`` are kept).
    """

    def __init__(
        self,
        rate_per_s: float,
        burst: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 10_000,
    ) -> None:
        if rate_per_s <= 0 or burst < 1:
            raise ValueError("rate limiter needs rate_per_s > 0 and burst >= 1")
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._clock = clock
        self._max_keys = max_keys
        self._buckets: dict[str, _Bucket] = {}
        self.rejected = 0

    def allow(self, key: str, cost: float = 1.0) -> bool:
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self._max_keys:
                self._forget_full(now)
            bucket = self._buckets[key] = _Bucket(self.burst, now)
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.stamp) * self.rate_per_s)
        bucket.stamp = now
        if bucket.tokens >= cost:
            bucket.tokens -= cost
            return True
        self.rejected += 1
        return False

    def _forget_full(self, now: float) -> None:
        refill_s = self.burst / self.rate_per_s
        stale = [k for k, b in self._buckets.items() if now - b.stamp >= refill_s]
        for k in stale:
            del self._buckets[k]
        if len(self._buckets) >= self._max_keys:  # all busy: drop the oldest rather than grow
            oldest = min(self._buckets, key=lambda k: self._buckets[k].stamp)
            del self._buckets[oldest]
