"""Scripted backends for tests at one boundary: failure paths, interleaving, hub tests.

They honour the same protocols as the real backends (``STTBackend``, ``LLMBackend``,
``TTSBackend``) and take no models, so ``start_server(settings, stt=FakeSTT(...), ...)``
starts in milliseconds. Not for end-to-end tests, which use the real models.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import numpy as np

from ai_server.errors import LLMError, STTError, TTSError
from ai_server.llm import Message
from shared.audio import Int16Array


class FakeSTT:
    name = "fake-stt"
    model = "fake"

    def __init__(self, text: str | Callable[[Int16Array], str] = "hello there", *, fail: bool = False,
                 delay_s: float = 0.0) -> None:
        self.text = text
        self.fail = fail
        self.delay_s = delay_s
        self.calls = 0

    async def transcribe(self, audio: Int16Array) -> str:
        self.calls += 1
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.fail:
            raise STTError("fake STT failure")
        return self.text(audio) if callable(self.text) else self.text

    async def warm(self) -> None:
        pass

    async def close(self) -> None:
        pass


class FakeLLM:
    name = "fake-llm"
    model = "fake"

    def __init__(self, reply: str = "Hi. This is a scripted reply.", *, piece_delay_s: float = 0.0,
                 fail_after: int | None = None) -> None:
        self.reply = reply
        self.piece_delay_s = piece_delay_s
        self.fail_after = fail_after  # pieces produced before raising; 0 = fail at once
        self.requests: list[list[Message]] = []
        self.prefills: list[list[Message]] = []
        self.pieces_sent = 0
        self.closed_early = 0

    async def stream(self, messages: list[Message]) -> AsyncIterator[str]:
        self.requests.append(list(messages))
        words = [w + " " for w in self.reply.split(" ")]
        finished = False
        try:
            for i, w in enumerate(words):
                if self.fail_after is not None and i >= self.fail_after:
                    raise LLMError("fake LLM failure")
                if self.piece_delay_s:
                    await asyncio.sleep(self.piece_delay_s)
                self.pieces_sent += 1
                yield w
            finished = True
        finally:
            if not finished:
                self.closed_early += 1

    def first_clause_out(self) -> None:
        pass  # nothing computes here (the server, or the script, has its own cores)

    async def prefill(self, messages: list[Message]) -> None:
        self.prefills.append(list(messages))

    async def warm(self) -> None:
        pass

    async def close(self) -> None:
        pass


class FakeTTS:
    """A 440 Hz tone, 60 ms per word, in one array per call (like piper per sentence)."""

    name = "fake-tts"
    model = "tone"

    def __init__(self, sample_rate: int = 22050, *, fail: bool = False, delay_s: float = 0.0) -> None:
        self.sample_rate = sample_rate
        self.fail = fail
        self.delay_s = delay_s
        self.texts: list[str] = []

    async def synthesize(self, text: str) -> AsyncIterator[Int16Array]:
        self.texts.append(text)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.fail:
            raise TTSError("fake TTS failure")
        n = self.sample_rate * 60 // 1000 * max(1, len(text.split()))
        t = np.arange(n) / self.sample_rate
        yield (np.sin(2 * np.pi * 440 * t) * 8000).astype(np.int16)

    async def warm(self) -> None:
        pass

    async def close(self) -> None:
        pass
