"""Clips for ``media/request`` recordings (spec §8.6): the echo-cancelled microphone as Opus/WAV, the camera as WebM.

Audio is taken from the pipeline's mic path after echo cancellation and mute (a tap, so the
WebRTC stream is untouched) and is complete when enough samples arrived on the sound card's
clock: no timers. Video samples the camera's current view at its frame rate (the track's own
frames when it runs) and encodes VP8 in WebM, the format the AI server checks and stores.
"""

from __future__ import annotations

import asyncio
import io
import threading
import wave
from collections.abc import Callable
from dataclasses import dataclass

import av
import numpy as np

from device_agent.camera import Camera
from shared.audio import Int16Array

AUDIO_FORMATS = ("opus", "wav")
VIDEO_FORMATS = ("webm",)


class RecordingFailed(Exception):
    """The clip cannot be made (one line: no microphone, camera off, stalled sound card...)."""


@dataclass(frozen=True)
class Clip:
    data: bytes
    media_type: str  # "audio" or "video"
    format: str
    duration_ms: int
    sample_rate: int | None = None
    width: int | None = None
    height: int | None = None


class AudioTap:
    """Collects ``samples`` samples of the mic path (fed from the audio thread), then sets ``done``."""

    def __init__(self, samples: int, loop: asyncio.AbstractEventLoop) -> None:
        self.samples = samples
        self._chunks: list[Int16Array] = []
        self._have = 0
        self._lock = threading.Lock()
        self._loop = loop
        self.done = asyncio.Event()

    def __call__(self, block: Int16Array) -> None:
        with self._lock:
            if self._have >= self.samples:
                return
            self._chunks.append(block.copy())
            self._have += block.size
            full = self._have >= self.samples
        if full:
            self._loop.call_soon_threadsafe(self.done.set)

    def audio(self) -> Int16Array:
        with self._lock:
            joined = np.concatenate(self._chunks) if self._chunks else np.zeros(0, dtype=np.int16)
        return joined[: self.samples]


async def record_audio(
    taps: list[Callable[[Int16Array], None]], rate: int, duration_s: float, fmt: str, *, stall_s: float = 2.0
) -> Clip:
    """``duration_s`` of the mic path; RecordingFailed if the sound card stops delivering."""
    tap = AudioTap(round(duration_s * rate), asyncio.get_running_loop())
    taps.append(tap)
    try:
        async with asyncio.timeout(duration_s + stall_s):
            await tap.done.wait()
    except TimeoutError:
        raise RecordingFailed("the microphone delivered no audio in time") from None
    finally:
        taps.remove(tap)
    pcm = tap.audio()
    data = await asyncio.to_thread(encode_opus if fmt == "opus" else encode_wav, pcm, rate)
    return Clip(data, "audio", fmt, round(1000 * pcm.size / rate), sample_rate=rate)


def encode_wav(pcm: Int16Array, rate: int) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.astype("<i2").tobytes())
    return buf.getvalue()


def encode_opus(pcm: Int16Array, rate: int, bitrate: int = 32_000) -> bytes:
    """Opus in Ogg (what a voice message is; the AI server transcribes it)."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="ogg") as out:
        stream = out.add_stream("libopus", rate=rate, layout="mono")
        stream.bit_rate = bitrate
        step = rate // 50
        for start in range(0, pcm.size, step):
            frame = av.AudioFrame.from_ndarray(pcm[start : start + step].reshape(1, -1), format="s16", layout="mono")
            frame.sample_rate = rate
            frame.pts = start
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return buf.getvalue()


async def record_video(camera: Camera, duration_s: float, bitrate: int) -> Clip:
    """``duration_s`` of the camera at its frame rate, VP8 in WebM; CameraOff propagates."""
    fps = camera.fps
    count = max(1, round(duration_s * fps))
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    frames = []
    for n in range(count):
        wait = t0 + n / fps - loop.time()
        if wait > 0:
            await asyncio.sleep(wait)  # real time: a clip of N seconds takes N seconds
        frames.append(await camera.current())
    data = await asyncio.to_thread(encode_webm, frames, fps, bitrate)
    return Clip(data, "video", "webm", round(1000 * count / fps), width=camera.width, height=camera.height)


def encode_webm(frames: list[av.VideoFrame], fps: int, bitrate: int) -> bytes:
    buf = io.BytesIO()
    with av.open(buf, "w", format="webm") as out:
        stream = out.add_stream("libvpx", rate=fps)
        stream.width, stream.height = frames[0].width, frames[0].height
        stream.pix_fmt = "yuv420p"
        stream.bit_rate = bitrate
        for n, frame in enumerate(frames):
            f = frame.reformat(format="yuv420p")
            f.pts = n
            out.mux(stream.encode(f))
        out.mux(stream.encode(None))
    return buf.getvalue()
