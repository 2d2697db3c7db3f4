"""End of turn by a model: features, the Smart Turn model on real speech, the judge's thread, the session path.

The model tests use the real ONNX file (scripts/setup.sh puts it in the model cache) on espeak-ng
speech in several voices. A sentence cut at a word boundary of the same recording ("what is the
weather like in | ...") keeps its mid-sentence intonation, which is what a speaker who pauses
sounds like; the model must tell it from the whole question.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
from aiortc import RTCPeerConnection

from hub.end_of_turn import TurnJudge, load_smart_turn
from hub.listening import ListeningModes
from hub.log_mel import WINDOW_SAMPLES, last_window, log_mel
from hub.models import SMART_TURN, ModelMissing, model_path
from hub.session import DeviceSession
from shared.audio import Int16Array, espeak
from shared.config import HubSettings, load
from shared.contract import pb
from tests.hub.test_session_logic import FakeHost, events, frame

pytestmark = pytest.mark.unit

VOICES = [("en-us", 150), ("en-us+f3", 150), ("en-gb-x-rp+m3", 150), ("en-us+m7", 150)]
TAIL = np.zeros(3200, dtype=np.int16)  # the 200 ms of silence the VAD has heard when it asks


def test_log_mel_matches_faster_whispers_feature_extractor() -> None:
    fw = pytest.importorskip("faster_whisper.feature_extractor")
    audio = last_window(espeak("what is the weather like today"))
    ours = log_mel(audio)
    assert ours.shape == (80, 800) and ours.dtype == np.float32
    normalised = (audio - audio.mean()) / np.sqrt(audio.var() + 1e-7)  # Smart Turn's do_normalize
    reference = fw.FeatureExtractor(chunk_length=8)(normalised, padding=0)
    assert reference.shape == (80, 800)
    np.testing.assert_allclose(ours, reference, atol=1e-4)


def test_last_window_pads_on_the_left_and_keeps_the_end() -> None:
    short = np.arange(1, 101, dtype=np.int16)
    w = last_window(short)
    assert w.size == WINDOW_SAMPLES and not w[:-100].any()
    assert w[-1] == pytest.approx(100 / 32768)
    long = np.arange(WINDOW_SAMPLES + 50, dtype=np.float32)
    assert last_window(long)[0] == 50


def test_log_mel_refuses_bad_shapes() -> None:
    with pytest.raises(ValueError, match="1-D audio"):
        log_mel(np.zeros((2, 1000), dtype=np.float32))


def test_missing_or_altered_model_file_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(ModelMissing, match=r"AUDIO_END_OF_TURN=smart_turn needs .*missing: run scripts/setup.sh"):
        model_path(SMART_TURN, tmp_path)
    (tmp_path / SMART_TURN.name).write_bytes(b"not a model")
    with pytest.raises(ModelMissing, match="sha256 differs") as err:
        model_path(SMART_TURN, tmp_path)
    assert "\n" not in str(err.value)


def _cut(full: Int16Array, prefix: Int16Array) -> Int16Array:
    """``full`` up to the quietest 20 ms near where ``prefix`` (spoken alone) ends: a word boundary."""
    n = prefix.size // 320
    energy = np.sqrt((full[: full.size // 320 * 320].reshape(-1, 320).astype(np.float64) ** 2).mean(1))
    lo, hi = max(1, n - 10), min(energy.size - 1, n + 4)
    return full[: (lo + int(np.argmin(energy[lo:hi]))) * 320]


def _trim(x: Int16Array) -> Int16Array:
    idx = np.nonzero(np.abs(x.astype(np.int32)) > 300)[0]
    return x[idx[0] : idx[-1] + 1]


@pytest.mark.parametrize(("voice", "wpm"), VOICES)
def test_smart_turn_tells_a_paused_question_from_a_complete_one(voice: str, wpm: int) -> None:
    model = load_smart_turn()
    full = _trim(espeak("what is the weather like in Paris tomorrow", voice=voice, wpm=wpm))
    prefix = _trim(espeak("what is the weather like in", voice=voice, wpm=wpm))
    p_cut = model.complete_probability(np.concatenate([_cut(full, prefix), TAIL]))
    p_full = model.complete_probability(np.concatenate([full, TAIL]))
    assert p_cut < 0.5 <= p_full, (p_cut, p_full)


@pytest.mark.parametrize(("voice", "wpm"), VOICES)
def test_smart_turn_hears_a_short_command_as_complete(voice: str, wpm: int) -> None:
    audio = np.concatenate([espeak("set a timer for ten minutes", voice=voice, wpm=wpm), TAIL])
    assert load_smart_turn().complete_probability(audio) >= 0.9


class FakeModel:
    """The one boundary faked in the session tests: a model with a scripted answer."""

    def __init__(self, probability: float) -> None:
        self.probability = probability
        self.threads: list[str] = []
        self.calls = 0

    def complete_probability(self, audio: Int16Array) -> float:
        self.threads.append(threading.current_thread().name)
        self.calls += 1
        return self.probability


async def test_the_judge_runs_the_model_off_the_event_loop_and_skips_stale_checks() -> None:
    model = FakeModel(0.9)
    judge = TurnJudge(model)
    try:
        assert await judge.ask(TAIL, still_wanted=lambda: True) == 0.9
        assert model.threads == [model.threads[0]] and model.threads[0] != threading.current_thread().name
        assert await judge.ask(TAIL, still_wanted=lambda: False) is None  # the pause is over: not run
        assert model.calls == 1
    finally:
        judge.close()


class JudgedHost(FakeHost):
    turn_judge: TurnJudge


@pytest.fixture
async def judged() -> AsyncIterator[tuple[DeviceSession, JudgedHost, FakeModel]]:
    model = FakeModel(0.95)
    host = JudgedHost(settings=load(HubSettings, hub_end_of_turn_check_ms=200, hub_end_of_turn_fallback_ms=1000))
    host.turn_judge = TurnJudge(model)
    s = DeviceSession("pi-eot", RTCPeerConnection(), host)  # type: ignore[arg-type]
    yield s, host, model
    await s.close("test")
    host.turn_judge.close()


def _feed(s: DeviceSession, pattern: str, t0: float) -> None:
    for i, c in enumerate(pattern):
        s.process_frame(frame(c == "1"), t0 + i * 0.02)


async def _settle(host: FakeHost, verdicts: int = 1) -> None:
    """Until the session has handled ``verdicts`` model answers (the future completes on the worker,
    its callback on this loop); the frame clock does not move meanwhile."""
    async with asyncio.timeout(5):
        while sum(host.metrics.end_of_turn.values()) < verdicts:  # noqa: ASYNC110 (a counter, no event)
            await asyncio.sleep(0.005)


async def test_session_ends_the_turn_when_the_model_says_complete(judged) -> None:  # type: ignore[no-untyped-def]
    s, host, model = judged
    _feed(s, "1" * 20 + "0" * 10, 10.0)  # 200 ms of silence: the model is asked
    assert pb.END not in events(host)
    await _settle(host)
    assert events(host)[-1] == pb.END and events(host).count(pb.END) == 1
    assert model.calls == 1 and host.metrics.end_of_turn["complete"] == 1
    assert host.metrics.vad_ends == 1


async def test_session_waits_for_the_fallback_when_the_model_says_incomplete(judged) -> None:  # type: ignore[no-untyped-def]
    s, host, model = judged
    model.probability = 0.05  # below HUB_END_OF_TURN_HANGOVER_THRESHOLD
    _feed(s, "1" * 20 + "0" * 10, 10.0)
    await _settle(host)
    assert pb.END not in events(host) and host.metrics.end_of_turn["incomplete"] == 1
    _feed(s, "0" * 39, 10.6)  # 980 ms of silence in all: still the same turn
    assert pb.END not in events(host)
    _feed(s, "0", 11.38)  # the 1000 ms fallback
    assert events(host)[-1] == pb.END and events(host).count(pb.START) == 1


async def test_session_ends_a_likely_turn_after_the_ordinary_hangover(judged) -> None:  # type: ignore[no-untyped-def]
    s, host, model = judged
    model.probability = 0.5  # between the hangover threshold and the threshold
    _feed(s, "1" * 20 + "0" * 10, 10.0)
    await _settle(host)
    assert pb.END not in events(host) and host.metrics.end_of_turn["likely"] == 1
    _feed(s, "0" * 4, 10.6)  # 280 ms of silence
    assert pb.END not in events(host)
    _feed(s, "0", 10.68)  # 300 ms: HUB_VAD_HANGOVER_MS, not the 1000 ms fallback
    assert events(host)[-1] == pb.END and events(host).count(pb.START) == 1


async def test_session_ignores_a_verdict_that_arrives_after_speech_resumed(judged) -> None:  # type: ignore[no-untyped-def]
    s, host, _ = judged
    _feed(s, "1" * 20 + "0" * 10 + "1" * 3, 10.0)  # asked, and the speaker goes on at once
    await _settle(host)
    assert pb.END not in events(host)
    assert host.metrics.end_of_turn["stale"] + host.metrics.end_of_turn["late"] == 1
    assert s.vad.in_utterance


async def test_utterances_that_do_not_go_upstream_are_not_judged() -> None:
    """wake_word mode, nobody said the wake word: room talk is dropped and costs no model runs."""
    model = FakeModel(0.95)
    host = JudgedHost(settings=load(HubSettings, hub_end_of_turn_check_ms=200))
    host.turn_judge = TurnJudge(model)
    host.listening_modes = ListeningModes("wake_word", {})  # type: ignore[attr-defined]
    s = DeviceSession("pi-idle", RTCPeerConnection(), host)  # type: ignore[arg-type]
    try:
        _feed(s, "1" * 20 + "0" * 10, 10.0)  # ends at the first short pause, without the model
        assert not s.vad.in_utterance
        _feed(s, "1" * 20 + "0" * 10, 10.6)
        assert events(host) == [] and host.metrics.utterances_ignored["wake_word"] == 2
        assert model.calls == 0 and not host.metrics.end_of_turn
    finally:
        await s.close("test")
        host.turn_judge.close()
