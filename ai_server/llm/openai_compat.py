"""Any OpenAI-compatible chat server (Ollama, vLLM, llama.cpp server) via the ``openai`` client.

Streams ``chat.completions`` with ``stream=True``. No retries: a retry would double the
latency the user hears; a failure becomes LLM_FAILED for this turn and the next turn
tries again. Closing the iterator closes the HTTP response, which stops generation on
servers that watch for disconnects (llama.cpp server, vLLM, Ollama all do).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

from ai_server.errors import LLMError
from ai_server.llm import Message

log = logging.getLogger(__name__)


class OpenAICompatLLM:
    name = "openai-compatible"

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str = "not-needed",
        max_tokens: int = 96,
        temperature: float = 0.3,
        timeout_s: float = 30.0,
    ) -> None:
        from openai import AsyncOpenAI

        self.model = model
        self.base_url = base_url
        self._max_tokens = max_tokens
        self._temperature = temperature
        self._client = AsyncOpenAI(base_url=base_url, api_key=api_key, timeout=timeout_s, max_retries=0)
        log.info("LLM: OpenAI-compatible server %s, model %s", base_url, model)

    async def stream(self, messages: list[Message]) -> AsyncIterator[str]:
        try:
            response: Any = await self._client.chat.completions.create(
                model=self.model,
                messages=[dict(m) for m in messages],  # type: ignore[misc]
                stream=True,
                max_tokens=self._max_tokens,
                temperature=self._temperature,
            )
        except Exception as exc:
            raise LLMError(f"{self.base_url}: {type(exc).__name__}: {exc}") from exc
        try:
            async for chunk in response:
                if not chunk.choices:
                    continue
                piece = chunk.choices[0].delta.content
                if piece:
                    yield piece
        except Exception as exc:
            raise LLMError(f"{self.base_url}: stream broke: {type(exc).__name__}: {exc}") from exc
        finally:
            await response.close()

    async def prefill(self, messages: list[Message]) -> None:
        """Not done: a remote server keeps its own prompt cache per request."""

    async def warm(self) -> None:
        """Nothing to load here; the server may be down at start-up and come up later."""

    async def close(self) -> None:
        await self._client.close()
