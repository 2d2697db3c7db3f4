"""shared.audio.frame_to_mono: every PyAV frame layout the hub and device meet, one scaling."""

from __future__ import annotations

import numpy as np
import pytest
from av import AudioFrame

from shared.audio import frame_to_mono, int16_to_float

pytestmark = pytest.mark.unit

LEFT = np.array([1000, -32768, 32767, 0, -1], np.int16)
RIGHT = np.array([3000, -32768, 32767, 2, 1], np.int16)
MEAN = np.array([2000, -32768, 32767, 1, 0], np.int16)


def frame(channels: list[np.ndarray], fmt: str) -> AudioFrame:
    planar = fmt.endswith("p")
    data = np.stack(channels) if planar else np.stack(channels, axis=1).reshape(1, -1)
    f = AudioFrame.from_ndarray(
        np.ascontiguousarray(data), format=fmt, layout="mono" if len(channels) == 1 else "stereo"
    )
    f.sample_rate = 48_000
    return f


@pytest.mark.parametrize("fmt", ["s16", "s16p"])
def test_int16_frames(fmt: str) -> None:
    assert np.array_equal(frame_to_mono(frame([LEFT], fmt)), LEFT)
    assert np.array_equal(frame_to_mono(frame([LEFT, RIGHT], fmt)), MEAN)


@pytest.mark.parametrize("fmt", ["flt", "fltp"])
def test_float_frames_scale_by_32768_the_inverse_of_int16_to_float(fmt: str) -> None:
    out = frame_to_mono(frame([int16_to_float(LEFT)], fmt))
    assert out.dtype == np.int16 and np.array_equal(out, LEFT), "int16 -> float -> int16 is exact"
    stereo = frame_to_mono(frame([int16_to_float(LEFT), int16_to_float(RIGHT)], fmt))
    assert np.array_equal(stereo, MEAN)
    loud = frame_to_mono(frame([np.array([1.5, -1.5, 1.0], np.float32)], fmt))
    assert loud.tolist() == [32767, -32768, 32767], "out of range floats are clipped"


def test_it_agrees_with_pyavs_own_conversion() -> None:
    """FFmpeg's resampler converts fltp -> s16 the same way: the two paths give the same samples."""
    from av.audio.resampler import AudioResampler

    x = np.sin(np.linspace(0, 20, 960)).astype(np.float32) * 0.9
    f = frame([x], "fltp")
    [converted] = AudioResampler(format="s16", layout="mono", rate=48_000).resample(f)
    assert np.max(np.abs(frame_to_mono(f).astype(int) - frame_to_mono(converted).astype(int))) <= 1
