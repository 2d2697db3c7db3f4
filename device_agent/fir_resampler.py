"""Low-latency integer-ratio resampling (48 <-> 16 kHz) for the echo canceller's path.

Why not ``shared.audio.StreamResampler`` (soxr) here: soxr's steep filters hold back output. At
48 -> 16 -> 48 kHz in 10 ms blocks, soxr "HQ" delays the mic by ~52 ms and "LQ" by ~25 ms
(measured: output samples still withheld after each block), which would double the latency
budget of "capture + AEC ~20 ms". A 97-tap Kaiser-windowed sinc (about 70 dB of alias rejection
above 8.6 kHz, flat to ~6.4 kHz) delays by 1 ms per stage. Aliasing inside the canceller is
harmless anyway: mic and reference go through identical decimators.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from shared.audio import Int16Array

Float64Array = npt.NDArray[np.float64]


def lowpass_taps(factor: int, taps: int = 97, beta: float = 7.0, cutoff: float = 0.9375) -> Float64Array:
    """Unity-gain linear-phase low-pass at ``cutoff`` x the low rate's Nyquist (high-rate taps)."""
    if taps % 2 == 0:
        raise ValueError("use an odd number of taps (integer group delay)")
    fc = cutoff / (2 * factor)  # cycles per high-rate sample
    n = np.arange(taps) - (taps - 1) / 2
    h = 2 * fc * np.sinc(2 * fc * n) * np.kaiser(taps, beta)
    return np.asarray(h / np.sum(h), dtype=np.float64)


def _windows(buf: Float64Array, start: int, rows: int, width: int, hop: int) -> Float64Array:
    """Overlapping rows ``buf[..., start + k*hop : start + k*hop + width]`` as a view (no copy).

    ``buf`` is C-contiguous, 1-D or (channels, n). ``np.ndarray`` on the buffer costs ~0.5 us;
    ``as_strided``/``sliding_window_view`` ~6 us, which matters at hundreds of calls per second.
    """
    item = buf.itemsize
    if buf.ndim == 1:
        return np.ndarray((rows, width), np.float64, buf, start * item, (hop * item, item))
    channels, length = buf.shape
    strides = (length * item, hop * item, item)
    return np.ndarray((channels, rows, width), np.float64, buf, start * item, strides)


def _to_int16(y: Float64Array) -> Int16Array:
    np.rint(y, out=y)
    np.minimum(np.maximum(y, -32768.0, out=y), 32767.0, out=y)
    return y.astype(np.int16)


class FirDecimator:
    """High rate -> high rate / ``factor``, any block length, state kept between blocks.

    Takes 1-D blocks, or (channels, n) blocks filtered in one call (the AEC decimates the mic
    and the reference together: one call's overhead instead of two).

    Only the kept outputs are computed: a strided window view times the (symmetric) taps
    (about 10 us per 10 ms block; numpy's call overhead dominates).
    """

    def __init__(self, factor: int, taps: int = 97, channels: int = 1) -> None:
        self.factor = factor
        self._h = lowpass_taps(factor, taps) if factor > 1 else np.ones(1)
        shape = (self._h.size - 1,) if channels == 1 else (channels, self._h.size - 1)
        self._hist: Float64Array = np.zeros(shape)
        self._consumed = 0
        self.delay = (self._h.size - 1) // 2  # high-rate samples

    def process(self, x: Int16Array) -> Int16Array:
        if self.factor == 1:
            return x
        n = x.shape[-1]
        buf = np.concatenate([self._hist, x.astype(np.float64)], axis=-1)
        start = (-self._consumed) % self.factor
        count = -(-(n - start) // self.factor) if n > start else 0
        # Row k is buf[start + k*factor : ... + taps]; the taps are symmetric, so this is the convolution.
        windows = _windows(buf, start, count, self._h.size, self.factor)
        y = np.dot(windows, self._h)
        self._hist = np.ascontiguousarray(buf[..., buf.shape[-1] - (self._h.size - 1) :])
        self._consumed += n
        return _to_int16(y)


class FirInterpolator:
    """Low rate -> low rate x ``factor`` with the same low-pass, as ``factor`` polyphase branches."""

    def __init__(self, factor: int, taps: int = 97) -> None:
        self.factor = factor
        g = lowpass_taps(factor, taps) * factor if factor > 1 else np.ones(1)
        branch = -(-g.size // factor)
        padded = np.zeros(branch * factor)
        padded[: g.size] = g
        # G[j, p] = g[j * factor + p]; reversed along j to multiply oldest-first windows.
        self._g: Float64Array = padded.reshape(branch, factor)[::-1].copy()
        self._hist: Float64Array = np.zeros(branch - 1)
        self.delay = (g.size - 1) // 2  # high-rate samples

    def process(self, x: Int16Array) -> Int16Array:
        if self.factor == 1:
            return x
        buf = np.concatenate([self._hist, x.astype(np.float64)])
        branch = self._g.shape[0]
        y = np.dot(_windows(buf, 0, x.size, branch, 1), self._g)
        self._hist = buf[buf.size - (branch - 1) :]
        return _to_int16(y.ravel())
