"""Whisper-style log-mel features in numpy: what Smart Turn v3's Whisper encoder was trained on.

80 Slaney mel bands from a 400-point periodic-Hann STFT (hop 160, centred with reflect padding) of
16 kHz audio, log10, floored 8 decades below the peak, scaled by (x + 4) / 4, the last frame dropped:
8 s of audio give [80, 800]. Like transformers' WhisperFeatureExtractor with ``do_normalize=True``
(which Smart Turn uses), the waveform is first scaled to zero mean and unit variance. The test
checks the output against faster-whisper's FeatureExtractor, which implements the same recipe.
The hub has neither transformers nor torch, and this is ~40 lines.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import sliding_window_view

RATE: Final = 16_000
N_FFT: Final = 400
HOP: Final = 160
N_MELS: Final = 80
WINDOW_S: Final = 8
WINDOW_SAMPLES: Final = RATE * WINDOW_S  # 128 000 samples -> 800 frames

Float32Array = npt.NDArray[np.float32]


def _slaney_mel_filters() -> npt.NDArray[np.float64]:
    """[N_MELS, N_FFT // 2 + 1] triangular filters on the Slaney mel scale, area-normalised."""
    f_sp = 200.0 / 3  # linear part: 3 mels per 200 Hz up to 1 kHz, logarithmic above
    min_log_hz, min_log_mel, logstep = 1000.0, 15.0, np.log(6.4) / 27.0
    max_mel = min_log_mel + np.log(RATE / 2 / min_log_hz) / logstep
    mels = np.linspace(0.0, max_mel, N_MELS + 2)
    freqs = np.where(mels >= min_log_mel, min_log_hz * np.exp(logstep * (mels - min_log_mel)), f_sp * mels)
    fft_freqs = np.fft.rfftfreq(N_FFT, 1.0 / RATE)
    ramps = freqs[:, None] - fft_freqs[None, :]
    fdiff = np.diff(freqs)
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights: npt.NDArray[np.float64] = np.maximum(0.0, np.minimum(lower, upper))
    return weights * (2.0 / (freqs[2:] - freqs[:-2]))[:, None]


_FILTERS: Final = _slaney_mel_filters()
_HANN: Final = np.hanning(N_FFT + 1)[:-1]  # periodic, as torch.hann_window


def last_window(
    audio: npt.NDArray[np.floating] | npt.NDArray[np.integer], samples: int = WINDOW_SAMPLES
) -> Float32Array:
    """The last ``samples`` of ``audio`` as float32 in [-1, 1), zero-padded on the left when shorter."""
    x = np.asarray(audio)
    if np.issubdtype(x.dtype, np.integer):
        x = x.astype(np.float32) / 32768.0
    x = x[-samples:].astype(np.float32, copy=False)
    if x.size < samples:
        x = np.concatenate([np.zeros(samples - x.size, dtype=np.float32), x])
    return x


def log_mel(audio: Float32Array) -> Float32Array:
    """[N_MELS, len(audio) // HOP] features of 16 kHz float audio (Smart Turn: 8 s -> [80, 800])."""
    if audio.ndim != 1 or audio.size < N_FFT:
        raise ValueError(f"log_mel needs 1-D audio of at least {N_FFT} samples, got shape {audio.shape}")
    x = (audio - audio.mean()) / np.sqrt(audio.var() + 1e-7)  # do_normalize, in float32 as the reference
    padded = np.pad(x.astype(np.float64), N_FFT // 2, mode="reflect")
    frames = sliding_window_view(padded, N_FFT)[::HOP]
    power = np.abs(np.fft.rfft(frames * _HANN, axis=-1)) ** 2  # [frames, bins]
    mel = np.log10(np.maximum(_FILTERS @ power.T, 1e-10))[:, :-1]
    mel = np.maximum(mel, mel.max() - 8.0)
    out: Float32Array = ((mel + 4.0) / 4.0).astype(np.float32)
    return out
