"""Decoded WebRTC frames -> 16 kHz mono 20 ms frames, whatever layout/format/rate aiortc hands over."""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import threading
from types import SimpleNamespace

import av
import numpy as np
import pytest
from av import AudioFrame

from hub.media_in import AudioIngest, InlineAudioDecoder
from shared.audio import frame_to_mono

pytestmark = pytest.mark.unit


def sine(rate: int, n: int, hz: float = 500.0, amp: float = 0.5) -> np.ndarray:
    return amp * np.sin(2 * np.pi * hz * np.arange(n) / rate)


def test_packed_stereo_s16_like_aiortcs_opus_decoder() -> None:
    x = (sine(48000, 960) * 32767).astype(np.int16)
    inter = np.stack([x, x], axis=1).reshape(1, -1)
    f = AudioFrame.from_ndarray(inter, format="s16", layout="stereo")
    f.sample_rate = 48000
    assert np.array_equal(frame_to_mono(f), x)


def test_packed_stereo_s16_mean_matches_the_float_mean_rounded_half_to_even() -> None:
    """The integer fast path (issue 21) gives the float path's samples, extremes and .5 ties included."""
    rng = np.random.default_rng(21)
    edges = np.array([-32768, -32768, 32767, 32767, -32768, 32767, 1, 2, -1, -2, 3, 0, -3, 0, 1, 0, -1, 0])
    inter = np.concatenate([edges, rng.integers(-32768, 32768, 1920 - edges.size)]).astype(np.int16)
    f = AudioFrame.from_ndarray(inter.reshape(1, -1), format="s16", layout="stereo")
    f.sample_rate = 48000
    expected = np.round(inter.reshape(-1, 2).astype(np.float64).mean(axis=1)).astype(np.int16)
    assert np.array_equal(frame_to_mono(f), expected)


def test_planar_float_and_mono() -> None:
    x = sine(48000, 960).astype(np.float32)
    f = AudioFrame.from_ndarray(np.stack([x, x]), format="fltp", layout="stereo")
    out = frame_to_mono(f)
    assert out.dtype == np.int16 and np.max(np.abs(out.astype(int) - np.round(x * 32768))) <= 1
    m = AudioFrame.from_ndarray((x * 32767).astype(np.int16).reshape(1, -1), format="s16", layout="mono")
    assert frame_to_mono(m).size == 960


@pytest.mark.parametrize(("rate", "per_frame"), [(48000, 960), (8000, 160)])
def test_ingest_makes_320_sample_frames_at_16k(rate: int, per_frame: int) -> None:
    ingest = AudioIngest()
    x = (sine(rate, per_frame * 50) * 32767).astype(np.int16)
    frames = []
    for i in range(50):
        f = AudioFrame.from_ndarray(x[i * per_frame : (i + 1) * per_frame].reshape(1, -1), format="s16",
                                    layout="mono")
        f.sample_rate = rate
        frames += list(ingest.push(f))
    assert all(fr.size == 320 for fr in frames)
    assert 46 <= len(frames) <= 50  # 1 s in, 50 frames minus what the resampler holds back (< 80 ms)
    mid = np.concatenate(frames)[3200:12800].astype(np.float64)
    assert 20 * np.log10(np.sqrt(np.mean(mid**2)) / 32768) == pytest.approx(-9.0, abs=0.5)


def opus_packets(count: int) -> list[bytes]:
    """Real Opus packets of a 440 Hz tone, by aiortc's own encoder (what a device sends)."""
    from aiortc.codecs.opus import OpusEncoder

    encoder = OpusEncoder()
    tone = (sine(48000, 960 * count, hz=440.0) * 16000).astype(np.int16)
    packets: list[bytes] = []
    for i in range(count):
        f = AudioFrame.from_ndarray(tone[i * 960:(i + 1) * 960].reshape(1, -1), format="s16", layout="mono")
        f.sample_rate = 48000
        f.pts = i * 960
        f.time_base = fractions.Fraction(1, 48000)
        packets += encoder.encode(f)[0]
    return packets


async def test_inline_decoder_gives_the_frames_aiortcs_decoder_thread_would() -> None:
    """decode_audio_inline's stand-in (issue 21): the same decoded frames on the track's queue, a
    corrupt packet logged and flagged without losing the stream, and the stop releases the thread."""
    from aiortc.codecs.opus import OpusDecoder
    from aiortc.jitterbuffer import JitterFrame
    from aiortc.rtcrtpparameters import RTCRtpCodecParameters

    codec = RTCRtpCodecParameters(mimeType="audio/opus", clockRate=48000, channels=2, payloadType=111)
    track = SimpleNamespace(_queue=asyncio.Queue())
    error = threading.Event()
    inline = InlineAudioDecoder(SimpleNamespace(_track=track), error)
    reference = OpusDecoder()
    packets = opus_packets(10)
    packets.insert(5, b"\xff" * 3)  # not Opus
    expected: list[AudioFrame] = []
    for i, data in enumerate(packets):
        inline.put((codec, JitterFrame(data=data, timestamp=i * 960)))
        with contextlib.suppress(av.FFmpegError):
            expected += [f for f in reference.decode(JitterFrame(data=data, timestamp=i * 960))
                         if isinstance(f, AudioFrame)]
    got = [track._queue.get_nowait() for _ in range(track._queue.qsize())]
    assert len(got) == len(expected) == inline.frames == 10 and error.is_set()
    assert all(np.array_equal(g.to_ndarray(), e.to_ndarray()) for g, e in zip(got, expected, strict=True))
    # The receiver's decoder thread waits in get() until the receiver stops (put(None)).
    waiter = threading.Thread(target=inline.get)
    waiter.start()
    waiter.join(0.05)
    assert waiter.is_alive()
    inline.put(None)
    waiter.join(1)
    assert not waiter.is_alive()
