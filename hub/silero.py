"""Silero VAD (ONNX, MIT) behind the hub's :class:`hub.vad.VoiceDetector` protocol, without torch.

The silero-vad package imports torch, so the hub runs its ``silero_vad.onnx`` with onnxruntime
directly (hub/models.py takes the file out of the wheel). The model reads 512-sample windows at
16 kHz, each preceded by the last 64 samples of the window before (its context), and carries an
LSTM state from window to window; the hub's frames are 320 samples, so samples are buffered and
each frame's verdict is that of the latest complete window. Like silero's own
``get_speech_timestamps``, speech starts at P >= ``threshold`` and ends below ``threshold - 0.15``.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Final

import numpy as np

from hub.models import SILERO_VAD, model_path
from shared.audio import Int16Array

WINDOW: Final = 512
CONTEXT: Final = 64
RATE: Final = 16_000


@functools.cache
def _session(path: Path) -> Any:
    """One ONNX session per process: the state travels in and out of each call, so devices share it."""
    import onnxruntime as ort  # type: ignore[import-untyped]

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


class SileroVoiceDetector:
    """One stream's Silero VAD: P(speech) per 32 ms window, hysteresis between two thresholds."""

    def __init__(self, folder: str = "", threshold: float = 0.5) -> None:
        self._session = _session(model_path(SILERO_VAD, folder))
        self.threshold = threshold
        self.release = threshold - 0.15
        self._sr = np.array(RATE, dtype=np.int64)
        self.reset()

    def reset(self) -> None:
        self._state = np.zeros((2, 1, 128), dtype=np.float32)
        self._context = np.zeros(CONTEXT, dtype=np.float32)
        self._pending = np.zeros(0, dtype=np.float32)
        self._speaking = False
        self.probability = 0.0

    def is_speech(self, frame: Int16Array) -> bool:
        self._pending = np.concatenate([self._pending, frame.astype(np.float32) / 32768.0])
        while self._pending.size >= WINDOW:
            window, self._pending = self._pending[:WINDOW], self._pending[WINDOW:]
            x = np.concatenate([self._context, window])[None, :]
            out, self._state = self._session.run(None, {"input": x, "state": self._state, "sr": self._sr})
            self._context = window[-CONTEXT:]
            self.probability = float(np.asarray(out).reshape(-1)[0])
            if self.probability >= self.threshold:
                self._speaking = True
            elif self.probability < self.release:
                self._speaking = False
        return self._speaking
