"""The optional vision-model description (ai_server/media/describe.py) against a tiny local server that
speaks the OpenAI chat-completions shape and checks it received the image; failures fall back."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from typing import Any

import cv2
import numpy as np
import pytest
from aiohttp import web

from ai_server.media.analysis import ImageAnalyser
from ai_server.media.describe import VisionDescriber
from tests.ai_server.media.conftest import text_png

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


class VisionServer:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.images: list[np.ndarray] = []
        self.delay_s = 0.0
        self.status = 200

    async def chat(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append(body)
        [message] = body["messages"]
        text, image = message["content"]
        assert text["type"] == "text" and image["type"] == "image_url"
        head, data = image["image_url"]["url"].split(",", 1)
        assert head == "data:image/jpeg;base64"
        decoded = cv2.imdecode(np.frombuffer(base64.b64decode(data), np.uint8), cv2.IMREAD_COLOR)
        assert decoded is not None
        self.images.append(decoded)
        await asyncio.sleep(self.delay_s)
        if self.status != 200:
            return web.json_response({"error": {"message": "overloaded"}}, status=self.status)
        h, w = decoded.shape[:2]
        return web.json_response({
            "id": "c1", "object": "chat.completion", "created": 0, "model": body["model"],
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": f"A white {w}x{h} note."}}],
        })


@pytest.fixture
async def server() -> AsyncIterator[tuple[VisionServer, str]]:
    vs = VisionServer()
    app = web.Application()
    app.router.add_post("/v1/chat/completions", vs.chat)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield vs, f"http://127.0.0.1:{port}/v1"
    await runner.cleanup()


async def test_the_model_describes_the_image_it_received(server: tuple[VisionServer, str]) -> None:
    vs, url = server
    describer = VisionDescriber(url, "llava-test", timeout_s=5)
    found = await ImageAnalyser(None, None, describer).analyse(text_png(), source="mqtt_upload", session_id="s",
                                                                 question="what is this?")
    assert found.context.analysis.description == "A white 320x240 note."
    [body] = vs.requests
    assert body["model"] == "llava-test" and "what is this?" in body["messages"][0]["content"][0]["text"]
    assert vs.images[0].shape == (240, 320, 3) and describer.described == 1 and describer.failures == 0


@pytest.mark.parametrize("failure", ["timeout", "error status"])
async def test_a_failing_model_falls_back_to_the_composed_description(
    server: tuple[VisionServer, str], failure: str
) -> None:
    vs, url = server
    if failure == "timeout":
        vs.delay_s = 2.0
    else:
        vs.status = 503
    describer = VisionDescriber(url, "llava-test", timeout_s=0.5)
    found = await ImageAnalyser(None, None, describer).analyse(text_png(), source="mqtt_upload", session_id="s")
    assert found.context.analysis.description == "Not analysed."  # the composed one (no models here)
    assert describer.failures == 1 and describer.described == 0
