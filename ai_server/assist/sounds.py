"""The alarm sound: a soft two-tone chime, made with numpy (nothing to ship or license).

Two bell-like notes (A5 then E6, a fifth apart) with a fast attack and an exponential decay,
played twice. Its two pure tones are what the end-to-end test looks for with an FFT in the
device's speaker audio (:data:`CHIME_TONES_HZ`).
"""

from __future__ import annotations

import functools
from typing import Final

import numpy as np
import numpy.typing as npt

CHIME_TONES_HZ: Final = (880.0, 1318.5)
NOTE_S: Final = 0.35
REPEATS: Final = 2
GAP_S: Final = 0.15
PEAK: Final = 0.5  # of full scale: a chime, not a fire alarm


def _note(freq: float, rate: int) -> npt.NDArray[np.float64]:
    t = np.arange(int(NOTE_S * rate)) / rate
    attack = np.minimum(1.0, t / 0.005)  # 5 ms: no click
    decay = np.exp(-t * 6.0)
    # A quiet octave partial makes it sound like a bell rather than a test tone.
    wave = np.sin(2 * np.pi * freq * t) + 0.2 * np.sin(2 * np.pi * 2 * freq * t)
    out: npt.NDArray[np.float64] = wave * attack * decay / 1.2
    return out


@functools.lru_cache(maxsize=8)
def chime(rate: int) -> bytes:
    """The chime as 16-bit little-endian mono PCM at ``rate`` Hz (cached per rate)."""
    gap = np.zeros(int(GAP_S * rate))
    one = np.concatenate([_note(CHIME_TONES_HZ[0], rate), _note(CHIME_TONES_HZ[1], rate), gap])
    audio = np.tile(one, REPEATS) * PEAK
    return (np.clip(audio, -1.0, 1.0) * 32767).astype("<i2").tobytes()


def seconds(pcm: bytes, rate: int) -> float:
    """Duration of 16-bit mono PCM."""
    return len(pcm) / 2 / rate
