"""The embedded LLM computes the user's words and the reply's first clause on every core, then gives
one back for TTS (issue 20). Read from llama.cpp's own thread settings on the shipped model, as each
evaluation starts; nothing here measures time."""

from __future__ import annotations

from typing import Any

import pytest

from ai_server.llm.embedded import EmbeddedLLM, shipped_model_path
from shared.aio import closing

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


async def test_every_core_until_the_first_clause_then_the_configured_threads() -> None:
    import llama_cpp

    llm = EmbeddedLLM(str(shipped_model_path()), threads=1, first_clause_threads=2, max_tokens=24)
    seen: list[tuple[int, int]] = []  # (tokens evaluated, threads) per llama.cpp evaluation
    model = llm._llm
    original = model.eval

    def evaluate(tokens: Any) -> None:
        seen.append((len(tokens), llama_cpp.llama_n_threads(model.ctx)))
        original(tokens)

    model.eval = evaluate
    try:
        pieces_before = 3
        async with closing(llm.stream([{"role": "user", "content": "Tell me about the moon."}])) as pieces:
            n = 0
            async for _ in pieces:
                n += 1
                if n == pieces_before:
                    llm.first_clause_out()
        assert n > pieces_before + 4, "the reply went on after its first clause"
        assert seen[0][0] > 1 and seen[0][1] == 2  # the prompt: every core
        assert {threads for _, threads in seen[1:pieces_before]} == {2}  # the first clause's tokens
        # LOOKAHEAD tokens may be in flight when the clause is out; the rest run on one thread
        assert {threads for _, threads in seen[pieces_before + 6:]} == {1}
        assert llama_cpp.llama_n_threads(model.ctx) == 1  # and it stays there for a prefill
        await llm.prefill([{"role": "user", "content": ""}])
        assert seen[-1][1] == 1
    finally:
        await llm.close()
