"""The LLM as its own service (issue 21): two AI servers share one OpenAI-compatible LLM server.

llama-cpp-python's own server runs the shipped model (the production path is vLLM, Ollama or
llama.cpp's server: LLM_BACKEND=openai, LLM_BASE_URL). Two real AI server processes use it through
LLM_BACKEND=openai. Two chat requests published back to back are shared out one per server by the
broker (the shared subscription's round robin), so both servers ask the LLM server at the same time;
both requests are answered once, with real text, and the LLM server saw both.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import aiomqtt
import pytest

from ai_server.llm.embedded import shipped_model_path
from shared.mqtt import topics
from tests.conftest import Broker
from tests.llama_server import llama_cpp_server
from tests.scale.conftest import AiProcess

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(300)]


@pytest.fixture
def llm_server(tmp_path: Path) -> Iterator[str]:
    pytest.importorskip("llama_cpp.server", reason="llama-cpp-python[server] is not installed")
    # Its default cuts a streaming answer off when another request arrives: with several AI
    # servers that is every concurrent turn (measured: one of two answers came back empty).
    with llama_cpp_server(shipped_model_path(), tmp_path / "llama-server.log", "--model_alias", "shared",
                          "--interrupt_requests", "false") as url:
        yield url


async def test_two_ai_servers_answer_with_one_shared_llm_server_at_once(
    mosquitto: Broker, ai_processes: list[AiProcess], tmp_path: Path, llm_server: str
) -> None:
    broker = f"{mosquitto.host}:{mosquitto.port}"
    a = AiProcess("A", tmp_path / "a", broker, llm_base_url=llm_server)
    b = AiProcess("B", tmp_path / "b", broker, llm_base_url=llm_server)
    ai_processes += [a, b]
    await asyncio.gather(asyncio.to_thread(a.start), asyncio.to_thread(b.start))
    session = f"web-{uuid.uuid4().hex[:8]}"
    async with aiomqtt.Client(mosquitto.host, mosquitto.port, identifier=f"app-{session}") as app:
        await app.subscribe(topics.chat_reply(session), qos=1)
        await asyncio.sleep(1.0)  # both control planes connect and subscribe (no hook to wait on)
        for i in (1, 2):
            question = "What colour is the sky on a clear day?"
            request = {"session_id": session, "text": question, "conversation_id": f"c-{i}"}
            await app.publish(topics.chat_request(session), json.dumps(request), qos=1)
        answers = []
        async with asyncio.timeout(120):
            async for msg in app.messages:
                assert isinstance(msg.payload, bytes)
                answers.append(json.loads(msg.payload))
                if len(answers) == 2:
                    break
    assert sorted(r["conversation_id"] for r in answers) == ["c-1", "c-2"], answers
    assert all(r["error"] is None and r["text"].strip() for r in answers), answers
    assert (tmp_path / "llama-server.log").read_text().count("POST /v1/chat/completions") == 2
