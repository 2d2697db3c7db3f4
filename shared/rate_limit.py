"""Per-key token buckets: how many messages a device (or session) may send, with bursts.

Why hand-written: the libraries (``limits``, ``aiolimiter``) either read the wall clock
themselves or make the caller wait; the control plane must *drop* over-limit messages
immediately and be testable on an injected clock. This is a dozen lines of arithmetic.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Bucket:
    tokens: float
    stamp: float


class RateLimiter:
    """``allow(key)`` is True while ``key`` stays under ``rate_per_s`` on average, with ``burst`` headroom.

    At most ``max_keys`` buckets are kept, least recently used first out (an ``OrderedDict``:
    O(1) per call), so a flood of made-up ids cannot grow memory without bound.

    Eviction must not hand out budget: a key dropped while its bucket was not full would come
    back with a fresh, full one, so rotating through more than ``max_keys`` ids would reset every
    budget. Instead the limiter remembers the *lowest* balance it ever evicted (refilled at the
    same rate, so it is forgotten once it would be full again) and every key it does not hold
    starts from that floor rather than from ``burst``. A returning key therefore never has more
    than it would have had if it had been kept; the price is that genuinely new keys start lower
    while the table is saturated with busy keys (which is a flood).
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
        if max_keys < 1:
            raise ValueError("rate limiter needs max_keys >= 1")
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._clock = clock
        self._max_keys = max_keys
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self._floor: _Bucket | None = None  # the lowest evicted balance, see the class doc
        self.rejected = 0
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._buckets)

    def _refilled(self, bucket: _Bucket, now: float) -> float:
        return min(self.burst, bucket.tokens + max(0.0, now - bucket.stamp) * self.rate_per_s)

    def allow(self, key: str, cost: float = 1.0) -> bool:
        """Spend ``cost`` tokens of ``key``'s bucket; False (and nothing spent) when it has fewer."""
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self._max_keys:
                self._evict_lru(now)
            bucket = self._buckets[key] = _Bucket(self._start_tokens(now), now)
        else:
            self._buckets.move_to_end(key)
        bucket.tokens = self._refilled(bucket, now)
        bucket.stamp = now
        if bucket.tokens >= cost:
            bucket.tokens -= cost
            return True
        self.rejected += 1
        return False

    def _start_tokens(self, now: float) -> float:
        if self._floor is None:
            return self.burst
        tokens = self._refilled(self._floor, now)
        if tokens >= self.burst:
            self._floor = None  # every evicted bucket would be full by now
        return tokens

    def _evict_lru(self, now: float) -> None:
        _key, oldest = self._buckets.popitem(last=False)
        self.evicted += 1
        tokens = self._refilled(oldest, now)
        if tokens < self.burst and (self._floor is None or tokens < self._refilled(self._floor, now)):
            self._floor = _Bucket(tokens, now)
