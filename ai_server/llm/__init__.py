"""Language model backends behind one small protocol.

``LLMBackend.stream(messages)`` yields reply text pieces as they are generated. Closing
or cancelling the iterator must stop generation (barge-in). Two implementations:
``embedded`` (llama-cpp-python in-process, the shipped SmolLM2 GGUF) and
``openai_compat`` (any OpenAI-compatible server: Ollama, vLLM, llama.cpp server).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Literal, Protocol, TypedDict


class Message(TypedDict):
    role: Literal["system", "user", "assistant"]
    content: str


class LLMBackend(Protocol):
    name: str
    model: str

    def stream(self, messages: list[Message]) -> AsyncIterator[str]:
        """Reply text pieces, in order. Raises ``LLMError`` on failure."""
        ...

    async def prefill(self, messages: list[Message]) -> None:
        """Evaluate the prompt up to the next user message ahead of time (called while the
        user is still speaking). A pure speed-up: backends without a prompt cache do nothing."""
        ...

    def first_clause_out(self) -> None:
        """The reply being streamed has its first clause: TTS is about to need a core. A backend
        that computes on this machine may give cores back for the rest of the reply."""
        ...

    async def warm(self) -> None: ...

    async def close(self) -> None: ...


__all__ = ["LLMBackend", "Message"]
