"""The low-latency 48 <-> 16 kHz FIR resamplers: exact against np.convolve, block-size independent, 1 ms delay."""

from __future__ import annotations

import numpy as np
import pytest

from device_agent.fir_resampler import FirDecimator, FirInterpolator, lowpass_taps

pytestmark = pytest.mark.unit

RNG = np.random.default_rng(7)
X = (RNG.standard_normal(48_000) * 3000).astype(np.int16)


@pytest.mark.parametrize("block", [1, 7, 160, 333, 480])
def test_decimator_is_the_filtered_signal_every_third_sample(block: int) -> None:
    d = FirDecimator(3)
    got = np.concatenate([d.process(X[i : i + block]) for i in range(0, X.size, block)])
    want = np.round(np.convolve(X.astype(np.float64), lowpass_taps(3))[: X.size][::3])
    assert np.array_equal(got, want)


def test_two_channels_in_one_call_equal_two_decimators() -> None:
    y = (RNG.standard_normal(48_000) * 3000).astype(np.int16)
    both, a, b = FirDecimator(3, channels=2), FirDecimator(3), FirDecimator(3)
    for i in range(0, X.size, 480):
        out = both.process(np.stack([X[i : i + 480], y[i : i + 480]]))
        assert np.array_equal(out[0], a.process(X[i : i + 480]))
        assert np.array_equal(out[1], b.process(y[i : i + 480]))


@pytest.mark.parametrize("block", [1, 77, 160])
def test_interpolator_is_zero_stuffing_plus_the_same_lowpass(block: int) -> None:
    lo = X[:16_000]
    u = FirInterpolator(3)
    got = np.concatenate([u.process(lo[i : i + block]) for i in range(0, lo.size, block)])
    up = np.zeros(48_000)
    up[::3] = lo
    assert np.array_equal(got, np.round(np.convolve(up, lowpass_taps(3) * 3)[:48_000]))


def test_round_trip_delay_is_two_milliseconds_and_speech_band_is_flat() -> None:
    d, u = FirDecimator(3), FirInterpolator(3)
    impulse = np.zeros(4800, np.int16)
    impulse[1000] = 20_000
    out = np.concatenate([u.process(d.process(impulse[i : i + 480])) for i in range(0, 4800, 480)])
    assert int(np.argmax(out)) - 1000 == 96  # 48 + 48 samples at 48 kHz
    h = np.abs(np.fft.rfft(lowpass_taps(3), 48_000))
    assert 20 * np.log10(h[100:6000]).min() > -0.1  # flat to 6 kHz
    assert 20 * np.log10(h[8600:24000]).max() < -60  # aliases from above 8.6 kHz rejected
