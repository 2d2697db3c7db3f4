"""Measuring echo cancellation: a reproducible echo scenario and ERLE, shared by tests and ``bench/aec.py``.

Scenario: far-end speech (the assistant talking) played through a room impulse response into
the mic for ``far_s`` seconds; from ``near_start_s`` a different voice (the user) talks over it
(double talk). ERLE (echo return loss enhancement) = mic power / output power over far-end-only
stretches; near-end preservation = how much of the user's speech survives the canceller.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from device_agent.audio_io.echo_path import synthetic_room_ir
from shared.audio import Int16Array, espeak

FAR_TEXTS = (
    "The weather today is sunny with a light breeze from the west. Tomorrow expect some rain in "
    "the afternoon, and temperatures around fifteen degrees.",
    "I have set a timer for ten minutes. Would you like me to play some music while you wait? "
    "Here is a song you might like.",
)
NEAR_TEXT = "Hey, stop. What time is it in Tokyo?"


@dataclass(frozen=True)
class EchoScenario:
    rate: int
    far: Int16Array  # what the speaker plays (the AEC reference)
    echo: npt.NDArray[np.float64]  # far through the room, as the mic hears it
    near: npt.NDArray[np.float64]  # the user's speech placed on the mic timeline (zeros elsewhere)
    mic: Int16Array  # echo + near + noise
    near_start: int  # sample index where the near-end speech starts
    near_len: int

    def far_only(self, start_s: float, end_s: float) -> slice:
        return slice(int(start_s * self.rate), int(end_s * self.rate))


def fft_convolve(x: npt.NDArray[np.float64], h: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Full linear convolution via one FFT (np.convolve is O(N*L): minutes at 48 kHz)."""
    n = x.size + h.size - 1
    size = 1 << (n - 1).bit_length()
    return np.fft.irfft(np.fft.rfft(x, size) * np.fft.rfft(h, size), size)[:n]


def make_scenario(
    rate: int = 16_000,
    *,
    far_s: float = 20.0,
    near_start_s: float = 15.0,
    rt60_ms: float = 150.0,
    delay_ms: float = 30.0,
    echo_gain: float = 0.5,
    noise_dbfs: float = -80.0,
    seed: int = 1,
) -> EchoScenario:
    rng = np.random.default_rng(seed)
    voice = np.concatenate([espeak(t, rate) for t in FAR_TEXTS])
    reps = int(np.ceil(far_s * rate / voice.size))
    far = np.tile(voice, reps)[: int(far_s * rate)].astype(np.int16)
    ir = np.concatenate([np.zeros(int(rate * delay_ms / 1000)), synthetic_room_ir(rate, rt60_ms, seed=seed)])
    echo = fft_convolve(far.astype(np.float64), ir * echo_gain)[: far.size]
    near_voice = espeak(NEAR_TEXT, rate, voice="en-gb").astype(np.float64)
    start = int(near_start_s * rate)
    near = np.zeros(far.size)
    n = min(near_voice.size, far.size - start)
    near[start : start + n] = near_voice[:n]
    noise = rng.standard_normal(far.size) * 32768.0 * 10 ** (noise_dbfs / 20)
    mic = np.clip(np.round(echo + near + noise), -32768, 32767).astype(np.int16)
    return EchoScenario(rate, far, echo, near, mic, start, n)


def power(x: npt.ArrayLike) -> float:
    a = np.asarray(x, dtype=np.float64)
    return float(np.mean(a * a)) if a.size else 0.0


def erle_db(mic: npt.ArrayLike, out: npt.ArrayLike) -> float:
    """10 log10(P_mic / P_out); large when the output has little echo left."""
    return 10.0 * float(np.log10(max(power(mic), 1e-12) / max(power(out), 1e-12)))


def erle_curve(
    mic: Int16Array, out: Int16Array, rate: int, window_s: float = 0.5
) -> list[tuple[float, float]]:
    """(window end time s, ERLE dB) over consecutive windows: the convergence curve."""
    step = int(window_s * rate)
    return [
        ((i + step) / rate, erle_db(mic[i : i + step], out[i : i + step]))
        for i in range(0, mic.size - step + 1, step)
    ]


def best_lag(out: npt.ArrayLike, ref: npt.ArrayLike, max_lag: int) -> int:
    """The output delay (0..max_lag samples) that best lines ``out`` up with ``ref``."""
    o = np.asarray(out, dtype=np.float64)
    r = np.asarray(ref, dtype=np.float64)
    scores = [float(np.dot(o[lag : lag + r.size], r[: o.size - lag])) for lag in range(max_lag + 1)]
    return int(np.argmax(scores))


@dataclass(frozen=True)
class NearEndReport:
    lag: int  # output delay the canceller added, samples
    correlation: float  # normalised correlation of the output with the near-end speech
    loss_db: float  # near-end energy lost: 10 log10(P_near / P_near-part-of-output)


def near_end_report(sc: EchoScenario, out: Int16Array, max_lag_ms: float = 30.0) -> NearEndReport:
    """How well the user's speech survived double talk (projection of the output onto it)."""
    seg = slice(sc.near_start, sc.near_start + sc.near_len)
    near = sc.near[seg]
    lag = best_lag(out[sc.near_start : sc.near_start + sc.near_len + int(max_lag_ms * sc.rate / 1000)],
                   near, int(max_lag_ms * sc.rate / 1000))
    o = out[sc.near_start + lag : sc.near_start + lag + sc.near_len].astype(np.float64)
    near = near[: o.size]
    corr = float(np.dot(o, near) / np.sqrt(max(np.dot(o, o) * np.dot(near, near), 1e-12)))
    # The part of the output that is the near-end speech: its projection on the clean signal.
    gain = float(np.dot(o, near) / max(np.dot(near, near), 1e-12))
    loss = -20.0 * float(np.log10(max(abs(gain), 1e-6)))
    return NearEndReport(lag, corr, loss)


def run_canceller(
    process: Callable[[Int16Array, Int16Array], Int16Array], sc: EchoScenario, frame: int
) -> tuple[Int16Array, float]:
    """Feed the scenario frame by frame; returns (output, CPU seconds spent in ``process``)."""
    out = np.zeros_like(sc.mic)
    cpu = 0.0
    for i in range(0, sc.mic.size - frame + 1, frame):
        t = time.process_time()
        y = process(sc.mic[i : i + frame], sc.far[i : i + frame])
        cpu += time.process_time() - t
        out[i : i + frame] = y
    return out, cpu
