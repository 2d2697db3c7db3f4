"""Text in images (spec §8.11 ``text_detected``) with the PP-OCR models that ``rapidocr-onnxruntime`` ships.

Why a wrapper: the engine is untyped and its load (~0.3 s, onnxruntime sessions) should be paid
once, on first use, in a worker thread, not at import or server start. ``read`` blocks (~0.3 s
for a 320x240 frame on CPU): call it through ``asyncio.to_thread``.
"""

from __future__ import annotations

import importlib
import importlib.util
import threading
from typing import Any, Final, Protocol

from ai_server.vision.detector import BGRImage

#: Lines the recogniser is less sure of than this are mostly noise (texture read as letters).
MIN_CONFIDENCE: Final = 0.5


def rapidocr_installed() -> bool:
    """Whether ``rapidocr-onnxruntime`` is installed: it has no release for Python 3.13 (1.4.4 requires <3.13)."""
    return importlib.util.find_spec("rapidocr_onnxruntime") is not None


class TextReader(Protocol):
    """Finds text lines in an image; ``read`` blocks."""

    def read(self, image: BGRImage) -> list[str]: ...


class RapidOcr:
    """``rapidocr_onnxruntime.RapidOCR``, loaded lazily once (thread-safe)."""

    def __init__(self, min_confidence: float = MIN_CONFIDENCE) -> None:
        self.min_confidence = min_confidence
        self._engine: Any = None
        self._lock = threading.Lock()

    def load(self) -> None:
        with self._lock:
            if self._engine is None:
                # Imported by name: the package is untyped, and importing it costs onnxruntime's start.
                self._engine = importlib.import_module("rapidocr_onnxruntime").RapidOCR()

    def read(self, image: BGRImage) -> list[str]:
        """Text lines, top to bottom as the detector orders them, each with confidence >= ``min_confidence``."""
        self.load()
        result, _elapsed = self._engine(image)
        lines: list[str] = []
        for _box, text, score in result or ():  # None when the image has no text
            line = str(text).strip()
            if line and float(score) >= self.min_confidence:
                lines.append(line)
        return lines
