"""Per-address limits on ``POST /connect`` (issue 18, H1): requests per minute and refused tokens per minute.

Two token buckets per client address (shared.rate_limit): every /connect spends one from the
first (``HUB_CONNECT_PER_MIN``), every refused token one from the second
(``HUB_AUTH_FAILURES_PER_MIN``). When an address has no refused-token budget left it is
barred outright for the time one token takes to refill: its next requests get 429 *before*
any token is looked at, so a guesser cannot tell a right guess from a wrong one while barred.
Each bucket holds one minute's worth, so a household's devices reconnecting together after a
hub restart are never refused.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from shared.rate_limit import RateLimiter

MAX_BARRED = 10_000  # addresses remembered as barred; the oldest is forgotten beyond this


@dataclass(frozen=True)
class Refusal:
    """Why an address is refused (a metrics label) and when it may try again."""

    reason: str
    retry_after_s: float

    @property
    def retry_after_header(self) -> str:
        return str(max(1, math.ceil(self.retry_after_s)))


class AddressLimits:
    """``admit(address)`` before a /connect is handled, ``failed(address)`` after a refused token."""

    def __init__(
        self,
        connects_per_min: float,
        failures_per_min: float,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        self._connect_every_s = 60.0 / connects_per_min
        self._bar_s = 60.0 / failures_per_min
        self._connects = RateLimiter(connects_per_min / 60.0, max(1.0, connects_per_min), clock=clock)
        self._failures = RateLimiter(failures_per_min / 60.0, max(1.0, failures_per_min), clock=clock)
        # address -> barred until. Every bar lasts _bar_s on a monotonic clock, so insertion order is
        # expiry order and expired entries are dropped from the front in O(1) each.
        self._barred: dict[str, float] = {}

    def admit(self, address: str) -> Refusal | None:
        """None when the address may go on; else why not (429)."""
        now = self._clock()
        self._expire(now)
        until = self._barred.get(address)
        if until is not None:
            return Refusal("auth_failures", until - now)
        if not self._connects.allow(address):
            return Refusal("rate_limited", self._connect_every_s)
        return None

    def failed(self, address: str) -> None:
        """A token from this address was refused: spend its failure budget, bar it when that is gone."""
        if self._failures.allow(address):
            return
        self._barred.pop(address, None)
        if len(self._barred) >= MAX_BARRED:
            del self._barred[next(iter(self._barred))]
        self._barred[address] = self._clock() + self._bar_s

    @property
    def barred(self) -> int:
        return len(self._barred)

    def _expire(self, now: float) -> None:
        while self._barred:
            address, until = next(iter(self._barred.items()))
            if until > now:
                return
            del self._barred[address]
