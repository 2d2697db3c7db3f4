"""The motion gate on generated grey frames: what counts as motion, and which motion frames go on."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from hub.vision.motion import REDUCED_SIZE, MotionGate

pytestmark = pytest.mark.unit

W, H = REDUCED_SIZE


def still(level: int = 100) -> np.ndarray:
    """A textured still scene (a horizontal gradient) around ``level``."""
    ramp = np.linspace(level - 40, level + 40, W)
    return np.repeat(ramp[None, :], H, axis=0).astype(np.uint8)


def square(base: np.ndarray, x: int, y: int, side: int = 20, value: int = 250) -> np.ndarray:
    out = base.copy()
    out[y : y + side, x : x + side] = value
    return out


def gate(n: int = 3, threshold: int = 25, min_area: float = 0.005) -> MotionGate:
    return MotionGate(threshold, min_area, n)


def test_a_static_scene_forwards_nothing() -> None:
    g = gate()
    base = still()
    decisions = [g.feed(base) for _ in range(300)]
    assert not any(d.forward or d.motion for d in decisions)
    assert max(d.score for d in decisions) == 0.0


def test_a_moving_object_is_forwarded_first_at_once_then_every_nth() -> None:
    g = gate(n=3)
    base = still()
    for _ in range(10):
        g.feed(base)
    decisions = [g.feed(square(base, 5 + 4 * i, 40)) for i in range(30)]
    assert all(d.motion for d in decisions)
    assert [i for i, d in enumerate(decisions) if d.forward] == list(range(0, 30, 3))
    assert all(0.005 <= d.score < 0.2 for d in decisions)


@pytest.mark.parametrize("n", [1, 2, 5])
def test_every_n_follows_the_setting(n: int) -> None:
    g = gate(n=n)
    base = still()
    g.feed(base)
    forwarded = [i for i in range(20) if g.feed(square(base, 4 * i, 50)).forward]
    assert forwarded == list(range(0, 20, n))


def test_a_new_run_after_stillness_goes_at_once_but_a_short_pause_does_not_restart_it() -> None:
    g = gate(n=3)
    base = still()
    g.feed(base)
    seq = [g.feed(square(base, 4 * i, 30)).forward for i in range(4)]  # run: 0 forwarded, 3 forwarded
    assert seq == [True, False, False, True]
    # One still frame (shorter than N): the run goes on, no extra forward.
    g.feed(square(base, 12, 30))  # the square stops where it was: becomes still once absorbed...
    for _ in range(40):  # ...let the background absorb it completely: a long still period
        g.feed(square(base, 12, 30))
    assert g.feed(square(base, 100, 80)).forward  # the next motion starts a new run: goes at once


def test_threshold_is_respected_at_the_boundary() -> None:
    base = np.full((H, W), 100, np.uint8)
    for delta, expect in ((24, False), (25, True)):
        g = gate(threshold=25)
        g.feed(base)
        patch = base.copy()
        patch[40:80, 60:100] += delta  # 1600 px = 8% of the frame, well above the area minimum
        d = g.feed(patch)
        assert d.motion is expect, (delta, d)
    g = gate(threshold=60)
    g.feed(base)
    patch = base.copy()
    patch[40:80, 60:100] += 50
    assert not g.feed(patch).motion


def test_min_area_is_respected() -> None:
    base = np.full((H, W), 100, np.uint8)
    small = square(base, 50, 50, side=6)  # 36 px of 19200 = 0.19% (the blur spreads it to ~0.3%)
    big = square(base, 50, 50, side=16)  # 256 px = 1.3%
    for frame, expect in ((small, False), (big, True)):
        g = gate(min_area=0.005)
        g.feed(base)
        assert g.feed(frame).motion is expect


def test_lighting_noise_and_slow_drift_below_threshold_are_ignored() -> None:
    rng = np.random.default_rng(7)
    g = gate()
    base = still().astype(np.int16)
    forwarded = 0
    for i in range(300):
        noise = rng.normal(0, 6, size=base.shape)  # sensor noise, sigma 6 grey levels per pixel
        flicker = 8 * np.sin(i / 3)  # mains flicker / auto-exposure hunting, +-8 levels on the whole frame
        drift = i * 0.2  # daylight slowly rising: 60 levels over the sequence
        frame = np.clip(base + noise + flicker + drift, 0, 255).astype(np.uint8)
        forwarded += g.feed(frame).forward
    assert forwarded == 0


def test_a_new_frame_size_restarts_the_background_and_bad_input_is_refused() -> None:
    g = gate()
    g.feed(still())
    d = g.feed(np.zeros((60, 80), np.uint8))  # another size: only sets the background
    assert not d.motion
    bad_inputs: list[Any] = [np.zeros((0, 0), np.uint8), np.zeros((H, W, 3), np.uint8), np.zeros((H, W), np.float32)]
    for bad in bad_inputs:
        with pytest.raises(ValueError):
            g.feed(bad)
    with pytest.raises(ValueError):
        MotionGate(0, 0.01, 3)
    with pytest.raises(ValueError):
        MotionGate(25, 0.0, 3)
