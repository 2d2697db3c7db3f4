"""Silero VAD (ONNX on onnxruntime, no torch) behind the VoiceDetector protocol, on real speech and noise."""

from __future__ import annotations

import numpy as np
import pytest

from hub.silero import SileroVoiceDetector
from hub.vad import VadConfig, VadEventKind, VadStateMachine
from shared.audio import Int16Array, espeak

pytestmark = pytest.mark.unit

FS = 320
CFG = VadConfig.from_ms(onset_frames=3, hangover_ms=300, preroll_ms=200, barge_in_frames=5)


def frames(x: Int16Array) -> list[Int16Array]:
    return [x[i : i + FS] for i in range(0, x.size - FS + 1, FS)]


def silence(seconds: float) -> Int16Array:
    return np.zeros(int(16000 * seconds), dtype=np.int16)


def noise(seconds: float, level: float, seed: int = 1) -> Int16Array:
    return np.random.default_rng(seed).normal(0, level, int(16000 * seconds)).astype(np.int16)


def kinds(signal: Int16Array) -> list[VadEventKind]:
    vad = VadStateMachine(SileroVoiceDetector(), CFG)
    out: list[VadEventKind] = []
    for f in frames(signal):
        out += [e.kind for e in vad.process(f) if e.kind is not VadEventKind.CONTINUE]
    return out


@pytest.mark.parametrize("voice", ["en-us", "en-us+f3", "en-gb-x-rp+m3"])
def test_speech_is_one_utterance(voice: str) -> None:
    speech = espeak("what is the weather like today", voice=voice)
    assert kinds(np.concatenate([silence(1.0), speech, silence(1.0)])) == [VadEventKind.START, VadEventKind.END]


def test_silence_and_steady_noise_give_no_events() -> None:
    assert kinds(silence(3.0)) == []
    assert kinds(noise(3.0, 300)) == []  # white noise at about -40 dBFS


def test_probability_per_window_and_reset() -> None:
    det = SileroVoiceDetector()
    speech = espeak("turn on the kitchen lights")
    voiced = [det.is_speech(f) for f in frames(speech)]
    assert sum(voiced) > len(voiced) // 2
    assert 0.0 <= det.probability <= 1.0
    det.reset()
    assert det.probability == 0.0 and not det.is_speech(silence(0.02))


def test_frames_of_any_length_are_buffered_into_512_sample_windows() -> None:
    det = SileroVoiceDetector()
    assert not det.is_speech(silence(0.01))  # 160 samples: no window yet, the verdict stays "silent"
    det.is_speech(silence(0.03))  # 640 buffered: one window ran, 128 left over
    assert det._pending.size == 128
