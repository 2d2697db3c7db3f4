"""Image questions: HTTP upload -> WebUpload on the real mosquitto -> a test client playing the
AI server -> ChatReply -> the HTTP answer. Plus the limits (size, format, timeouts, no broker)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import struct
import zlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import aiomqtt
import pytest

from shared.mqtt import ChatReply, WebUpload, build, decode_message, outbound, topics
from tests.web.conftest import HubMaker, client, login

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


def png(width: int = 64, height: int = 48) -> bytes:
    """A real PNG (half red, half black), written by hand: no imaging library needed."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\x00" + b"\xff\x00\x00" * (width // 2) + b"\x00\x00\x00" * (width - width // 2)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(row * height))
        + chunk(b"IEND", b"")
    )


def form(
    image: bytes,
    question: str = "",
    session_id: str | None = None,
    filename: str = "photo.png",
    content_type: str = "image/png",
) -> aiohttp.FormData:
    f = aiohttp.FormData()
    f.add_field("image", image, filename=filename, content_type=content_type)
    if question:
        f.add_field("question", question)
    if session_id:
        f.add_field("session_id", session_id)
    return f


Answerer = Callable[[WebUpload], str | None]


@contextlib.asynccontextmanager
async def fake_ai_server(
    broker: Any, answer: Answerer, *, reverse_pairs: bool = False
) -> AsyncIterator[list[WebUpload]]:
    """Subscribes to image uploads and answers each on naila/chat/{session}/reply (None: stay silent).
    ``reverse_pairs``: hold the first upload until the second arrives, then answer them in reverse."""
    seen: list[WebUpload] = []
    async with aiomqtt.Client(
        broker.host, broker.port, identifier=f"fake-ai-{os.getpid()}-{id(seen)}", max_queued_incoming_messages=100
    ) as mq:
        await mq.subscribe(topics.ALL_UPLOADS, qos=1)

        async def reply(up: WebUpload) -> None:
            text = answer(up)
            if text is None:
                return
            msg = build(ChatReply, session_id=up.session_id, text=text, conversation_id=up.conversation_id or "x")
            out = outbound(topics.chat_reply(up.session_id), msg)
            await mq.publish(out.topic, out.payload, qos=out.qos)

        async def serve() -> None:
            held: list[WebUpload] = []
            async for m in mq.messages:
                _, up = decode_message(m.topic.value, bytes(m.payload))  # type: ignore[arg-type]
                assert isinstance(up, WebUpload)
                seen.append(up)
                if reverse_pairs:
                    held.append(up)
                    if len(held) == 2:
                        for u in reversed(held):
                            await reply(u)
                        held.clear()
                else:
                    await reply(up)

        task = asyncio.create_task(serve())
        try:
            yield seen
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def _post(http: aiohttp.ClientSession, url: str, data: aiohttp.FormData) -> tuple[int, dict[str, Any]]:
    async with http.post(f"{url}/api/upload", data=data) as r:
        return r.status, await r.json(content_type=None)


async def test_image_question_goes_over_mqtt_and_comes_back(make_web_hub: HubMaker, mosquitto: Any) -> None:
    hub = await make_web_hub(broker=mosquitto)
    image = png()

    def answer(up: WebUpload) -> str:
        return f"A {up.format} of {len(up.data)} bytes; you asked: {up.context}"

    async with fake_ai_server(mosquitto, answer) as seen, client() as http:
        await login(http, hub.url)
        status, body = await _post(
            http,
            hub.url,
            form(
                image,
                "What colour is the left half?",
                "web-abc123",
                filename="../secret/photo.jpg",
                content_type="image/jpeg",
            ),
        )
    assert status == 200, body
    assert body["answer"] == f"A png of {len(image)} bytes; you asked: What colour is the left half?"
    assert body["session_id"] == "web-abc123" and body["format"] == "png"
    [up] = seen
    # Spec 8.9: the WebUpload as the AI server receives it.
    assert up.session_id == "web-abc123" and up.media_type == "image" and up.format == "png"
    assert up.data == image and up.context == "What colour is the left half?"
    assert up.filename == "photo.png", "sniffed format wins over the browser's name and type; no path"
    assert up.conversation_id and up.conversation_id == body["conversation_id"]


async def test_answers_find_their_own_question(make_web_hub: HubMaker, mosquitto: Any) -> None:
    hub = await make_web_hub(broker=mosquitto)
    async with fake_ai_server(mosquitto, lambda up: f"answer to {up.context}", reverse_pairs=True), client() as http:
        await login(http, hub.url)
        results = await asyncio.gather(
            _post(http, hub.url, form(png(), "first", "web-same")),
            _post(http, hub.url, form(png(32, 32), "second", "web-same")),
        )
    assert [r[1]["answer"] for r in results] == ["answer to first", "answer to second"], results


async def test_upload_limits(make_web_hub: HubMaker, mosquitto: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDIA_MAX_UPLOAD_SIZE", "200000")  # the MQTT uploads' limit, made small for the test
    hub = await make_web_hub(broker=mosquitto, hub_web_upload_timeout_s=1.0)
    async with fake_ai_server(mosquitto, lambda up: None) as seen, client() as http:
        await login(http, hub.url)
        big = b"\x89PNG\r\n\x1a\n" + bytes(200_000)
        assert (await _post(http, hub.url, form(big)))[0] == 413
        fake_jpeg = b"<html><script>alert(1)</script></html>"
        status, body = await _post(http, hub.url, form(fake_jpeg, filename="x.jpg", content_type="image/jpeg"))
        assert status == 415 and "jpeg" in body["error"]
        assert (await _post(http, hub.url, form(b"GIF89a" + bytes(100), filename="a.gif")))[0] == 415
        assert (await _post(http, hub.url, form(png(), session_id="pi-kitchen")))[0] == 400
        async with http.post(f"{hub.url}/api/upload", data=b"raw", headers={"Content-Type": "image/png"}) as r:
            assert r.status == 400
        # Valid, but the AI server never answers: a clear timeout, not a hung request.
        status, body = await _post(http, hub.url, form(png(), "anyone?"))
        assert status == 504 and "no answer" in body["error"]
        await asyncio.sleep(0.3)
    assert len(seen) == 1, "only the valid upload was published"


async def test_upload_without_a_broker(make_web_hub: HubMaker) -> None:
    hub = await make_web_hub()  # HUB_MQTT off
    async with client() as http:
        await login(http, hub.url)
        status, body = await _post(http, hub.url, form(png()))
    assert status == 503 and "MQTT" in body["error"]
