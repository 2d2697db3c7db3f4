"""OpenAICompatLLM against a small local server speaking the streaming chat-completions SSE protocol."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from ai_server.errors import LLMError
from ai_server.llm.openai_compat import OpenAICompatLLM
from shared.aio import closing

pytestmark = pytest.mark.integration


@dataclass
class FakeOpenAIServer:
    pieces: list[str] = field(default_factory=lambda: ["The ", "moon ", "is ", "far."])
    delay_s: float = 0.0
    status: int = 200
    requests: list[dict[str, Any]] = field(default_factory=list)
    disconnected: asyncio.Event = field(default_factory=asyncio.Event)

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(body)
        if self.status != 200:
            return web.json_response({"error": {"message": "model is loading"}}, status=self.status)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        try:
            for i, piece in enumerate(self.pieces):
                if self.delay_s:
                    await asyncio.sleep(self.delay_s)
                chunk = {
                    "id": "chatcmpl-1", "object": "chat.completion.chunk", "created": int(time.time()),
                    "model": body["model"],
                    "choices": [{"index": 0, "delta": ({"role": "assistant"} if i == 0 else {}) | {"content": piece},
                                 "finish_reason": None}],
                }
                await resp.write(f"data: {json.dumps(chunk)}\n\n".encode())
            done = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": int(time.time()),
                    "model": body["model"], "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
            await resp.write(f"data: {json.dumps(done)}\n\ndata: [DONE]\n\n".encode())
        except (ConnectionResetError, asyncio.CancelledError):
            self.disconnected.set()
            raise
        return resp


@pytest.fixture
async def openai_server() -> AsyncIterator[tuple[FakeOpenAIServer, str]]:
    fake = FakeOpenAIServer()
    app = web.Application()
    app.router.add_post("/v1/chat/completions", fake.chat)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield fake, f"http://127.0.0.1:{port}/v1"
    await runner.cleanup()


async def test_streams_pieces_and_sends_the_request_the_server_expects(
    openai_server: tuple[FakeOpenAIServer, str],
) -> None:
    fake, url = openai_server
    llm = OpenAICompatLLM(url, "smollm2", api_key="k", max_tokens=64, temperature=0.2)
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "How far is the moon?"}]
    async with closing(llm.stream(messages)) as it:  # type: ignore[arg-type]
        pieces = [p async for p in it]
    assert pieces == ["The ", "moon ", "is ", "far."]
    req = fake.requests[0]
    assert req["model"] == "smollm2" and req["stream"] is True
    assert req["messages"] == messages and req["max_tokens"] == 64 and req["temperature"] == 0.2
    await llm.close()


async def test_server_error_is_an_llm_error(openai_server: tuple[FakeOpenAIServer, str]) -> None:
    fake, url = openai_server
    fake.status = 503
    llm = OpenAICompatLLM(url, "smollm2")
    with pytest.raises(LLMError, match=r"503|loading"):
        async with closing(llm.stream([{"role": "user", "content": "hi"}])) as it:
            [p async for p in it]
    await llm.close()


async def test_unreachable_server_is_an_llm_error() -> None:
    llm = OpenAICompatLLM("http://127.0.0.1:9/v1", "smollm2", timeout_s=5)
    with pytest.raises(LLMError, match=re.escape("127.0.0.1:9")):
        async with closing(llm.stream([{"role": "user", "content": "hi"}])) as it:
            [p async for p in it]
    await llm.close()


async def test_closing_early_hangs_up_so_the_server_stops_generating(
    openai_server: tuple[FakeOpenAIServer, str],
) -> None:
    fake, url = openai_server
    fake.pieces = [f"w{i} " for i in range(200)]
    fake.delay_s = 0.02
    llm = OpenAICompatLLM(url, "smollm2")
    got = []
    async with closing(llm.stream([{"role": "user", "content": "long story"}])) as it:
        async for p in it:
            got.append(p)
            if len(got) == 3:
                break
    await asyncio.wait_for(fake.disconnected.wait(), 5)
    assert len(got) == 3
    with contextlib.suppress(Exception):
        await llm.close()
