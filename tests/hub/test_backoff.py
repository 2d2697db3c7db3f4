"""Reconnect backoff: exponential ceiling, full jitter, reset only after a stable connection."""

from __future__ import annotations

import pytest

from shared.backoff import Backoff

pytestmark = pytest.mark.unit


def test_ceiling_doubles_up_to_the_max() -> None:
    b = Backoff(0.2, 5.0, rand=lambda: 1.0)
    assert [round(b.next_delay(), 6) for _ in range(8)] == [0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0, 5.0]


def test_full_jitter_draws_between_zero_and_the_ceiling() -> None:
    draws = iter([0.5, 0.25, 0.0])
    b = Backoff(1.0, 10.0, rand=lambda: next(draws))
    assert b.next_delay() == pytest.approx(0.5)  # 0.5 * 1
    assert b.next_delay() == pytest.approx(0.5)  # 0.25 * 2
    assert b.next_delay() == pytest.approx(0.1)  # 0 * 4, floored at initial/10: no busy loop


def test_huge_attempt_counts_do_not_overflow() -> None:
    b = Backoff(0.2, 5.0, rand=lambda: 1.0)
    b.attempt = 10_000
    assert b.next_delay() == 5.0


def test_reset_only_after_a_stable_connection() -> None:
    now = [0.0]
    b = Backoff(0.2, 5.0, stable_s=5.0, rand=lambda: 1.0, clock=lambda: now[0])
    for _ in range(3):
        b.next_delay()
    # Connected but dropped after 1 s: keep backing off (a flapping server).
    b.connected()
    now[0] += 1.0
    b.disconnected()
    assert b.next_delay() == pytest.approx(1.6)
    # Connected for 10 s: start over.
    b.connected()
    now[0] += 10.0
    b.disconnected()
    assert b.next_delay() == pytest.approx(0.2)


def test_rejects_nonpositive_delays() -> None:
    with pytest.raises(ValueError):
        Backoff(0, 1)
