"""Token buckets on a controllable clock: burst, refill, per-key independence, bounded memory."""

from __future__ import annotations

import pytest

from shared.rate_limit import RateLimiter


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


pytestmark = pytest.mark.unit


def test_burst_then_refill_at_rate() -> None:
    clock = Clock()
    rl = RateLimiter(2.0, 3, clock=clock)
    assert [rl.allow("a") for _ in range(4)] == [True, True, True, False]
    assert rl.rejected == 1
    clock.t = 0.49
    assert not rl.allow("a")
    clock.t = 0.5  # one token back at 2/s
    assert rl.allow("a") and not rl.allow("a")
    clock.t = 100.0  # never more than the burst
    assert sum(rl.allow("a") for _ in range(10)) == 3


def test_keys_are_independent() -> None:
    rl = RateLimiter(1.0, 1, clock=Clock())
    assert rl.allow("kitchen") and not rl.allow("kitchen")
    assert rl.allow("hall")


def test_memory_is_bounded_under_a_flood_of_ids() -> None:
    clock = Clock()
    rl = RateLimiter(1.0, 2, clock=clock, max_keys=100)
    for i in range(1000):
        clock.t += 0.001
        rl.allow(f"fake-{i}")
    assert len(rl._buckets) <= 100


def test_rejects_bad_parameters() -> None:
    with pytest.raises(ValueError):
        RateLimiter(0, 1)
    with pytest.raises(ValueError):
        RateLimiter(1, 0.5)
