"""The audio path: playback jitter buffer, mic buffer, volume/mute, and echo cancellation end to end."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from device_agent.aec import NullEchoCanceller, SpeexEchoCanceller
from device_agent.aec_eval import erle_db
from device_agent.audio_io import EchoPath, MemoryAudioBackend
from device_agent.audio_pipeline import AudioPipeline, MicBuffer, PlaybackBuffer
from shared.audio import Int16Array, espeak

pytestmark = pytest.mark.unit


def test_playback_waits_for_the_prebuffer_then_plays_in_order() -> None:
    pb = PlaybackBuffer(48_000, prebuffer_ms=40, max_ms=400)
    pb.push(np.arange(1, 961, dtype=np.int16))  # 20 ms: not enough yet
    assert not pb.pull(480).any()
    pb.push(np.arange(961, 1921, dtype=np.int16))
    assert np.array_equal(pb.pull(480), np.arange(1, 481))
    assert np.array_equal(pb.pull(480), np.arange(481, 961))
    rest = pb.pull(1440)  # 960 left: underrun, padded with silence
    assert np.array_equal(rest[:960], np.arange(961, 1921)) and not rest[960:].any()
    assert pb.underruns == 1


def test_playback_drops_the_oldest_beyond_its_cap() -> None:
    pb = PlaybackBuffer(1000, prebuffer_ms=0, max_ms=100)
    pb.push(np.arange(150, dtype=np.int16))
    assert pb.buffered_ms == 100 and pb.dropped_samples == 50
    assert pb.pull(1)[0] == 50


async def test_mic_buffer_hands_audio_from_another_thread_to_asyncio() -> None:
    mb = MicBuffer(48_000)
    t = threading.Timer(0.05, lambda: mb.push(np.ones(960, np.int16)))
    t.start()
    got = await mb.read(960, 1.0)
    assert got is not None and got.size == 960
    assert await mb.read(960, 0.05) is None


def test_mic_buffer_is_bounded() -> None:
    mb = MicBuffer(1000, max_ms=100)
    mb.push(np.arange(250, dtype=np.int16))
    assert mb.buffered_ms == 100 and mb.dropped_samples == 150


def test_mic_buffer_keeps_what_an_audio_clock_catches_up_after_a_stall() -> None:
    # The reader stalled 400 ms while the audio clock ran on: all of it is still sent, in order.
    mb = MicBuffer(48_000)
    speech = np.arange(48_000 * 400 // 1000, dtype=np.int16)
    for block in np.split(speech, 40):  # 10 ms blocks, back to back
        mb.push(block)
    frames = [mb.take_nowait(960) for _ in range(20)]
    assert mb.dropped_samples == 0 and all(f is not None for f in frames)
    assert np.array_equal(np.concatenate([f for f in frames if f is not None]), speech)


class Recording:
    name = "rec"

    def __init__(self) -> None:
        self.rate, self.frame_size = 48_000, 480
        self.refs: list[Int16Array] = []

    def process(self, mic: Int16Array, ref: Int16Array) -> Int16Array:
        self.refs.append(ref)
        return mic

    def reset(self) -> None:
        pass

    def close(self) -> None:
        pass


def test_reference_is_exactly_what_the_speaker_plays_after_volume() -> None:
    rec = Recording()
    p = AudioPipeline(rec)
    p.volume = 50
    p.playback.push(np.full(4800, 1000, np.int16))
    played = [p.duplex(np.zeros(480, np.int16)) for _ in range(5)]
    assert all((b == 500).all() for b in played)
    assert all(np.array_equal(r, b) for r, b in zip(rec.refs, played, strict=True))
    with pytest.raises(ValueError):
        p.volume = 101


async def test_mute_sends_silence_but_keeps_cancelling() -> None:
    p = AudioPipeline(NullEchoCanceller())
    p.mic_muted = True
    p.duplex(np.full(480, 999, np.int16))
    got = await p.mic_out.read(480, 0.1)
    assert got is not None and not got.any()
    p.mic_muted = False
    p.duplex(np.full(480, 999, np.int16))
    got = await p.mic_out.read(480, 0.1)
    assert got is not None and (got == 999).all()


def test_assistant_voice_is_cancelled_and_the_user_is_heard() -> None:
    """Whole duplex path at 48 kHz: hub audio -> speaker -> simulated room -> mic -> AEC -> WebRTC side."""
    rate = 48_000
    backend = MemoryAudioBackend(echo_path=EchoPath(delay_ms=30, gain=0.5, rt60_ms=120))
    pipeline = AudioPipeline(SpeexEchoCanceller(noise_suppression=True))
    voice = np.concatenate(
        [espeak("Here is the weather for today. It will be sunny and warm, with a light breeze.", rate),
         espeak("Your timer is set for ten minutes, and I will remind you when it is done.", rate)]
    )
    far = np.tile(voice, 3)[: 16 * rate]
    sent: list[Int16Array] = []
    pos = 0

    def step(seconds: float) -> None:
        nonlocal pos
        for _ in range(int(seconds * 100)):
            if pipeline.playback.buffered_ms < 100 and pos < far.size:  # the hub's 20 ms packets
                pipeline.playback.push(far[pos : pos + 960])
                pos += 960
            backend.run_blocks(pipeline.duplex, 1)
            while (chunk := pipeline.mic_out.take_nowait(480)) is not None:
                sent.append(chunk)

    step(12.0)  # converge on the assistant's voice alone
    raw = backend.mic_audio()[-3 * rate :]
    out = np.concatenate(sent)[-3 * rate :]
    assert erle_db(raw, out) >= 20.0
    # The user talks over the assistant: their speech must come through.
    user = espeak("Stop. What time is it?", rate, voice="en-gb")
    backend.play_into_mic(user, rate)
    n0 = len(sent)
    step(user.size / rate + 0.1)
    heard = np.concatenate(sent[n0:])
    echo_only = np.concatenate(sent[n0 - 150 : n0])
    assert erle_db(user, heard[: user.size]) < 6.0  # user's level within 6 dB
    assert erle_db(heard, echo_only) > 15.0  # far above the residual echo
    pipeline.close()


async def test_mic_buffer_read_times_out_cleanly() -> None:
    mb = MicBuffer()
    assert await asyncio.wait_for(mb.read(10, 0.01), 1.0) is None
