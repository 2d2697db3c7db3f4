"""VAD state machine, driven frame by frame (no sleeps, no clock): scripted and real detectors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hub.vad import (
    END_MODEL,
    END_SILENCE,
    TIER_END,
    TIER_FALLBACK,
    TIER_HANGOVER,
    TurnCheck,
    VadConfig,
    VadEvent,
    VadEventKind,
    VadState,
    VadStateMachine,
    WebRtcVoiceDetector,
    make_detector,
)
from shared.audio import Int16Array, espeak
from shared.config import HubSettings

pytestmark = pytest.mark.unit

START, CONT, END, INT = VadEventKind.START, VadEventKind.CONTINUE, VadEventKind.END, VadEventKind.INTERRUPT
FS = 320  # 20 ms at 16 kHz


class Scripted:
    """A detector whose verdict is the frame's first sample being nonzero (frames carry their id)."""

    def is_speech(self, frame: Int16Array) -> bool:
        return bool(frame[1] != 0)

    def reset(self) -> None:
        pass


def frame(i: int, voiced: bool) -> Int16Array:
    f = np.zeros(FS, dtype=np.int16)
    f[0] = i % 30000
    f[1] = 1 if voiced else 0
    return f


CFG = VadConfig.from_ms(onset_frames=3, hangover_ms=300, preroll_ms=200, barge_in_frames=5)


def run(pattern: str, cfg: VadConfig = CFG, playing: str | None = None) -> tuple[list[VadEvent], list[Int16Array]]:
    """Feed '1'/'0' frames; ``playing`` marks frames during which TTS is playing ('p')."""
    vad = VadStateMachine(Scripted(), cfg)
    frames = [frame(i, c == "1") for i, c in enumerate(pattern)]
    events: list[VadEvent] = []
    for i, f in enumerate(frames):
        events += vad.process(f, is_playing=bool(playing and playing[i] == "p"))
    return events, frames


def kinds(events: list[VadEvent]) -> list[VadEventKind]:
    return [e.kind for e in events]


def test_config_from_ms_maps_settings_to_frames() -> None:
    assert CFG.onset_frames == 3
    assert CFG.hangover_frames == 15
    assert CFG.preroll_frames == 10
    assert CFG.barge_in_frames == 5
    assert VadConfig.from_ms(onset_frames=1, hangover_ms=310, preroll_ms=0, barge_in_frames=1).hangover_frames == 16


def test_onset_after_n_voiced_frames_with_preroll_in_start() -> None:
    events, frames = run("0" * 20 + "111")
    assert kinds(events) == [START]
    start = events[0]
    # 10 frames of pre-roll (200 ms) + the 3 onset frames, in order, nothing else.
    expected = np.concatenate(frames[10:23])
    assert np.array_equal(start.audio, expected)
    assert start.frame_index == 10


def test_no_start_before_onset_frames() -> None:
    events, _ = run("0" * 5 + "11" + "0" + "11" + "0")
    assert events == []


def test_false_start_frames_become_preroll() -> None:
    events, frames = run("00" + "11" + "0" + "111")
    assert kinds(events) == [START]
    assert np.array_equal(events[0].audio, np.concatenate(frames[0:8]))


def test_preroll_is_bounded_and_can_be_zero() -> None:
    cfg0 = VadConfig.from_ms(onset_frames=3, hangover_ms=300, preroll_ms=0, barge_in_frames=5)
    events, frames = run("0" * 50 + "111", cfg0)
    assert np.array_equal(events[0].audio, np.concatenate(frames[50:53]))
    events, _ = run("0" * 50 + "111")
    assert events[0].audio.size == 13 * FS


def test_continue_each_frame_then_end_after_hangover() -> None:
    events, frames = run("0" * 3 + "111" + "1" * 10 + "0" * 15 + "0" * 5)
    ks = kinds(events)
    assert ks[0] is START
    # 10 speech frames + 15 hangover frames each as CONTINUE, then END, then nothing.
    assert ks[1:] == [CONT] * 25 + [END]
    conts = [e for e in events if e.kind is CONT]
    assert all(np.array_equal(c.audio, frames[c.frame_index]) for c in conts)
    assert [c.frame_index for c in conts] == list(range(6, 31))
    end = events[-1]
    assert end.audio.size == 0 and end.frame_index == 30


def test_pause_shorter_than_hangover_keeps_speaking() -> None:
    events, _ = run("111" + "1" * 5 + "0" * 14 + "1" * 5 + "0" * 15)
    assert kinds(events).count(START) == 1
    assert kinds(events).count(END) == 1


def test_state_walks_silence_maybe_speech_speaking_maybe_silence() -> None:
    vad = VadStateMachine(Scripted(), CFG)
    seen = []
    for i, c in enumerate("0" + "11" + "1" + "0" + "1" + "0" * 15):
        vad.process(frame(i, c == "1"))
        seen.append(vad.state)
    assert seen[0] is VadState.SILENCE
    assert seen[1] is seen[2] is VadState.MAYBE_SPEECH
    assert seen[3] is VadState.SPEAKING
    assert seen[4] is VadState.MAYBE_SILENCE
    assert seen[5] is VadState.SPEAKING
    assert seen[-1] is VadState.SILENCE


def test_second_utterance_after_end_gets_fresh_preroll() -> None:
    events, frames = run("111" + "0" * 15 + "00" + "111")
    starts = [e for e in events if e.kind is START]
    assert len(starts) == 2
    # Pre-roll after END starts empty: only the 2 frames heard since END, then the onset.
    assert np.array_equal(starts[1].audio, np.concatenate(frames[18:23]))


def test_barge_in_interrupt_only_while_playing() -> None:
    pattern = "0" * 10 + "11111" + "1" * 5
    # Playing: 3 voiced frames are not enough, 5 are; INTERRUPT comes right before START.
    events, frames = run(pattern, playing="p" * len(pattern))
    assert kinds(events)[:2] == [INT, START]
    assert events[0].frame_index == 14
    assert np.array_equal(events[1].audio, np.concatenate(frames[0:15]))
    # Not playing: the plain onset after 3 frames, no INTERRUPT at all.
    events, _ = run(pattern)
    assert INT not in kinds(events)
    assert kinds(events)[0] is START and events[0].audio.size == 13 * FS


def test_no_barge_in_when_playback_stops_before_onset_completes() -> None:
    pattern = "0" * 5 + "111"
    events, _ = run(pattern, playing="p" * 6 + "  ")
    assert kinds(events) == [START]


def test_speaking_when_playback_starts_is_not_a_barge_in() -> None:
    pattern = "111" + "1" * 10 + "0" * 15
    events, _ = run(pattern, playing=" " * 5 + "p" * (len(pattern) - 5))
    assert INT not in kinds(events)


def test_wrong_frame_size_is_rejected() -> None:
    vad = VadStateMachine(Scripted(), CFG)
    with pytest.raises(ValueError):
        vad.process(np.zeros(160, dtype=np.int16))


def test_unknown_vad_mode_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"unknown VAD engine 'rnnoise' .known: silero, webrtc"):
        make_detector("rnnoise", HubSettings())


def test_missing_silero_model_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"AUDIO_VAD_MODE=silero needs .*silero_vad.onnx, which is missing: run"):
        make_detector("silero", HubSettings(hub_model_dir=str(tmp_path)))


# ----- end of turn by a model: the pending verdict, on the frame clock -----

ECFG = VadConfig.from_ms(onset_frames=3, hangover_ms=1000, preroll_ms=200, barge_in_frames=5, check_ms=200)


def feed(vad: VadStateMachine, pattern: str, start: int = 0) -> list[VadEvent]:
    events: list[VadEvent] = []
    for i, c in enumerate(pattern, start):
        events += vad.process(frame(i, c == "1"))
    return events


def test_check_is_raised_once_after_check_frames_of_silence_with_the_utterance_audio() -> None:
    vad = VadStateMachine(Scripted(), ECFG)
    assert ECFG.check_frames == 10 and ECFG.hangover_frames == 50
    feed(vad, "00" + "1" * 20 + "0" * 9)
    assert vad.take_check() is None
    feed(vad, "0", 31)
    check = vad.take_check()
    assert check is not None and vad.take_check() is None  # handed out once
    assert check.frame_index == 31
    # Pre-roll (2 silent frames) + onset + speech + the 10 silent frames, in order.
    ids = [int(f[0]) for f in check.audio.reshape(-1, FS)]
    assert ids == list(range(32))
    assert vad.is_current(check)


def test_complete_verdict_ends_the_turn_at_once() -> None:
    vad = VadStateMachine(Scripted(), ECFG)
    feed(vad, "1" * 20 + "0" * 10)
    check = vad.take_check()
    assert check is not None
    feed(vad, "000", 30)  # the model takes 3 frames to answer; the pause goes on
    events = vad.verdict(check, probability=1.0)
    assert kinds(events) == [END]
    assert events[0].reason == END_MODEL and events[0].frame_index == 32
    assert vad.state is VadState.SILENCE and not vad.in_utterance
    assert not vad.is_current(check)
    assert vad.verdict(check, probability=1.0) == []  # a second answer to the same check changes nothing


def test_incomplete_verdict_waits_for_the_fallback_hangover() -> None:
    vad = VadStateMachine(Scripted(), ECFG)
    feed(vad, "1" * 20 + "0" * 10)
    check = vad.take_check()
    assert check is not None
    assert vad.verdict(check, probability=0.0) == []
    events = feed(vad, "0" * 39, 30)
    assert END not in kinds(events)  # 49 silent frames: not yet
    events = feed(vad, "0", 69)
    assert kinds(events) == [CONT, END] and events[-1].reason == END_SILENCE  # the 50th: fallback


def test_verdict_after_speech_resumed_is_stale_and_the_next_pause_asks_again() -> None:
    vad = VadStateMachine(Scripted(), ECFG)
    feed(vad, "1" * 20 + "0" * 10)
    first = vad.take_check()
    assert first is not None
    feed(vad, "11", 30)  # "set a timer for ... ten minutes": the speaker goes on before the answer
    assert not vad.is_current(first)
    assert vad.verdict(first, probability=1.0) == []  # late "complete" must not cut the sentence
    assert vad.in_utterance
    feed(vad, "1" * 10 + "0" * 10, 32)
    second = vad.take_check()
    assert second is not None and second is not first and vad.is_current(second)
    assert kinds(vad.verdict(second, probability=1.0)) == [END]


def test_verdict_after_the_fallback_ended_the_turn_is_ignored() -> None:
    vad = VadStateMachine(Scripted(), ECFG)
    feed(vad, "1" * 20 + "0" * 10)
    check = vad.take_check()
    assert check is not None
    events = feed(vad, "0" * 40, 30)
    assert kinds(events)[-1] is END  # the model never answered in time
    assert vad.verdict(check, probability=1.0) == []
    feed(vad, "000", 70)
    assert vad.verdict(check, probability=1.0) == []


def test_reset_and_max_length_drop_a_pending_check() -> None:
    vad = VadStateMachine(Scripted(), ECFG)
    feed(vad, "1" * 20 + "0" * 10)
    check = vad.take_check()
    assert check is not None
    vad.reset()
    assert vad.verdict(check, probability=1.0) == []


def test_without_check_frames_no_check_is_ever_raised() -> None:
    vad = VadStateMachine(Scripted(), CFG)
    feed(vad, "1" * 20 + "0" * 40)
    assert vad.take_check() is None


# ----- the tiered policy (the default since issue 20): confident ends at once, likely after the
# hangover, doubtful after the fallback -----

TCFG = VadConfig.from_ms(
    onset_frames=3,
    hangover_ms=300,
    preroll_ms=200,
    barge_in_frames=5,
    check_ms=120,
    fallback_ms=1000,
    end_threshold=0.9,
    hangover_threshold=0.3,
)


def paused(vad: VadStateMachine) -> TurnCheck:
    """20 voiced frames (0-19) then the 6 silent frames (20-25) that raise the check."""
    feed(vad, "1" * 20 + "0" * 6)
    check = vad.take_check()
    assert check is not None and check.frame_index == 25
    return check


def test_tiers_and_frames_from_settings() -> None:
    assert (TCFG.check_frames, TCFG.hangover_frames, TCFG.fallback_frames) == (6, 15, 50)
    assert TCFG.longest_pause_frames == 50
    assert [TCFG.tier(p) for p in (0.95, 0.9, 0.5, 0.3, 0.29, 0.0)] == [
        TIER_END,
        TIER_END,
        TIER_HANGOVER,
        TIER_HANGOVER,
        TIER_FALLBACK,
        TIER_FALLBACK,
    ]
    assert [TCFG.pause_limit(p) for p in (0.95, 0.5, 0.1)] == [0, 15, 50]
    # No model: the hangover alone, whatever fallback_frames says.
    assert CFG.longest_pause_frames == CFG.hangover_frames == 15


def test_confident_verdict_ends_the_turn_when_it_arrives() -> None:
    vad = VadStateMachine(Scripted(), TCFG)
    check = paused(vad)
    feed(vad, "0000", 26)  # the verdict takes 4 frames (80 ms)
    events = vad.verdict(check, 0.95)
    assert kinds(events) == [END] and events[0].reason == END_MODEL and events[0].frame_index == 29


def test_likely_verdict_ends_the_turn_after_the_ordinary_hangover() -> None:
    vad = VadStateMachine(Scripted(), TCFG)
    check = paused(vad)
    feed(vad, "0000", 26)
    assert vad.verdict(check, 0.5) == []  # 10 silent frames so far: the hangover is 15
    assert END not in kinds(feed(vad, "0" * 4, 30))  # silent frames 11-14
    events = feed(vad, "0", 34)  # the 15th
    assert kinds(events) == [CONT, END] and events[-1].reason == END_SILENCE


def test_likely_verdict_arriving_after_the_hangover_ends_the_turn_at_once() -> None:
    vad = VadStateMachine(Scripted(), TCFG)
    check = paused(vad)
    assert END not in kinds(feed(vad, "0" * 12, 26))  # a busy hub: 18 silent frames, no answer yet
    events = vad.verdict(check, 0.5)
    assert kinds(events) == [END] and events[0].frame_index == 37


def test_doubtful_verdict_waits_for_the_fallback() -> None:
    vad = VadStateMachine(Scripted(), TCFG)
    check = paused(vad)
    assert vad.verdict(check, 0.1) == []
    assert END not in kinds(feed(vad, "0" * 43, 26))  # 49 silent frames
    events = feed(vad, "0", 69)
    assert kinds(events) == [CONT, END] and events[-1].reason == END_SILENCE


def test_speech_after_a_likely_verdict_restores_the_fallback_for_the_next_pause() -> None:
    """ "set a timer for ... ten minutes": a "likely" pause the speaker ends himself does not
    shorten the next pause, which waits for its own verdict."""
    vad = VadStateMachine(Scripted(), TCFG)
    check = paused(vad)
    assert vad.verdict(check, 0.5) == []
    feed(vad, "0" * 4 + "1" * 10, 26)  # speech resumes after 10 silent frames (200 ms)
    assert vad.in_utterance
    events = feed(vad, "0" * 20, 40)  # a new pause, longer than the hangover: its check is pending
    assert END not in kinds(events)
    second = vad.take_check()
    assert second is not None and second.frame_index == 45
    assert kinds(vad.verdict(second, 0.5)) == [END]  # 20 silent frames >= the hangover


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.booleans(), st.sampled_from([0.0, 0.5, 1.0])), min_size=1, max_size=400))
def test_event_grammar_holds_with_verdicts_arriving_any_time(steps: list[tuple[bool, bool, float]]) -> None:
    """Frames, and verdicts (of any tier) delivered at arbitrary later frames, never break
    START/CONTINUE/END pairing or produce two ENDs."""
    vad = VadStateMachine(
        Scripted(),
        VadConfig.from_ms(
            onset_frames=2,
            hangover_ms=100,
            preroll_ms=40,
            barge_in_frames=3,
            check_ms=60,
            fallback_ms=200,
            end_threshold=0.9,
            hangover_threshold=0.3,
        ),
    )
    pending: list[TurnCheck] = []
    open_utt = False
    for i, (voiced, answer_now, complete) in enumerate(steps):
        events = vad.process(frame(i, voiced))
        check = vad.take_check()
        if check is not None:
            pending.append(check)
        if answer_now and pending:
            events += vad.verdict(pending.pop(0), complete)
        for e in events:
            if e.kind is START:
                assert not open_utt
                open_utt = True
            elif e.kind is END:
                assert open_utt
                open_utt = False
            elif e.kind is CONT:
                assert open_utt
    assert open_utt == vad.in_utterance


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.booleans(), min_size=1, max_size=300),
    st.lists(st.booleans(), min_size=300, max_size=300),
)
def test_event_grammar_holds_for_any_input(voiced: list[bool], playing: list[bool]) -> None:
    vad = VadStateMachine(Scripted(), CFG)
    events: list[tuple[VadEventKind, bool]] = []
    for i, v in enumerate(voiced):
        for e in vad.process(frame(i, v), is_playing=playing[i]):
            events.append((e.kind, playing[i]))
    open_utt = False
    for j, (k, was_playing) in enumerate(events):
        if k is INT:
            assert was_playing and not open_utt and events[j + 1][0] is START
        elif k is START:
            assert not open_utt
            open_utt = True
        elif k is CONT:
            assert open_utt
        else:
            assert open_utt
            open_utt = False
    assert open_utt == vad.in_utterance


# ----- the real webrtcvad detector -----


def to_frames(x: Int16Array) -> list[Int16Array]:
    return [x[i : i + FS] for i in range(0, x.size - FS + 1, FS)]


def drive(signal: Int16Array, playing: bool = False) -> list[VadEvent]:
    vad = VadStateMachine(WebRtcVoiceDetector(3), CFG)
    out: list[VadEvent] = []
    for f in to_frames(signal):
        out += vad.process(f, is_playing=playing)
    return out


def tone(seconds: float, hz: float = 220.0, level: float = 0.3) -> Int16Array:
    t = np.arange(int(16000 * seconds)) / 16000
    x = sum(np.sin(2 * np.pi * hz * k * t) / k for k in range(1, 8))
    return (level * 32767 * x / np.max(np.abs(x))).astype(np.int16)


def silence(seconds: float) -> Int16Array:
    return np.zeros(int(16000 * seconds), dtype=np.int16)


def test_silence_gives_no_events() -> None:
    assert drive(silence(3.0)) == []


def test_tone_burst_start_and_end_at_the_right_frames() -> None:
    events = drive(np.concatenate([silence(1.0), tone(1.0), silence(1.0)]))
    ks = kinds(events)
    assert ks[0] is START and ks[-1] is END and ks.count(START) == 1
    start = events[0]
    # The onset is confirmed on the 3rd voiced frame (index 52); START holds 200 ms before.
    assert start.frame_index == 40 and start.audio.size == 13 * FS
    assert np.all(start.audio[: 10 * FS] == 0)  # the pre-roll was the silence before the tone
    # END comes 300 ms after the detector stops hearing the tone: frame 100 is the first
    # silent one, so frame 114 at the earliest; webrtcvad itself lingers a few frames.
    end_index = events[-1].frame_index
    assert 114 <= end_index <= 114 + 10
    assert ks.count(CONT) == end_index - 52


@pytest.fixture(scope="module")
def speech() -> Int16Array:
    return espeak("what is the weather like today", rate=16000)


def test_espeak_speech_is_one_utterance_of_the_right_length(speech: Int16Array) -> None:
    signal = np.concatenate([silence(1.0), speech, silence(1.0)])
    events = drive(signal)
    ks = kinds(events)
    assert ks.count(START) == 1 and ks.count(END) == 1 and ks[-1] is END
    sent_samples = sum(e.audio.size for e in events)
    sent_s = sent_samples / 16000
    # Everything from 200 ms before the onset to 300 ms after the last voiced frame.
    assert speech.size / 16000 < sent_s < speech.size / 16000 + 0.2 + 0.3 + 0.1
    # The START audio begins before the speech does (no clipped first syllable).
    assert events[0].frame_index * FS <= 16000


def test_espeak_speech_during_playback_interrupts_first(speech: Int16Array) -> None:
    events = drive(np.concatenate([silence(0.5), speech, silence(0.5)]), playing=True)
    assert kinds(events)[:2] == [INT, START]
    assert kinds(events).count(INT) == 1


# ----- H4: the longest utterance (HUB_MAX_UTTERANCE_S), on the VAD's own clock: frames -----


CAPPED = VadConfig.from_ms(onset_frames=3, hangover_ms=300, preroll_ms=200, barge_in_frames=5, max_utterance_ms=1000)


def test_endless_speech_is_cut_at_the_cap_and_a_new_utterance_follows() -> None:
    assert CAPPED.max_utterance_frames == 50  # 1 s of 20 ms frames
    events, _ = run("1" * 130, CAPPED)
    ends = [e for e in events if e.kind is END]
    starts = [e for e in events if e.kind is START]
    # Onset (3 frames) + 47 CONTINUE = 50 frames, END; the next voiced frames open the next utterance.
    assert [e.frame_index for e in ends] == [49, 99] and all(e.reason == "max_length" for e in ends)
    assert len(starts) == 3
    # Between a START and its END, never more than 50 frames of audio go upstream.
    sent = 0
    for e in events:
        if e.kind in (START, CONT):
            sent += e.audio.size // FS if e.kind is CONT else 3  # START: the 3 onset frames (+ pre-roll)
        elif e.kind is END:
            assert sent == 50
            sent = 0


def test_a_pause_still_ends_the_turn_first_with_its_own_reason() -> None:
    events, _ = run("1" * 20 + "0" * 20, CAPPED)
    [end] = [e for e in events if e.kind is END]
    assert end.reason == "silence"


def test_no_cap_when_zero() -> None:
    events, _ = run("1" * 600)
    assert END not in kinds(events)
