"""Reconnect policy and link judgement on an injected clock and random source: no sleeps."""

from __future__ import annotations

import pytest

from device_agent.link_monitor import LinkMonitor
from shared.backoff import Backoff

pytestmark = pytest.mark.unit


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, dt: float) -> None:
        self.now += dt


def test_caps_double_up_to_the_maximum() -> None:
    b = Backoff(0.5, 10.0, rand=lambda: 1.0)
    assert [b.next_delay() for _ in range(8)] == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0]


def test_full_jitter_draws_between_zero_and_the_cap() -> None:
    draws = iter([0.0, 0.25, 0.5, 0.999])
    b = Backoff(1.0, 100.0, rand=lambda: next(draws))
    # A zero draw is floored at initial_s / 10 so a retry loop can never spin.
    assert [b.next_delay() for _ in range(4)] == pytest.approx([0.1, 0.5, 2.0, 7.992])


def test_reset_starts_over() -> None:
    b = Backoff(0.5, 10.0, rand=lambda: 1.0)
    for _ in range(5):
        b.next_delay()
    b.reset()
    assert b.attempt == 0 and b.next_delay() == 0.5


def test_long_outage_does_not_overflow() -> None:
    b = Backoff(0.5, 10.0, rand=lambda: 1.0)
    b.attempt = 10_000
    assert b.next_delay() == 10.0


def test_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        Backoff(0, 1)
    with pytest.raises(ValueError):
        Backoff(1, 1, factor=0.5)


def test_monitor_fails_fast_on_failed_or_closed() -> None:
    clock = FakeClock()
    m = LinkMonitor(clock=clock)
    assert m.dead_reason() is None
    m.on_state("failed")
    assert m.dead_reason() == "connection failed"


def test_disconnected_gets_a_grace_period() -> None:
    clock = FakeClock()
    m = LinkMonitor(clock=clock, disconnected_grace_s=3.0)
    m.on_state("connected")
    m.on_rtp()
    m.on_state("disconnected")
    clock.advance(2.9)
    m.on_rtp()
    assert m.dead_reason() is None
    clock.advance(0.2)
    assert m.dead_reason() is not None and "disconnected" in (m.dead_reason() or "")
    m.on_state("connected")  # ICE recovered
    assert m.dead_reason() is None


def test_no_audio_from_the_hub_means_dead() -> None:
    clock = FakeClock()
    m = LinkMonitor(clock=clock, rtp_timeout_s=5.0)
    m.on_state("connected")
    clock.advance(4.0)
    assert m.dead_reason() is None  # grace from connect time
    m.on_rtp()
    assert m.healthy
    clock.advance(4.9)
    assert m.dead_reason() is None
    clock.advance(0.2)
    assert "no audio" in (m.dead_reason() or "")
    assert not m.healthy


def test_never_connecting_times_out() -> None:
    clock = FakeClock()
    m = LinkMonitor(clock=clock, connect_timeout_s=15.0)
    m.on_state("connecting")
    clock.advance(14.0)
    assert m.dead_reason() is None
    clock.advance(2.0)
    assert "not connected" in (m.dead_reason() or "")
