"""Error types shared by the pipeline stages.

A stage raises its own error so the pipeline can answer with the matching wire
``ErrorCode`` (STT_FAILED, LLM_FAILED, TTS_FAILED); anything else is INTERNAL.
``StartupError`` is for things that must stop the server before it listens
(a missing model file), with a one-line message naming what is wrong.
"""

from __future__ import annotations


class StartupError(RuntimeError):
    """The server cannot start: a model is missing or unreadable. One line, names the path."""


class StageError(Exception):
    """A pipeline stage failed for this turn; the server and the stream keep going."""

    stage = "internal"


class STTError(StageError):
    stage = "stt"


class LLMError(StageError):
    stage = "llm"


class TTSError(StageError):
    stage = "tts"
