"""A device session's routing logic with a fake AI link: uplink messages, barge-in, reply demux.

The peer connection is real but never negotiated; frames are fed straight into the session.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pytest
from aiortc import RTCPeerConnection

from hub.ai_link import Outbound
from hub.metrics import HubMetrics
from hub.session import DeviceSession
from hub.turns import TurnLog
from shared.config import HubSettings, load
from shared.contract import pb

pytestmark = pytest.mark.unit


class Scripted:
    def is_speech(self, frame: np.ndarray) -> bool:
        return bool(frame[1] != 0)

    def reset(self) -> None:
        pass


@dataclass
class FakeLink:
    connected: bool = True
    generation: int = 1
    sent: list[Outbound] = field(default_factory=list)

    def generation_of(self, device_id: str) -> int:
        return self.generation

    def send(self, item: Outbound) -> bool:
        if not self.connected:
            return False
        self.sent.append(item)
        item_time = 1.0
        if item.on_sent is not None:
            item.on_sent(item_time)
        return True


@dataclass
class FakeHost:
    settings: HubSettings = field(default_factory=lambda: load(HubSettings))
    link: FakeLink = field(default_factory=FakeLink)
    metrics: HubMetrics = field(default_factory=HubMetrics)
    turns: TurnLog = field(default_factory=TurnLog)
    closed: list[DeviceSession] = field(default_factory=list)
    seq: int = 0

    def next_sequence(self, device_id: str) -> int:
        self.seq += 1
        return self.seq

    def make_detector(self) -> Scripted:
        return Scripted()

    def session_closed(self, session: DeviceSession) -> None:
        self.closed.append(session)


def frame(voiced: bool) -> np.ndarray:
    f = np.full(320, 7, dtype=np.int16)
    f[1] = 1 if voiced else 0
    return f


@pytest.fixture
async def session() -> Iterator[tuple[DeviceSession, FakeHost]]:
    host = FakeHost()
    s = DeviceSession("pi-1", RTCPeerConnection(), host)  # type: ignore[arg-type]
    yield s, host
    await s.close("test")


def feed(s: DeviceSession, pattern: str, t0: float = 10.0) -> None:
    for i, c in enumerate(pattern):
        s.process_frame(frame(c == "1"), t0 + i * 0.02)


def events(host: FakeHost) -> list[int]:
    return [o.msg.event for o in host.link.sent]


async def test_utterance_goes_upstream_with_the_wire_conventions(session) -> None:  # type: ignore[no-untyped-def]
    s, host = session
    feed(s, "0" * 20 + "111" + "1" * 7 + "0" * 15)
    assert events(host) == [pb.START] + [pb.CONTINUE] * 22 + [pb.END]
    start = host.link.sent[0].msg
    assert start.codec == pb.PCM_S16LE and start.sample_rate == 16000 and start.chunk_duration_ms == 20
    assert len(start.audio_pcm) == 13 * 640  # 200 ms pre-roll + 3 onset frames
    assert start.timestamp_ms == int((10.0 + 10 * 0.02) * 1000)  # capture of its first frame
    assert start.conversation_id == s.conversation_id and start.conversation_id.startswith("pi-1-")
    assert all(len(o.msg.audio_pcm) == 640 for o in host.link.sent[1:-1])
    seqs = [o.msg.sequence_num for o in host.link.sent]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert host.link.sent[-1].msg.audio_pcm == b""
    assert host.metrics.vad_onsets == 1 and host.metrics.vad_ends == 1


async def test_endless_sound_is_cut_into_utterances_of_at_most_hub_max_utterance_s() -> None:
    """H4 at the hub: a TV near the mic never pauses; each utterance ends at the cap, counted."""
    host = FakeHost(settings=load(HubSettings, hub_max_utterance_s=1.0))
    s = DeviceSession("pi-tv", RTCPeerConnection(), host)  # type: ignore[arg-type]
    try:
        feed(s, "1" * 120)  # 2.4 s of speech-like sound, fed frame by frame (the VAD's own clock)
        one = [pb.START] + [pb.CONTINUE] * 47 + [pb.END]  # 3 onset frames + 47 = 50 frames = 1 s
        assert events(host) == one + one + [pb.START] + [pb.CONTINUE] * 17
        assert host.metrics.utterances_capped == 2 and host.metrics.vad_ends == 2
    finally:
        await s.close("test")


async def test_utterance_cut_by_a_reconnect_is_dropped_until_the_next_start(session) -> None:  # type: ignore[no-untyped-def]
    s, host = session
    feed(s, "111" + "1" * 5)
    n = len(host.link.sent)
    host.link.generation += 1  # the AI stream was re-established mid-utterance
    feed(s, "1" * 5 + "0" * 15)
    assert len(host.link.sent) == n  # no orphan CONTINUE/END on the new stream
    assert host.metrics.frames_dropped["no_open_utterance"] == 20
    feed(s, "111" + "0" * 15)
    assert events(host)[n:] == [pb.START] + [pb.CONTINUE] * 15 + [pb.END]


def reply(device: str, **kw: object) -> pb.AudioOutput:
    return pb.AudioOutput(device_id=device, **kw)  # type: ignore[arg-type]


PCM = (np.sin(np.arange(22050) / 5) * 10000).astype("<i2").tobytes()  # 1 s at 22050 Hz


async def test_reply_is_queued_and_turn_recorded(session) -> None:  # type: ignore[no-untyped-def]
    s, host = session
    feed(s, "111" + "0" * 15)
    s.on_ai_output(reply("pi-1", final_stt="hello there"))
    s.on_ai_output(reply("pi-1", audio_pcm=PCM, sample_rate=22050, reply_text="Hi."))
    assert s.tts.playing and s.tts.buffered_s == pytest.approx(1.0, abs=0.05)
    s.on_ai_output(reply("pi-1", is_final=True, reply_text="Hi.", conversation_id=s.conversation_id,
                         timing=pb.TurnTiming(stt_ms=120, total_ms=400)))
    [turn] = host.turns.recent()
    assert turn.transcript == "hello there" and turn.reply_text == "Hi." and turn.error_code == "NONE"
    assert turn.timing["stt_ms"] == 120 and turn.timing["total_ms"] == 400
    assert "hub_end_to_first_audio_ms" in turn.timing
    assert host.metrics.tts_frames_routed == 1


async def test_barge_in_interrupts_flushes_and_drops_the_rest_of_that_reply(session) -> None:  # type: ignore[no-untyped-def]
    s, host = session
    feed(s, "111" + "0" * 15)
    s.on_ai_output(reply("pi-1", final_stt="tell me a story"))
    s.on_ai_output(reply("pi-1", audio_pcm=PCM, sample_rate=22050))
    n = len(host.link.sent)
    needed = host.settings.hub_barge_in_frames
    feed(s, "1" * (needed - 1))  # one voiced frame short while playing: not yet
    assert len(host.link.sent) == n and s.tts.playing
    feed(s, "1")
    assert events(host)[n:] == [pb.INTERRUPT, pb.START]
    assert host.link.sent[n].msg.audio_pcm == b"" and not s.tts.playing
    # The interrupted turn's audio still in flight is dropped until its is_final.
    s.on_ai_output(reply("pi-1", audio_pcm=PCM, sample_rate=22050))
    assert s.tts.buffered_samples == 0
    s.on_ai_output(reply("pi-1", is_final=True, reply_text="Once upon"))
    [turn] = host.turns.recent()
    assert turn.interrupted and turn.transcript == "tell me a story"
    # The next turn plays normally.
    s.on_ai_output(reply("pi-1", final_stt="stop"))
    s.on_ai_output(reply("pi-1", audio_pcm=PCM, sample_rate=22050))
    assert s.tts.buffered_samples > 0
    assert host.metrics.interrupts == 1 and host.metrics.tts_dropped["interrupted"] == 1


async def test_barge_in_after_is_final_only_flushes(session) -> None:  # type: ignore[no-untyped-def]
    s, host = session
    s.on_ai_output(reply("pi-1", final_stt="hi"))
    s.on_ai_output(reply("pi-1", audio_pcm=PCM, sample_rate=22050))
    s.on_ai_output(reply("pi-1", is_final=True, reply_text="Hello!"))
    assert s.tts.playing  # still playing out the buffer
    feed(s, "1" * host.settings.hub_barge_in_frames)
    assert events(host) == [pb.INTERRUPT, pb.START]
    # No turn is open on the AI side, so the next reply must not be dropped.
    s.on_ai_output(reply("pi-1", final_stt="again"))
    s.on_ai_output(reply("pi-1", audio_pcm=PCM, sample_rate=22050))
    assert s.tts.buffered_samples > 0


async def test_stale_conversation_and_bad_rate_are_dropped(session) -> None:  # type: ignore[no-untyped-def]
    s, host = session
    s.on_ai_output(reply("pi-1", audio_pcm=PCM, sample_rate=22050, conversation_id="pi-1-old"))
    s.on_ai_output(reply("pi-1", audio_pcm=PCM, sample_rate=0))
    assert s.tts.buffered_samples == 0
    assert host.metrics.tts_dropped == {"stale_conversation": 1, "bad_sample_rate": 1}


async def test_closing_mid_utterance_tells_the_ai_and_frees_the_session(session) -> None:  # type: ignore[no-untyped-def]
    s, host = session
    feed(s, "111" + "11")
    await s.close("no_rtp")
    assert events(host)[-1] == pb.INTERRUPT
    assert host.closed == [s] and s.tts.readyState == "ended"
    assert host.metrics.sessions_closed["no_rtp"] == 1


async def test_a_browser_gets_its_reply_without_the_devices_one_frame_lead() -> None:
    """hub/tts_track.py: the device's fixed prebuffer fills sooner with a lead, a browser's adaptive
    jitter buffer raises its delay after one (bench/browser_playout.py)."""
    host = FakeHost()
    device = DeviceSession("pi-1", RTCPeerConnection(), host)  # type: ignore[arg-type]
    browser = DeviceSession("web-0123456789ab", RTCPeerConnection(), host)  # type: ignore[arg-type]
    try:
        assert (device.tts.lead_frames, browser.tts.lead_frames) == (1, 0)
    finally:
        await device.close("test")
        await browser.close("test")
