"""Residual-echo guard for the first seconds of playback, before the echo canceller converges.

SpeexDSP's adaptive filter needs about 1.5 s of far-end speech to converge (measured with
bench/aec.py's room: ERLE 6 dB in the first second, 25 dB in the second, > 40 dB after 3 s).
Until then the device's own voice reaches the hub nearly unattenuated and the hub's VAD takes
it for the user barging in. This guard removes that window: while the canceller has heard
less than ``converge_s`` of far-end audio in total, any output block whose power is not
clearly above the expected echo (the measured coupling x the speaker reference envelope) is
attenuated, like a power-domain spectral subtraction. Near-end speech louder than the echo
passes; after convergence the guard is a pass-through, so steady-state double talk is left to
the canceller and its residual-echo suppressor.

The coupling (echo power / reference power) is the 30th percentile of the mic/reference power
ratios of 100 ms windows inside far-end activity (a window right after an onset is skipped:
the echo lags the reference; windows with near-end speech only raise the ratio), times a 3 dB
margin; until two windows are measured (~0.3 s of far end) it is assumed to be ``coupling_db``.
A device with no echo path therefore measures ~0 coupling and the guard never touches the
user's voice.
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np

from shared.audio import Int16Array


class EchoGuard:
    def __init__(
        self,
        rate: int,
        *,
        converge_s: float = 3.0,
        coupling_db: float = 0.0,
        release_s: float = 0.25,
        far_active_dbfs: float = -55.0,
    ) -> None:
        self.rate = rate
        self.converge_s = converge_s
        self.coupling = 10 ** (coupling_db / 10)  # power ratio echo/reference assumed at most
        self.release_s = release_s
        self.far_active = (32768.0**2) * 10 ** (far_active_dbfs / 10)
        self.far_seen_s = 0.0
        self._ref_env = 0.0
        self.blocks_attenuated = 0
        self.measured_coupling: float | None = None
        self._ratios: deque[float] = deque(maxlen=50)
        self._prev_window_active = False
        self._win_mic = 0.0
        self._win_ref = 0.0
        self._win_blocks = 0
        self._win_len = max(1, round(0.1 * rate))  # samples per measuring window

    @property
    def active(self) -> bool:
        return self.far_seen_s < self.converge_s

    def _measure(self, p_mic: float, p_ref: float, n: int) -> None:
        self._win_mic += p_mic * n
        self._win_ref += p_ref * n
        self._win_blocks += n
        if self._win_blocks < self._win_len:
            return
        active = self._win_ref / self._win_blocks > self.far_active
        if active and self._prev_window_active:
            self._ratios.append(self._win_mic / self._win_ref)
            if len(self._ratios) >= 2:
                self.measured_coupling = float(np.percentile(np.fromiter(self._ratios, float), 30))
        self._prev_window_active = active
        self._win_mic = self._win_ref = 0.0
        self._win_blocks = 0

    def process(self, out: Int16Array, reference: Int16Array, mic: Int16Array) -> Int16Array:
        """``out``: the canceller's output block; ``reference``: what the speaker played in it;
        ``mic``: the raw microphone block (before cancellation)."""
        if not self.active or out.size == 0:
            return out
        block_s = out.size / self.rate
        p_ref = float(np.mean(np.square(reference.astype(np.float64)))) if reference.size else 0.0
        p_mic = float(np.mean(np.square(mic.astype(np.float64))))
        self._measure(p_mic, p_ref, out.size)
        # Fast attack, slow release: the echo arrives a little after the reference and
        # rings on for the room's reverberation time.
        decay = math.exp(-block_s / self.release_s)
        self._ref_env = max(p_ref, self._ref_env * decay)
        if p_ref > self.far_active:
            self.far_seen_s += block_s
        if self._ref_env <= self.far_active:
            return out
        p_out = float(np.mean(np.square(out.astype(np.float64))))
        if p_out <= 0.0:
            return out
        coupling = self.coupling if self.measured_coupling is None else 2.0 * self.measured_coupling
        expected_echo = coupling * self._ref_env
        gain = math.sqrt(max(0.0, p_out - expected_echo) / p_out)
        if gain >= 1.0:
            return out
        self.blocks_attenuated += 1
        return np.round(out.astype(np.float64) * gain).astype(np.int16)
