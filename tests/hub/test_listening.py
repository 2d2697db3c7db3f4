"""Listening modes on the VAD's frame clock: the gate alone, then a session fed real speech.

Real audio: the shipped piper voice says "Okay Nabu" (it fires the okay_nabu model; espeak-ng's
does not, see the dependency notes) and the questions; the session runs the real webrtcvad and
the real pymicro-wakeword detector. Only the AI link is a recorder. No sleeps: frames are fed
as fast as the session takes them, each stamped with its place on a 20 ms clock.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pytest
from aiortc import RTCPeerConnection

from hub.device_status import DeviceStatusFeed
from hub.listening import ALWAYS, PUSH_TO_TALK, WAKE_WORD, GateConfig, ListeningGate, ListeningModes, Phase
from hub.metrics import HubMetrics
from hub.session import DeviceSession
from hub.turns import TurnLog
from hub.vad import VadEvent, VadEventKind, WebRtcVoiceDetector
from shared.audio import Int16Array, espeak
from shared.config import HubSettings, load
from shared.contract import pb
from shared.mqtt import DeviceStatus, build, outbound, topics
from shared.wakeword import piper_speech
from tests.hub.test_session_logic import FakeLink

RATE = 16_000
FRAME = 320
_E: Int16Array = np.zeros(0, dtype=np.int16)

QUESTIONS = [
    "How many legs does a spider have?",
    "What is the capital of France?",
    "Turn on the kitchen lights please.",
    "Tell me a short story about a dragon and a knight who became friends.",
    "The weather tomorrow will be sunny with a light breeze from the west.",
    "Could you remind me to water the plants on Sunday morning?",
    "I think the meeting is at three, but let me check my calendar first.",
    "My neighbour has a new dog, and it barks every evening at seven.",
]


def ev(kind: VadEventKind, index: int = 0) -> VadEvent:
    return VadEvent(kind, _E, index)


# ----- the gate alone -----


def test_wake_word_mode_passes_only_the_utterance_after_the_wake_word() -> None:
    g = ListeningGate(WAKE_WORD, GateConfig(follow_up_frames=400, armed_frames=200))
    assert not g.allow(ev(VadEventKind.START), playing=False)  # no wake word: dropped whole
    assert not g.allow(ev(VadEventKind.CONTINUE), playing=False)
    assert not g.allow(ev(VadEventKind.END), playing=False)
    assert g.wake(100, playing=False) is not None and g.phase is Phase.ARMED
    assert g.allow(ev(VadEventKind.START, 110), playing=False) and g.phase is Phase.TURN
    assert g.wants_wake_word  # mid-turn too: a wake word in a turn's first seconds restarts it
    assert g.allow(ev(VadEventKind.CONTINUE), playing=False)
    assert g.allow(ev(VadEventKind.END, 200), playing=False) and g.phase is Phase.REPLY


def test_a_wake_word_at_the_start_of_an_open_utterance_restarts_it() -> None:
    """Plain speech in the follow-up window that begins with the wake word ("Okay Nabu, stop"): the
    open utterance is dropped and the turn starts again after the wake word; deep inside a
    sentence the name is just a word."""
    g = ListeningGate(WAKE_WORD, GateConfig(follow_up_frames=400, armed_frames=200))
    g.wake(0, playing=False)
    g.allow(ev(VadEventKind.START, 5), playing=False)
    g.allow(ev(VadEventKind.END, 100), playing=False)
    g.reply_done(150)
    assert g.allow(ev(VadEventKind.START, 200), playing=False)  # follow-up: no wake word needed
    wake = g.wake(240, playing=False)
    assert wake is not None and wake.restart and g.phase is Phase.ARMED
    assert not g.allow(ev(VadEventKind.CONTINUE), playing=False), "the dropped utterance sends nothing more"
    assert g.allow(ev(VadEventKind.START, 250), playing=False) and g.phase is Phase.TURN
    assert g.wake(250 + 101, playing=False) is None, "a wake word 2 s into a sentence does not restart it"


def test_follow_up_window_on_the_frame_clock() -> None:
    g = ListeningGate(WAKE_WORD, GateConfig(follow_up_frames=400, armed_frames=200))
    g.wake(0, playing=False)
    g.allow(ev(VadEventKind.START, 5), playing=False)
    g.allow(ev(VadEventKind.END, 100), playing=False)
    # While the reply plays, plain speech does not barge in (HUB_BARGE_IN_PLAIN_SPEECH=false).
    assert not g.allow(ev(VadEventKind.INTERRUPT, 150), playing=True)
    assert not g.allow(ev(VadEventKind.START, 150), playing=True)
    assert not g.allow(ev(VadEventKind.END, 170), playing=True)
    g.reply_done(300)  # the reply finished playing at frame 300: the window runs to 700
    assert g.phase is Phase.FOLLOW_UP
    assert not g.tick(699) and g.phase is Phase.FOLLOW_UP
    assert g.allow(ev(VadEventKind.START, 699), playing=False), "speech within HUB_FOLLOW_UP_S needs no wake word"
    g.allow(ev(VadEventKind.END, 750), playing=False)
    g.reply_done(800)
    assert not g.tick(1199)
    g.tick(1200)
    assert g.phase is Phase.IDLE
    assert not g.allow(ev(VadEventKind.START, 1201), playing=False), "after the window the wake word is needed"


def test_plain_speech_barges_in_when_configured() -> None:
    g = ListeningGate(WAKE_WORD, GateConfig(barge_in_plain_speech=True))
    g.wake(0, playing=False)
    g.allow(ev(VadEventKind.START), playing=False)
    g.allow(ev(VadEventKind.END), playing=False)
    assert g.allow(ev(VadEventKind.INTERRUPT), playing=True) and g.allow(ev(VadEventKind.START), playing=True)


def test_a_wake_with_nobody_speaking_ends_quietly() -> None:
    g = ListeningGate(WAKE_WORD, GateConfig(armed_frames=200))
    g.wake(50, playing=False)
    assert not g.tick(249)
    assert g.tick(250) and g.phase is Phase.IDLE and g.quiet_wakes == 1
    assert not g.allow(ev(VadEventKind.START), playing=False)


def test_push_to_talk_counts_speech_only_while_held() -> None:
    g = ListeningGate(PUSH_TO_TALK, GateConfig())
    assert not g.allow(ev(VadEventKind.START), playing=False)
    g.allow(ev(VadEventKind.END), playing=False)
    assert not g.press(True)
    assert g.allow(ev(VadEventKind.START), playing=False)
    assert g.press(False), "release with an open utterance: the session ends it"
    assert not g.allow(ev(VadEventKind.CONTINUE), playing=False)
    assert not g.allow(ev(VadEventKind.END), playing=False)
    assert g.wake(0, playing=False) is None  # no wake word in this mode


def test_always_passes_everything_and_bad_modes_are_refused() -> None:
    g = ListeningGate(ALWAYS, GateConfig())
    assert all(g.allow(ev(k), playing=True) for k in VadEventKind)
    with pytest.raises(ValueError, match="not one of"):
        ListeningGate("sometimes", GateConfig())


async def test_mode_from_the_devices_mqtt_status() -> None:
    modes = ListeningModes(WAKE_WORD, {"pi-hall": ALWAYS})
    assert modes.source_of("pi-hall") == (ALWAYS, "config")
    assert modes.source_of("pi-x") == (WAKE_WORD, "default")
    seen: list[tuple[str, str]] = []
    modes.on_change(lambda d, m: seen.append((d, m)))
    status = build(DeviceStatus, device_id="pi-hall", online=True, capabilities=["audio"],
                   firmware_version="1", listening_mode=PUSH_TO_TALK)
    feed = DeviceStatusFeed()  # the hub's one decoding subscription (hub.device_status)
    feed.add_listener(modes.on_status)
    msg = outbound(topics.device_status("pi-hall"), status)
    await feed.on_mqtt(msg.topic, msg.payload)
    assert modes.source_of("pi-hall") == (PUSH_TO_TALK, "status") and seen == [("pi-hall", PUSH_TO_TALK)]
    await feed.on_mqtt(msg.topic, b"{not json")  # logged and dropped
    assert modes.mode_of("pi-hall") == PUSH_TO_TALK


# ----- a session on real speech -----


@dataclass
class Host:
    settings: HubSettings = field(default_factory=lambda: load(HubSettings))
    link: FakeLink = field(default_factory=FakeLink)
    metrics: HubMetrics = field(default_factory=HubMetrics)
    turns: TurnLog = field(default_factory=TurnLog)
    listening_modes: ListeningModes = field(default_factory=lambda: ListeningModes(WAKE_WORD, {}))
    seq: int = 0

    def next_sequence(self, device_id: str) -> int:
        self.seq += 1
        return self.seq

    def make_detector(self) -> WebRtcVoiceDetector:
        return WebRtcVoiceDetector(3)

    def session_closed(self, session: DeviceSession) -> None:
        pass


@pytest.fixture
async def woken() -> Iterator[tuple[DeviceSession, Host]]:
    host = Host()
    s = DeviceSession("pi-1", RTCPeerConnection(), host)  # type: ignore[arg-type]
    yield s, host
    await s.close("test")


def silence(seconds: float) -> Int16Array:
    return np.zeros(int(seconds * RATE), dtype=np.int16)


def feed(s: DeviceSession, audio: Int16Array, t0: float = 100.0) -> float:
    """Feed ``audio`` frame by frame on a 20 ms clock from ``t0``; returns the clock after it."""
    n = audio.size // FRAME
    for i in range(n):
        s.process_frame(audio[i * FRAME:(i + 1) * FRAME], t0 + i * 0.02)
    return t0 + n * 0.02


def sent_audio(host: Host) -> tuple[list[int], Int16Array]:
    events = [o.msg.event for o in host.link.sent]
    pcm = b"".join(o.msg.audio_pcm for o in host.link.sent)
    return events, np.frombuffer(pcm, dtype=np.int16)


@pytest.fixture(scope="module")
def whisper():  # type: ignore[no-untyped-def]
    from faster_whisper import WhisperModel

    from ai_server.stt import shipped_model_dir

    return WhisperModel(str(shipped_model_dir()), device="cpu", compute_type="int8", cpu_threads=1)


def transcribe(model, audio: Int16Array) -> str:  # type: ignore[no-untyped-def]
    segments, _ = model.transcribe(audio.astype(np.float32) / 32768, language="en", beam_size=1)
    return " ".join(seg.text for seg in segments).lower()


async def test_wake_word_then_question_is_one_turn_without_the_wake_word(woken, whisper) -> None:  # type: ignore[no-untyped-def]
    s, host = woken
    heard: list[str] = []
    s.notify = lambda kind, **f: heard.append(kind) or True  # type: ignore[method-assign]
    t = feed(s, silence(1.0))
    t = feed(s, piper_speech("Okay Nabu."), t)
    t = feed(s, silence(0.5), t)
    wake_at = s.wake_heard_at
    assert wake_at is not None, "the piper wake word did not fire the detector"
    assert s.tts.earcon_playing and "listening" in heard
    feed(s, np.concatenate([piper_speech("How many legs does a spider have?"), silence(1.0)]), t)
    events, audio = sent_audio(host)
    assert events.count(pb.START) == 1 and events[-1] == pb.END and events.count(pb.END) == 1
    start = host.link.sent[0].msg
    assert start.timestamp_ms / 1000 >= wake_at, "the turn's audio starts before the wake word was heard"
    text = transcribe(whisper, audio)
    assert "spider" in text and "nabu" not in text, text
    assert host.metrics.wake_words["heard"] == 1


async def test_a_minute_of_speech_without_the_wake_word_starts_nothing(woken) -> None:  # type: ignore[no-untyped-def]
    s, host = woken
    parts: list[Int16Array] = []
    for q in QUESTIONS:
        parts += [piper_speech(q), silence(0.4), espeak(q, rate=RATE), silence(0.4)]
    speech = np.concatenate(parts)
    while speech.size < 62 * RATE:
        speech = np.concatenate([speech, speech])
    feed(s, speech)
    assert speech.size / RATE >= 60
    assert host.link.sent == [], "speech without the wake word went upstream"
    assert host.metrics.wake_words["heard"] == 0 and s.wake_heard_at is None
    assert host.metrics.utterances_ignored[WAKE_WORD] >= 10


async def test_woken_but_silent_ends_quietly_and_follow_up_needs_no_wake_word(woken) -> None:  # type: ignore[no-untyped-def]
    s, host = woken
    t = feed(s, np.concatenate([silence(0.5), piper_speech("Okay Nabu."), silence(5.0)]))
    assert s.wake_heard_at is not None and host.link.sent == []
    assert host.metrics.wake_words["quiet"] == 1 and s.listening.phase is Phase.IDLE
    # Woken again: a question, its (instant) reply, then a follow-up question without the wake word.
    t = feed(s, np.concatenate([piper_speech("Okay Nabu."), silence(0.4),
                                piper_speech("What is the capital of France?"), silence(1.0)]), t)
    assert [o.msg.event for o in host.link.sent].count(pb.END) == 1
    s.on_ai_output(pb.AudioOutput(device_id="pi-1", conversation_id=s.conversation_id,
                                  final_stt="what is the capital of france", is_final=True, reply_text="Paris."))
    t = feed(s, silence(2.0), t)
    assert s.listening.phase is Phase.FOLLOW_UP
    feed(s, np.concatenate([piper_speech("And of Italy?"), silence(1.0)]), t)
    assert [o.msg.event for o in host.link.sent].count(pb.END) == 2


async def test_barge_in_while_a_reply_plays_takes_the_wake_word_not_plain_speech(woken) -> None:  # type: ignore[no-untyped-def]
    s, host = woken
    t = feed(s, np.concatenate([silence(0.5), piper_speech("Okay Nabu."), silence(0.4),
                                piper_speech("Tell me a story."), silence(1.0)]))
    assert [o.msg.event for o in host.link.sent].count(pb.END) == 1
    reply = (np.sin(np.arange(22050 * 20) * 0.05) * 8000).astype(np.int16).tobytes()  # 20 s of "reply"
    s.on_ai_output(pb.AudioOutput(device_id="pi-1", conversation_id=s.conversation_id, final_stt="tell me a story",
                                  audio_pcm=reply, sample_rate=22050))
    assert s.tts.playing
    t = feed(s, np.concatenate([piper_speech("No wait, stop that."), silence(0.6)]), t)
    assert pb.INTERRUPT not in [o.msg.event for o in host.link.sent], "plain speech barged in"
    assert s.tts.playing
    feed(s, np.concatenate([piper_speech("Okay Nabu."), silence(0.3)]), t)
    assert [o.msg.event for o in host.link.sent].count(pb.INTERRUPT) == 1
    assert not s.tts.playing and s.listening.phase is Phase.ARMED and s.tts.earcon_playing
