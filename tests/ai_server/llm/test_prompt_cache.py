"""History costs nothing extra (issue 20): with the shipped SmolLM2, llama.cpp evaluates only the new
user turn on the tenth turn, for one device, for devices taking turns on the one model, and behind
llama-cpp-python's own OpenAI-compatible server. Counted in tokens evaluated, never in time."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ai_server.conversation import Conversations
from ai_server.llm import LLMBackend
from ai_server.llm.embedded import EmbeddedLLM, shipped_model_path
from ai_server.llm.openai_compat import OpenAICompatLLM
from shared.aio import closing
from shared.config.ai_server import DEFAULT_SYSTEM_PROMPT
from tests.llama_server import llama_cpp_server

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

QUESTIONS = [
    "What is the capital of France?",
    "How many legs does a spider have?",
    "What color is the sky?",
    "Tell me a joke.",
    "What is two plus two?",
    "Who wrote Romeo and Juliet?",
    "How far away is the moon?",
    "What day comes after Monday?",
    "Name a big river.",
    "Why is grass green?",
]
TEMPLATE_SLACK = 8  # "<|im_end|>\n" of the reply before and a token or two where the reply re-tokenizes


def counting(llm: EmbeddedLLM) -> list[int]:
    """Tokens of each Llama.eval call (the first of a completion is its prompt's unevaluated part)."""
    calls: list[int] = []
    model = llm._llm
    original = model.eval

    def evaluate(tokens: Any) -> None:
        calls.append(len(tokens))
        original(tokens)

    model.eval = evaluate
    return calls


async def ask(llm: LLMBackend, messages: list[Any]) -> str:
    async with closing(llm.stream(messages)) as pieces:
        return "".join([piece async for piece in pieces]).strip()


def new_turn_tokens(llm: EmbeddedLLM, messages: list[Any]) -> int:
    """Tokens of the last user turn and the generation prompt after it."""
    whole = llm.prompt_tokens(messages)
    before = llm.prompt_tokens(messages[:-1])
    assert whole is not None and before is not None
    return len(whole) - len(before) + 3  # "<|im_start|>assistant\n" ends both: count it once


@pytest.fixture
def embedded() -> Iterator[EmbeddedLLM]:
    llm = EmbeddedLLM(threads=1, max_tokens=16, temperature=0.0)
    yield llm
    asyncio.run(llm.close())


async def test_the_tenth_turn_evaluates_only_the_new_user_turn(embedded: EmbeddedLLM) -> None:
    """As the pipeline runs a turn: prefill when the user starts speaking, then the question at END."""
    calls = counting(embedded)
    convo = Conversations(DEFAULT_SYSTEM_PROMPT, history_turns=10)  # no trim within ten turns
    prefilled: list[int] = []
    at_end: list[int] = []
    reply_tokens: list[int] = []
    for question in QUESTIONS:
        calls.clear()
        await embedded.prefill(convo.messages("kitchen", "", room="kitchen"))
        prefilled.append(calls[0])
        messages = convo.messages("kitchen", question, room="kitchen")
        calls.clear()
        reply = await ask(embedded, messages)
        at_end.append(calls[0])
        assert at_end[-1] <= new_turn_tokens(embedded, messages), (at_end, question)
        convo.record("kitchen", question, reply, room="kitchen")
        reply_tokens.append(len(embedded._llm.tokenize(reply.encode(), add_bos=False)))
    prompt_10 = embedded.prompt_tokens(messages)
    assert prompt_10 is not None and len(prompt_10) > 150  # system prompt and nine exchanges
    assert prefilled[0] >= 40  # the system prompt, once
    # While the user speaks: at most the last reply (its text may tokenize differently from the
    # tokens generated) and the template around the new turn; never the history before it.
    assert prefilled[9] <= reply_tokens[8] + TEMPLATE_SLACK + 6, (prefilled, reply_tokens)
    assert prefilled[9] + at_end[9] < len(prompt_10) / 5, (prefilled, at_end)
    print(f"prefill evaluated {prefilled}; at END {at_end}; prompt on turn 10: {len(prompt_10)} tokens")


async def test_devices_taking_turns_each_keep_their_history_cached_and_get_the_same_replies() -> None:
    alone = EmbeddedLLM(threads=1, max_tokens=16, temperature=0.0, state_cache_mb=0)
    try:
        convo = Conversations(DEFAULT_SYSTEM_PROMPT, history_turns=10)
        replies_alone = []
        for question in QUESTIONS[:4]:
            replies_alone.append(await ask(alone, convo.messages("a", question, room="kitchen")))
            convo.record("a", question, replies_alone[-1], room="kitchen")
    finally:
        await alone.close()

    shared = EmbeddedLLM(threads=1, max_tokens=16, temperature=0.0, state_cache_mb=64)
    try:
        calls = counting(shared)
        convo = Conversations(DEFAULT_SYSTEM_PROMPT, history_turns=10)
        replies_a: list[str] = []
        last: dict[str, tuple[int, int]] = {}
        for question in QUESTIONS[:4]:
            for device, room in (("a", "kitchen"), ("b", "office")):
                messages = convo.messages(device, question, room=room)
                calls.clear()
                reply = await ask(shared, messages)
                last[device] = (calls[0], new_turn_tokens(shared, messages))
                convo.record(device, question, reply, room=room)
                if device == "a":
                    replies_a.append(reply)
        assert shared.states is not None and shared.states.loads >= 6
        assert shared.states.size_bytes <= 64 * 1024 * 1024
    finally:
        await shared.close()
    for device, (evaluated, new) in last.items():
        assert evaluated <= new + TEMPLATE_SLACK, (device, evaluated, new)
    # A restored KV state is the one that was saved: greedy replies are exactly those of one device alone.
    assert replies_a == replies_alone


HIT = re.compile(r"(\d+) prefix-match hit, remaining (\d+) prompt tokens to eval")


def prefix_hits(log: Path) -> list[tuple[int, int]]:
    """(tokens reused, tokens evaluated) per request, from the server's verbose log."""
    return [(int(a), int(b)) for a, b in HIT.findall(log.read_text())]


@pytest.fixture
def llama_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """llama-cpp-python's own OpenAI-compatible server with the shipped model, logging its prefix reuse."""
    pytest.importorskip("llama_cpp.server", reason="llama-cpp-python[server] is not installed")
    log = tmp_path / "llama-server.log"
    with llama_cpp_server(shipped_model_path(), log, "--verbose", "true") as url:
        yield url, log


async def test_the_openai_backend_against_llama_cpp_python_s_server_reuses_the_history(
    llama_server: tuple[str, Path],
) -> None:
    url, log = llama_server
    llm = OpenAICompatLLM(url, "smollm2", max_tokens=16, temperature=0.0, timeout_s=120, cache_prompt=True)
    try:
        convo = Conversations(DEFAULT_SYSTEM_PROMPT, history_turns=10)
        for question in QUESTIONS[:6]:
            reply = await ask(llm, convo.messages("kitchen", question, room="kitchen"))  # cache_prompt: accepted
            convo.record("kitchen", question, reply, room="kitchen")
    finally:
        await llm.close()
    hits = prefix_hits(log)
    print(f"llama_cpp.server (reused, evaluated) prompt tokens per turn: {hits}")
    assert len(hits) >= 5, hits
    reused, remaining = hits[-1]
    assert reused > 150 and remaining <= 24, hits  # the sixth turn: history reused, only the new turn evaluated
