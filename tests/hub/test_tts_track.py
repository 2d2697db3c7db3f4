"""The outbound TTS track: any rate in, 48 kHz 20 ms stereo frames out, paced, flushable."""

from __future__ import annotations

import asyncio
import itertools

import numpy as np
import pytest
from av import AudioFrame

from hub.tts_track import (
    FRAME_SAMPLES,
    IDLE_PACKET_FRAMES,
    IDLE_TAIL_FRAMES,
    GapTolerantOpusEncoder,
    TtsTrack,
    opus_silence_packet,
)
from shared.audio import rms_dbfs

pytestmark = pytest.mark.unit


def tone_pcm(rate: int, seconds: float, hz: float = 440.0) -> bytes:
    t = np.arange(int(rate * seconds)) / rate
    return (0.5 * 32767 * np.sin(2 * np.pi * hz * t)).astype("<i2").tobytes()


class FakeTime:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, s: float) -> None:
        self.slept.append(s)
        self.now += s


class YieldingTime(FakeTime):
    """FakeTime whose sleep also lets other tasks run, as a real sleep does."""

    async def sleep(self, s: float) -> None:
        await super().sleep(s)
        await asyncio.sleep(0)


def drain(track: TtsTrack) -> list[np.ndarray]:
    out = []
    while (f := track.next_frame()) is not None:
        out.append(f)
    return out


@pytest.mark.parametrize("rate", [8000, 16000, 22050, 24000, 44100, 48000])
def test_any_rate_becomes_48k_frames_of_the_same_duration(rate: int) -> None:
    track = TtsTrack()
    assert track.push(tone_pcm(rate, 1.0), rate)
    track.end_reply()
    frames = drain(track)
    assert all(f.size == FRAME_SAMPLES for f in frames)
    assert len(frames) == pytest.approx(50, abs=1)
    audio = np.concatenate(frames)
    assert rms_dbfs(audio[4800:-4800]) > -12  # a 0.5-amplitude sine is ~ -9 dBFS
    # The pitch survived resampling: dominant frequency 440 Hz.
    spectrum = np.abs(np.fft.rfft(audio[:48000].astype(np.float64)))
    assert abs(np.argmax(spectrum) * 48000 / 48000 - 440) <= 2
    assert not track.playing


def test_playing_flag_and_flush() -> None:
    track = TtsTrack()
    assert not track.playing
    track.push(tone_pcm(22050, 2.0), 22050)
    assert track.playing and track.buffered_s > 1.9
    track.next_frame()
    dropped = track.flush()
    assert dropped > 0 and not track.playing and track.buffered_samples == 0
    assert track.next_frame() is None  # silence at once


def test_reply_open_until_is_final_even_when_buffer_runs_dry() -> None:
    track = TtsTrack()
    track.push(tone_pcm(16000, 0.1), 16000)
    drain(track)
    assert track.playing  # between sentences: the reply is still coming
    track.end_reply()
    drain(track)
    assert not track.playing


def test_short_remainder_is_held_briefly_then_padded() -> None:
    track = TtsTrack()
    track.push(np.ones(500, dtype="<i2").tobytes(), 48000)
    assert track.next_frame() is None
    assert track.next_frame() is None
    f = track.next_frame()
    assert f is not None and np.count_nonzero(f) == 500
    assert track.buffered_samples == 0


def test_cap_refuses_audio_beyond_the_buffer_limit() -> None:
    track = TtsTrack(max_buffer_s=1.0)
    assert track.push(tone_pcm(48000, 0.8), 48000)
    assert not track.push(tone_pcm(48000, 0.8), 48000)
    assert track.buffered_s == pytest.approx(0.8)


async def test_recv_is_paced_in_real_time_and_reports_playout_latency() -> None:
    t = FakeTime()
    latencies: list[float] = []
    track = TtsTrack(clock=t.clock, sleep=t.sleep, on_playout=lambda at, lat: latencies.append(lat))
    first = await track.recv()
    assert first.sample_rate == 48000 and first.samples == FRAME_SAMPLES and first.layout.name == "stereo"
    assert first.pts == 0
    t.now += 0.005
    track.push(tone_pcm(24000, 0.2), 24000, received_at=t.now)
    frames = [await track.recv() for _ in range(10)]
    assert [f.pts for f in frames] == [960 * (i + 1) for i in range(10)]
    # Each recv waited until its pts was due, 20 ms apart on the injected clock, except the reply's
    # second frame, which follows its first at once (the track runs a frame ahead during a reply).
    assert t.now == pytest.approx(100.0 + 9 * 0.02)
    assert latencies and latencies[0] == pytest.approx(0.015)
    pcm = np.frombuffer(bytes(frames[1].planes[0]), dtype="<i2").reshape(-1, 2)
    assert np.array_equal(pcm[:, 0], pcm[:, 1]) and rms_dbfs(pcm[:, 0]) > -12


async def test_recv_reanchors_after_a_stall_instead_of_bursting() -> None:
    t = FakeTime()
    track = TtsTrack(clock=t.clock, sleep=t.sleep)
    await track.recv()
    t.now += 1.0  # the event loop was stuck for a second
    await track.recv()
    t.slept.clear()
    await track.recv()
    assert t.slept == [pytest.approx(0.02)]


async def test_stopped_track_raises() -> None:
    from aiortc.mediastreams import MediaStreamError

    track = TtsTrack()
    track.stop()
    with pytest.raises(MediaStreamError):
        await track.recv()


def test_the_earcon_is_mixed_in_without_counting_as_a_reply() -> None:
    """Issue 19: the wake word's earcon (100-150 ms) plays over silence or a reply; it is not reply
    audio, so the user's next words are not taken for a barge-in and a flush leaves it alone."""
    from hub.tts_track import EARCON_S, FRAME_SAMPLES, TtsTrack, make_earcon

    track = TtsTrack()
    track.play_earcon()
    assert not track.playing and track.earcon_playing
    assert track.flush() == 0 and track.earcon_playing
    frames = []
    while track.earcon_playing:
        frames.append(track.next_frame())
    assert all(f is not None for f in frames)
    assert len(frames) == -(-make_earcon().size // FRAME_SAMPLES) and 0.1 <= EARCON_S <= 0.15
    assert track.next_frame() is None  # back to silence


async def test_an_idle_track_sends_one_opus_silence_packet_per_400_ms_once_the_encoder_has_heard_silence() -> None:
    """issue 21: idle frames skip aiortc's audio-level scan, executor hop and Opus encode, and all but
    one in IDLE_PACKET_FRAMES are not sent at all (as Opus DTX) after a tail of IDLE_TAIL_FRAMES sent on
    every tick (it pushes the end of a reply out of the device's jitter buffer); a reply goes out on
    the next tick."""
    t = YieldingTime()
    track = TtsTrack(clock=t.clock, sleep=t.sleep)
    track.opus_silence = True
    first = await track.recv()
    assert isinstance(first, AudioFrame) and first.pts == 0  # the encoder hears one silent frame first
    idle = [await track.recv() for _ in range(IDLE_TAIL_FRAMES + 2)]
    assert {type(f).__name__ for f in idle} == {"Packet"}
    tail = [FRAME_SAMPLES * i for i in range(1, IDLE_TAIL_FRAMES + 1)]
    sparse = [FRAME_SAMPLES * (IDLE_TAIL_FRAMES + IDLE_PACKET_FRAMES * i) for i in (1, 2)]  # 400 ms apart
    assert [f.pts for f in idle] == tail + sparse
    assert bytes(idle[-1]) == opus_silence_packet() and 0 < len(opus_silence_packet()) < 10
    assert t.now - 100.0 == pytest.approx((IDLE_TAIL_FRAMES + 2 * IDLE_PACKET_FRAMES) * 0.02)
    assert track.packets_skipped == 2 * (IDLE_PACKET_FRAMES - 1)
    waiting = asyncio.ensure_future(track.recv())  # idle: frames tick by unsent
    for _ in range(5):
        await asyncio.sleep(0)
    assert not waiting.done()
    track.push(tone_pcm(48_000, 0.04), 48_000)
    track.end_reply()
    out = [await waiting] + [await track.recv() for _ in range(2)]
    assert [type(f).__name__ for f in out] == ["AudioFrame", "AudioFrame", "AudioFrame"]
    assert [f.pts for f in out] == [out[0].pts + FRAME_SAMPLES * i for i in range(3)]  # one clock throughout
    assert out[0].pts % FRAME_SAMPLES == 0 and track.audio_frames_out == 2


async def test_the_encoder_stamps_packets_with_their_frame_time_across_skipped_frames() -> None:
    """aiortc's encoder would stamp the first packet after a run of pre-encoded silence with a stale time."""
    t = FakeTime()
    track = TtsTrack(clock=t.clock, sleep=t.sleep)
    track.opus_silence = True
    encoder = GapTolerantOpusEncoder()
    stamps = []
    for i in range(60):
        if i == IDLE_TAIL_FRAMES + 3:
            track.push(tone_pcm(48_000, 0.1), 48_000)
        item = await track.recv()
        if isinstance(item, AudioFrame):
            payloads, ts = encoder.encode(item)
            assert payloads
            stamps.append(ts)
        else:
            assert encoder.pack(item)[1] == item.pts
            stamps.append(item.pts)
    # Silence: every frame for the tail, then 400 ms apart; then the reply and the tail after it on
    # every frame, then 400 ms apart again.
    t0 = IDLE_TAIL_FRAMES + 1
    assert stamps[:t0] == [FRAME_SAMPLES * i for i in range(t0)]
    assert stamps[t0 : t0 + 2] == [FRAME_SAMPLES * (IDLE_TAIL_FRAMES + IDLE_PACKET_FRAMES * i) for i in (1, 2)]
    reply = t0 + 2
    n = 5 + 1 + IDLE_TAIL_FRAMES  # 5 of tone, the encoded silence, the tail
    assert stamps[reply : reply + n] == [stamps[reply] + FRAME_SAMPLES * i for i in range(n)]
    assert all(b - a == FRAME_SAMPLES * IDLE_PACKET_FRAMES for a, b in itertools.pairwise(stamps[reply + n - 1 :]))


async def test_with_the_senders_encoder_the_track_hands_aiortc_opus_packets_it_encoded_itself() -> None:
    """issue 21: reply frames are encoded on the loop (no executor hop per frame), on one RTP clock,
    and decode to the reply."""
    from aiortc.codecs.opus import OpusDecoder
    from aiortc.jitterbuffer import JitterFrame

    t = FakeTime()
    track = TtsTrack(clock=t.clock, sleep=t.sleep)
    track.opus_silence = True
    track.encoder = GapTolerantOpusEncoder()
    track.push(tone_pcm(48_000, 0.2), 48_000)
    track.end_reply()
    out = [await track.recv() for _ in range(14)]  # 10 of tone, the encoded silence, the tail
    assert {type(p).__name__ for p in out} == {"Packet"}
    assert [p.pts for p in out] == [FRAME_SAMPLES * i for i in range(14)]
    decoder = OpusDecoder()
    decoded = [decoder.decode(JitterFrame(data=bytes(p), timestamp=p.pts)) for p in out]
    levels = [rms_dbfs(np.frombuffer(bytes(f[0].planes[0]), dtype=np.int16)) for f in decoded]
    assert min(levels[1:10]) > -20 and max(levels[12:]) < -60  # the tone, then silence
    assert track.audio_frames_out == 10


async def test_a_reply_pushed_into_an_idle_track_goes_out_at_once_and_one_frame_ahead_until_it_ends() -> None:
    """Issue 20: the idle track's tick sleep ends at the push (not ~10 ms later on average) and the
    second frame follows the first at once, so a receiver's 40 ms prebuffer fills ~20 ms sooner;
    the lead is given back in the silence after the reply, and the RTP clock never skips."""
    t = YieldingTime()
    sleeping = asyncio.Event()

    async def sleep(s: float) -> None:
        sleeping.set()
        if s > 0.015:  # the idle tick: long enough for the push below to land inside it
            await asyncio.sleep(0.05)
        await t.sleep(s)

    track = TtsTrack(clock=t.clock, sleep=sleep)
    assert (await track.recv()).pts == 0
    waiting = asyncio.ensure_future(track.recv())
    await asyncio.wait_for(sleeping.wait(), 1)
    t.now += 0.007  # 7 ms into the 20 ms tick
    track.push(tone_pcm(48_000, 0.1), 48_000, received_at=t.now)
    track.end_reply()
    first = await waiting
    assert t.now == pytest.approx(100.007) and track.early_starts == 1  # sent at the push, not at 100.02
    second = await track.recv()
    assert t.now == pytest.approx(100.007)  # at once: one frame ahead
    rest = [await track.recv() for _ in range(3)]
    assert t.now == pytest.approx(100.007 + 3 * 0.02)
    assert [f.pts for f in [first, second, *rest]] == [FRAME_SAMPLES * i for i in range(1, 6)]
    silence = await track.recv()  # the reply is over: silence, and the lead given back
    assert silence.pts == 6 * FRAME_SAMPLES and rms_dbfs(np.frombuffer(bytes(silence.planes[0]), "<i2")) < -90
    before = t.now
    await track.recv()
    assert t.now - before == pytest.approx(0.04)
    await track.recv()
    assert t.now - before == pytest.approx(0.06)  # back on the 20 ms clock


async def test_without_a_lead_a_reply_still_starts_at_the_push_but_its_frames_keep_their_ticks() -> None:
    """A browser's track (lead_frames=0, hub/session.py): a burst would raise the browser's adaptive
    jitter buffer's delay target (bench/browser_playout.py), so only the first frame is early."""
    t = YieldingTime()
    sleeping = asyncio.Event()

    async def sleep(s: float) -> None:
        sleeping.set()
        if s > 0.015:
            await asyncio.sleep(0.05)
        await t.sleep(s)

    track = TtsTrack(clock=t.clock, sleep=sleep, lead_frames=0)
    await track.recv()
    waiting = asyncio.ensure_future(track.recv())
    await asyncio.wait_for(sleeping.wait(), 1)
    t.now += 0.007
    track.push(tone_pcm(48_000, 0.1), 48_000, received_at=t.now)
    track.end_reply()
    await waiting
    assert t.now == pytest.approx(100.007) and track.early_starts == 1  # sent at the push
    await track.recv()
    assert t.now == pytest.approx(100.027)  # the second frame on its own tick, 20 ms later
    rest = [await track.recv() for _ in range(4)]
    assert t.now == pytest.approx(100.007 + 5 * 0.02) and len(rest) == 4
    await track.recv()  # silence after the reply: nothing to give back
    assert t.now == pytest.approx(100.007 + 6 * 0.02)
