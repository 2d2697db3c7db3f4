"""Token buckets on a controllable clock: burst, refill, per-key independence, bounded memory,
LRU eviction that never hands out fresh budget (finding M2)."""

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
    assert len(rl) <= 100


def test_eviction_is_least_recently_used() -> None:
    clock = Clock()
    rl = RateLimiter(1.0, 2, clock=clock, max_keys=2)
    rl.allow("a")
    rl.allow("b")
    rl.allow("a")  # "a" used last: "b" is the one to go
    rl.allow("c")
    assert set(rl._buckets) == {"a", "c"} and rl.evicted == 1


def test_rotating_ids_past_max_keys_gets_no_fresh_budget() -> None:
    """An attacker spends one key, pushes it out with made-up ids, and comes back: still empty."""
    clock = Clock()
    rl = RateLimiter(1.0, 5, clock=clock, max_keys=10)
    assert sum(rl.allow("victim-id") for _ in range(10)) == 5  # drained
    for i in range(10):
        rl.allow(f"filler-{i}")  # evicts "victim-id" while its bucket is empty
    assert "victim-id" not in rl._buckets
    assert not rl.allow("victim-id")  # no fresh bucket of 5
    clock.t = 1.0  # refills at the rate, exactly as if it had been kept
    assert rl.allow("victim-id") and not rl.allow("victim-id")


def test_keys_idle_long_enough_to_be_full_start_full_again() -> None:
    clock = Clock()
    rl = RateLimiter(1.0, 2, clock=clock, max_keys=2)
    rl.allow("a"), rl.allow("a")  # empty
    rl.allow("b")
    rl.allow("c")  # evicts "a" (empty): the floor is 0
    assert not rl.allow("new")
    clock.t += 2.0  # the floor refilled to the burst: forgotten
    assert rl.allow("newer") and rl.allow("newer") and not rl.allow("newer")
    assert rl._floor is None


def test_a_cost_spends_several_tokens_and_never_more_than_the_burst() -> None:
    clock = Clock()
    rl = RateLimiter(100.0, 1000, clock=clock)  # e.g. bytes per second
    assert rl.allow("dev", 600) and not rl.allow("dev", 600) and rl.allow("dev", 400)
    assert not rl.allow("other", 1001)  # more than a full bucket: never


def test_one_call_is_constant_time_with_a_full_table() -> None:
    """10k keys full of busy buckets: each new key costs one pop, not a scan (O(n) before)."""
    import time as _time

    clock = Clock()
    rl = RateLimiter(1.0, 2, clock=clock, max_keys=10_000)
    for i in range(10_000):
        rl.allow(f"k{i}")
    started = _time.perf_counter()
    for i in range(20_000):
        rl.allow(f"n{i}")
    per_call = (_time.perf_counter() - started) / 20_000
    assert len(rl) == 10_000 and per_call < 50e-6, per_call


def test_rejects_bad_parameters() -> None:
    with pytest.raises(ValueError):
        RateLimiter(0, 1)
    with pytest.raises(ValueError):
        RateLimiter(1, 0.5)
    with pytest.raises(ValueError):
        RateLimiter(1, 1, max_keys=0)
