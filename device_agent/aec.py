"""Acoustic echo cancellation: SpeexDSP's MDF filter with the speaker signal as the far-end reference.

Design decisions (numbers from ``bench/aec.py`` on this project's x86 machines):

* **16 kHz, not 48 kHz.** MDF's cost grows with the number of taps, i.e. with the sample rate
  for a given filter length in ms: 200 ms at 48 kHz is 9600 taps and measured ~3x the CPU of
  the 3200 taps at 16 kHz (about 15 vs 5 ms of CPU per second of audio), and it converges no
  faster. Speech energy and everything the hub uses (VAD, Whisper) is below 8 kHz: the hub
  resamples to 16 kHz anyway. So the mic and the reference are resampled 48 -> 16 kHz by two
  identical stream resamplers (same delay, so they stay aligned), cancelled, and the result is
  resampled back to 48 kHz for Opus (short FIR filters: +2 ms, where soxr would add ~50 ms).
  ``DEVICE_AEC_RATE=48000`` runs it full band instead.
* **The reference is exactly the speaker signal**: the block the audio backend plays in the
  same duplex period as the mic block (see ``audio_io.base``), after volume scaling. A fixed,
  known device latency can be removed from the reference with ``DEVICE_AEC_REF_DELAY_MS`` so
  the filter's taps cover the room instead of the sound card's buffers.
* **Residual echo and noise suppression** use Speex's preprocessor linked to the echo state
  (the recipe of speexdsp's own ``testecho.c``) when ``AUDIO_NOISE_SUPPRESSION`` is on. The
  preprocessor delays its output by one frame.
"""

from __future__ import annotations

import logging
import time
from typing import Literal, Protocol

import numpy as np

from device_agent.fir_resampler import FirDecimator, FirInterpolator
from device_agent.speex_ctypes import EchoState, Preprocessor
from shared.audio import Int16Array, StreamResampler
from shared.config import AudioSettings, DeviceSettings

log = logging.getLogger(__name__)

Engine = Literal["ctypes", "package"]


class EchoCanceller(Protocol):
    """Frame-synchronous echo canceller: one mic frame and the matching speaker frame in, one frame out."""

    rate: int
    frame_size: int
    name: str

    def process(self, mic: Int16Array, ref: Int16Array) -> Int16Array: ...

    def reset(self) -> None: ...

    def close(self) -> None: ...


class NullEchoCanceller:
    """Passes the mic through (``AUDIO_ECHO_CANCELLATION=false``, or a headset)."""

    name = "none"

    def __init__(self, rate: int = 48_000, frame_ms: int = 10) -> None:
        self.rate = rate
        self.frame_size = rate * frame_ms // 1000

    def process(self, mic: Int16Array, ref: Int16Array) -> Int16Array:
        return mic

    def reset(self) -> None:
        pass

    def close(self) -> None:
        pass


class _PackageEcho:
    """The ``speexdsp`` PyPI package's SWIG wrapper (same library, no access to the echo state)."""

    def __init__(self, frame_size: int, filter_length: int, rate: int) -> None:
        from speexdsp import EchoCanceller as SwigEchoCanceller

        self._args = (frame_size, filter_length, rate)
        self._ec = SwigEchoCanceller.create(frame_size, filter_length, rate)

    def cancel(self, mic: Int16Array, ref: Int16Array) -> Int16Array:
        out = self._ec.process(np.asarray(mic, "<i2").tobytes(), np.asarray(ref, "<i2").tobytes())
        return np.frombuffer(out, dtype="<i2").astype(np.int16)

    def reset(self) -> None:
        from speexdsp import EchoCanceller as SwigEchoCanceller

        self._ec = SwigEchoCanceller.create(*self._args)

    def close(self) -> None:
        pass


class SpeexEchoCanceller:
    """SpeexDSP MDF echo canceller (+ optional preprocessor for noise and residual echo)."""

    def __init__(
        self,
        *,
        rate: int = 16_000,
        frame_ms: int = 10,
        filter_ms: int = 200,
        noise_suppression: bool = True,
        residual_echo_suppression: bool = True,
        noise_suppress_db: int = -15,
        engine: Engine = "ctypes",
    ) -> None:
        self.rate = rate
        self.frame_size = rate * frame_ms // 1000
        self.filter_length = rate * filter_ms // 1000
        self.engine = engine
        self._echo: EchoState | None = None
        self._pkg: _PackageEcho | None = None
        if engine == "package":
            self._pkg = _PackageEcho(self.frame_size, self.filter_length, rate)
        else:
            self._echo = EchoState(self.frame_size, self.filter_length, rate)
        self._pre: Preprocessor | None = None
        if noise_suppression:
            self._pre = Preprocessor(self.frame_size, rate)
            self._pre.configure(denoise=True, noise_suppress_db=noise_suppress_db)
            if residual_echo_suppression and self._echo is not None:
                self._pre.link_echo(self._echo)
        parts = [f"speex {engine}", f"{rate} Hz", f"{frame_ms} ms frames", f"{filter_ms} ms filter"]
        if self._pre is not None:
            parts.append("+ noise" + (" & residual echo" if residual_echo_suppression and self._echo else ""))
        self.name = ", ".join(parts)

    def process(self, mic: Int16Array, ref: Int16Array) -> Int16Array:
        if self._echo is not None:
            out = self._echo.cancel(mic, ref)
        else:
            assert self._pkg is not None
            out = self._pkg.cancel(mic, ref)
        if self._pre is not None:
            out = self._pre.run(out)
        return out

    def reset(self) -> None:
        if self._echo is not None:
            self._echo.reset()
        if self._pkg is not None:
            self._pkg.reset()

    def close(self) -> None:
        # The preprocessor holds a pointer to the echo state: destroy it first.
        if self._pre is not None:
            self._pre.close()
            self._pre = None
        if self._echo is not None:
            self._echo.close()
            self._echo = None


def make_echo_canceller(device: DeviceSettings, audio: AudioSettings) -> EchoCanceller:
    """The canceller the settings ask for (speex at ``DEVICE_AEC_RATE``, or none)."""
    if not audio.audio_echo_cancellation:
        return NullEchoCanceller(frame_ms=device.device_aec_frame_ms)
    return SpeexEchoCanceller(
        rate=device.device_aec_rate,
        frame_ms=device.device_aec_frame_ms,
        filter_ms=device.device_aec_filter_ms,
        noise_suppression=audio.audio_noise_suppression,
    )


class _Resampler(Protocol):
    def process(self, x: Int16Array) -> Int16Array: ...


class EchoCancellerStream:
    """Runs a frame-synchronous canceller on a stream of arbitrary-length (mic, speaker) blocks.

    Both signals go through identical resamplers (stream rate -> canceller rate) and framers,
    so they stay sample-aligned; the cleaned signal is resampled back to the stream rate.
    48 <-> 16 kHz uses short FIR filters (2 ms in all, see ``fir_resampler``), not soxr (~50 ms).
    ``ref_delay_ms`` delays the reference by a known device latency.
    """

    def __init__(self, canceller: EchoCanceller, stream_rate: int = 48_000, ref_delay_ms: int = 0) -> None:
        self.canceller = canceller
        self.stream_rate = stream_rate
        r = canceller.rate
        self._up: _Resampler
        self._fir: FirDecimator | None = None
        self._soxr: tuple[StreamResampler, StreamResampler] | None = None
        if stream_rate % r == 0:
            factor = stream_rate // r
            self._fir = FirDecimator(factor, channels=2)  # mic and reference in one call
            self._up = FirInterpolator(factor)
        else:  # not an integer ratio: soxr (more latency, see fir_resampler)
            self._soxr = (StreamResampler(stream_rate, r), StreamResampler(stream_rate, r))
            self._up = StreamResampler(r, stream_rate)
        self._pending: Int16Array = np.zeros((2, 0), dtype=np.int16)  # (mic, ref) not yet a full frame
        self._delay = np.zeros(r * ref_delay_ms // 1000, dtype=np.int16)
        self.frames = 0
        self.cpu_s = 0.0  # thread CPU time spent inside the canceller

    def _down(self, mic: Int16Array, ref: Int16Array) -> Int16Array:
        if self._fir is not None:
            return self._fir.process(np.stack([mic, ref]))
        assert self._soxr is not None
        m, r = self._soxr[0].process(mic), self._soxr[1].process(ref)
        n = min(m.size, r.size)  # identical resamplers: identical counts
        return np.stack([m[:n], r[:n]])

    def process(self, mic: Int16Array, ref: Int16Array) -> Int16Array:
        if mic.size != ref.size:
            raise ValueError("mic and reference blocks must have the same length")
        low = self._down(mic, ref)
        if self._delay.size:
            joined = np.concatenate([self._delay, low[1]])
            low[1], self._delay = joined[: low.shape[1]], joined[low.shape[1] :]
        pending = np.concatenate([self._pending, low], axis=1) if self._pending.shape[1] else low
        f = self.canceller.frame_size
        count = pending.shape[1] // f
        if count == 0:
            self._pending = pending
            return np.zeros(0, dtype=np.int16)
        out = np.empty(count * f, dtype=np.int16)
        t0 = time.thread_time()
        for i in range(count):
            s = slice(i * f, (i + 1) * f)
            out[s] = self.canceller.process(pending[0, s], pending[1, s])
        self.cpu_s += time.thread_time() - t0
        self.frames += count
        self._pending = pending[:, count * f :]
        return self._up.process(out)

    def reset(self) -> None:
        self.canceller.reset()

    def close(self) -> None:
        self.canceller.close()
