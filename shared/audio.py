"""Audio helpers used by more than one deployable: PCM conversion, resampling, framing, WAV I/O.

All PCM here is signed 16-bit little-endian mono unless a function says otherwise.
Resampling uses soxr (a real polyphase resampler), never sample dropping.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import wave
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import soxr

if TYPE_CHECKING:  # PyAV only for the type: the AI server uses this module without it
    from av import AudioFrame

Int16Array = npt.NDArray[np.int16]
Float32Array = npt.NDArray[np.float32]

HUB_RATE = 16_000  # what the hub sends to the AI server
WEBRTC_RATE = 48_000  # Opus native rate
FRAME_MS = 20


def samples_per_frame(rate: int, frame_ms: int = FRAME_MS) -> int:
    return rate * frame_ms // 1000


def pcm_to_int16(pcm: bytes) -> Int16Array:
    return np.frombuffer(pcm, dtype="<i2").astype(np.int16, copy=False)


def int16_to_float(x: Int16Array) -> Float32Array:
    return (x.astype(np.float32) / 32768.0).astype(np.float32)


def float_to_int16(x: npt.NDArray[np.floating]) -> Int16Array:
    return np.clip(np.round(x * 32767.0), -32768, 32767).astype(np.int16)


def frame_to_mono(frame: AudioFrame) -> Int16Array:
    """An aiortc/PyAV audio frame (s16 or flt, packed or planar, any channels) as int16 mono.

    aiortc's Opus decoder gives packed stereo s16 at 48 kHz, PCMU/PCMA mono s16 at 8 kHz.
    Channels are averaged. Float samples are scaled by 32768 and clipped: the inverse of
    :func:`int16_to_float` and what FFmpeg's own flt -> s16 conversion does, so a frame gives
    the same samples whether PyAV or this function converts it.
    """
    data: npt.NDArray[Any] = frame.to_ndarray()
    channels = len(frame.layout.channels)
    if channels == 1 and data.dtype == np.int16:
        mono: Int16Array = data.reshape(-1)  # the common mono s16 case: no copy, no float round trip
        return mono
    if channels == 2 and data.dtype == np.int16 and not frame.format.is_planar:
        # aiortc's Opus decoder output, 50 times a second per stream on the hub: the same
        # round-half-even mean in int32, 5x faster than the float path below (issue 21).
        pairs = data.reshape(-1, 2)
        total = pairs[:, 0].astype(np.int32)
        total += pairs[:, 1]
        half = total >> 1
        half += total & half & 1  # an odd sum is a .5 mean: round it to the even neighbour
        stereo_mean: Int16Array = half.astype(np.int16)
        return stereo_mean
    if frame.format.is_planar:
        x = data.reshape(channels, -1).astype(np.float64).mean(axis=0)
    else:
        x = data.reshape(-1, channels).astype(np.float64).mean(axis=1)
    if data.dtype.kind == "f":
        x = x * 32768.0
    out: Int16Array = np.clip(np.round(x), -32768, 32767).astype(np.int16)
    return out


def resample(x: Int16Array, from_rate: int, to_rate: int) -> Int16Array:
    """One-shot resample of a whole buffer (use StreamResampler for a live stream)."""
    if from_rate == to_rate:
        return x
    return np.asarray(soxr.resample(x, from_rate, to_rate), dtype=np.int16)


class StreamResampler:
    """Stateful resampler for a live stream: chunk in, chunk out, no clicks at chunk edges."""

    def __init__(self, from_rate: int, to_rate: int, quality: str = "HQ") -> None:
        self.from_rate = from_rate
        self.to_rate = to_rate
        self._rs = None if from_rate == to_rate else soxr.ResampleStream(
            from_rate, to_rate, 1, dtype="int16", quality=quality
        )

    def process(self, x: Int16Array, last: bool = False) -> Int16Array:
        if self._rs is None:
            return x
        return np.asarray(self._rs.resample_chunk(x, last=last), dtype=np.int16)


class Framer:
    """Cuts an arbitrary stream of samples into fixed-size frames, keeping the remainder."""

    def __init__(self, frame_samples: int) -> None:
        self.frame_samples = frame_samples
        self._buf: Int16Array = np.zeros(0, dtype=np.int16)

    def push(self, x: Int16Array) -> Iterator[Int16Array]:
        self._buf = np.concatenate([self._buf, x]) if self._buf.size else x
        n = self.frame_samples
        while self._buf.size >= n:
            frame, self._buf = self._buf[:n], self._buf[n:]
            yield frame

    def flush(self) -> Int16Array | None:
        """Return the remainder zero-padded to a full frame, or None if empty."""
        if not self._buf.size:
            return None
        out = np.zeros(self.frame_samples, dtype=np.int16)
        out[: self._buf.size] = self._buf
        self._buf = np.zeros(0, dtype=np.int16)
        return out


def drain_chunks(chunks: deque[npt.NDArray[Any]], out: npt.NDArray[Any]) -> int:
    """Move samples from the front of a FIFO of chunks into ``out``; returns how many were moved.

    A partly used chunk keeps its rest at the front. Used by every sample FIFO of the device
    (mic queue, playback buffer, simulated echo path).
    """
    n = out.size
    filled = 0
    while filled < n and chunks:
        head = chunks[0]
        k = min(n - filled, head.size)
        out[filled : filled + k] = head[:k]
        filled += k
        if k == head.size:
            chunks.popleft()
        else:
            chunks[0] = head[k:]
    return filled


def read_wav(path: str | Path) -> tuple[Int16Array, int]:
    """Read a 16-bit WAV as mono int16 (channels averaged) and its sample rate."""
    with wave.open(str(path), "rb") as w:
        if w.getsampwidth() != 2:
            raise ValueError(f"{path}: only 16-bit PCM WAV is supported (got {8 * w.getsampwidth()}-bit)")
        rate, ch = w.getframerate(), w.getnchannels()
        data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    if ch > 1:
        data = data.reshape(-1, ch).mean(axis=1).astype(np.int16)
    return data.astype(np.int16, copy=False), rate


def write_wav(path: str | Path, samples: Int16Array, rate: int) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.asarray(samples, dtype="<i2").tobytes())


def rms_dbfs(x: Int16Array) -> float:
    """RMS level in dBFS (-inf-safe: silence gives -120)."""
    if x.size == 0:
        return -120.0
    rms = float(np.sqrt(np.mean(np.square(x.astype(np.float64)))))
    return -120.0 if rms < 1e-9 else 20.0 * float(np.log10(rms / 32768.0))


def espeak(text: str, rate: int = HUB_RATE, voice: str = "en-us", wpm: int = 160) -> Int16Array:
    """Synthesize test speech with espeak-ng (Debian package), resampled to ``rate``."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise RuntimeError("espeak-ng is not installed (apt-get install espeak-ng)")
    with tempfile.NamedTemporaryFile(suffix=".wav") as f:
        subprocess.run([exe, "-v", voice, "-s", str(wpm), "-w", f.name, text], check=True)
        data, src_rate = read_wav(f.name)
    return resample(data, src_rate, rate)
