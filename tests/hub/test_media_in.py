"""Decoded WebRTC frames -> 16 kHz mono 20 ms frames, whatever layout/format/rate aiortc hands over."""

from __future__ import annotations

import numpy as np
import pytest
from av import AudioFrame

from hub.media_in import AudioIngest
from shared.audio import frame_to_mono

pytestmark = pytest.mark.unit


def sine(rate: int, n: int, hz: float = 500.0, amp: float = 0.5) -> np.ndarray:
    return amp * np.sin(2 * np.pi * hz * np.arange(n) / rate)


def test_packed_stereo_s16_like_aiortcs_opus_decoder() -> None:
    x = (sine(48000, 960) * 32767).astype(np.int16)
    inter = np.stack([x, x], axis=1).reshape(1, -1)
    f = AudioFrame.from_ndarray(inter, format="s16", layout="stereo")
    f.sample_rate = 48000
    assert np.array_equal(frame_to_mono(f), x)


def test_packed_stereo_s16_mean_matches_the_float_mean_rounded_half_to_even() -> None:
    """The integer fast path (issue 21) gives the float path's samples, extremes and .5 ties included."""
    rng = np.random.default_rng(21)
    edges = np.array([-32768, -32768, 32767, 32767, -32768, 32767, 1, 2, -1, -2, 3, 0, -3, 0, 1, 0, -1, 0])
    inter = np.concatenate([edges, rng.integers(-32768, 32768, 1920 - edges.size)]).astype(np.int16)
    f = AudioFrame.from_ndarray(inter.reshape(1, -1), format="s16", layout="stereo")
    f.sample_rate = 48000
    expected = np.round(inter.reshape(-1, 2).astype(np.float64).mean(axis=1)).astype(np.int16)
    assert np.array_equal(frame_to_mono(f), expected)


def test_planar_float_and_mono() -> None:
    x = sine(48000, 960).astype(np.float32)
    f = AudioFrame.from_ndarray(np.stack([x, x]), format="fltp", layout="stereo")
    out = frame_to_mono(f)
    assert out.dtype == np.int16 and np.max(np.abs(out.astype(int) - np.round(x * 32768))) <= 1
    m = AudioFrame.from_ndarray((x * 32767).astype(np.int16).reshape(1, -1), format="s16", layout="mono")
    assert frame_to_mono(m).size == 960


@pytest.mark.parametrize(("rate", "per_frame"), [(48000, 960), (8000, 160)])
def test_ingest_makes_320_sample_frames_at_16k(rate: int, per_frame: int) -> None:
    ingest = AudioIngest()
    x = (sine(rate, per_frame * 50) * 32767).astype(np.int16)
    frames = []
    for i in range(50):
        f = AudioFrame.from_ndarray(x[i * per_frame : (i + 1) * per_frame].reshape(1, -1), format="s16",
                                    layout="mono")
        f.sample_rate = rate
        frames += list(ingest.push(f))
    assert all(fr.size == 320 for fr in frames)
    assert 46 <= len(frames) <= 50  # 1 s in, 50 frames minus what the resampler holds back (< 80 ms)
    mid = np.concatenate(frames)[3200:12800].astype(np.float64)
    assert 20 * np.log10(np.sqrt(np.mean(mid**2)) / 32768) == pytest.approx(-9.0, abs=0.5)
