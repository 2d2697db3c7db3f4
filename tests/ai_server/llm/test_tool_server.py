"""Tool calls against a REAL OpenAI-compatible server: llama-cpp-python's server (a process on a
free loopback port) with Qwen2.5-Coder-0.5B-Instruct joined from its registry parts (extra
llm-qwen05, installed by scripts/setup.sh). The server renders tools with the GGUF's own template;
the 0.5B model then writes its call as JSON in the content, which the tool loop must read.

The registry holds fake handlers (the boundary): what matters here is that the model's call
reaches them with the right slots and that their result is what the model says.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest

from ai_server.assist.core import AssistContext, AssistReply, IntentMatch, IntentRegistry
from ai_server.assist.tools import ToolBox, assist_context
from ai_server.llm.models import model_path
from ai_server.llm.openai_compat import OpenAICompatLLM
from shared.aio import closing
from tests.llama_server import llama_cpp_server

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(900)]

NOW = dt.datetime(2026, 3, 4, 10, 42, tzinfo=dt.UTC)
SYSTEM = "You are NAILA, a voice assistant in the user's home. Answer in one short spoken sentence."


@pytest.fixture(scope="module")
def qwen_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log_path = tmp_path_factory.mktemp("llama-server") / "server.log"
    gguf = model_path("qwen2.5-0.5b")  # joined once into ~/.cache/naila/models, sha256-checked
    with llama_cpp_server(gguf, log_path, "--model_alias", "qwen", threads=2) as url:
        yield url


class FakeHousehold:
    def __init__(self) -> None:
        self.matches: list[tuple[IntentMatch, AssistContext]] = []
        self.registry = IntentRegistry()
        self.registry.register("HassStartTimer", self.start_timer)
        self.registry.register("HassGetCurrentTime", self.time)

    async def start_timer(self, match: IntentMatch, ctx: AssistContext) -> AssistReply:
        self.matches.append((match, ctx))
        return AssistReply(f"Timer started for {match.slots.get('minutes', 0)} minutes.", match.intent)

    async def time(self, match: IntentMatch, ctx: AssistContext) -> AssistReply:
        self.matches.append((match, ctx))
        return AssistReply(f"It is {ctx.now:%H:%M}.", match.intent)


async def _ask(url: str, house: FakeHousehold, question: str) -> str:
    tools = ToolBox(house.registry, lambda: NOW)
    llm = OpenAICompatLLM(url, "qwen", max_tokens=64, temperature=0.0, timeout_s=600, tools=tools)
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]
    try:
        with assist_context(AssistContext(now=NOW, device_id="kitchen-pi", room="kitchen")):
            async with closing(llm.stream(messages)) as pieces:  # type: ignore[arg-type]
                return "".join([p async for p in pieces])
    finally:
        await llm.close()


async def test_a_timer_request_reaches_the_timer_handler_and_its_result_is_said(qwen_server: str) -> None:
    house = FakeHousehold()
    reply = await _ask(qwen_server, house, "set a timer for five minutes")
    assert len(house.matches) == 1, reply
    match, ctx = house.matches[0]
    assert match.intent == "HassStartTimer"
    assert match.slots.get("minutes") == 5 and "hours" not in match.slots
    assert match.text == "set a timer for five minutes"
    assert ctx.device_id == "kitchen-pi"  # the timer rings where it was asked for
    assert "{" not in reply and ("5" in reply or "five" in reply.lower()), reply


async def test_the_time_is_said_from_the_handler(qwen_server: str) -> None:
    house = FakeHousehold()
    reply = await _ask(qwen_server, house, "what time is it")
    assert [m.intent for m, _ in house.matches] == ["HassGetCurrentTime"], reply
    assert "10:42" in reply, reply
