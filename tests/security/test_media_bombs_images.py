"""Finding H7, images: a 20 kB PNG that declares 13000x13000 pixels (169 MP, 1 bit each) cost about
1.6 GB and 5 s per upload in the old decode path. It is now refused "oversized" from its header
before any pixel is decoded; what is decoded at all is reduced to about 4 MP for analysis.
"""

from __future__ import annotations

import asyncio
import io
import json
import time
import uuid

import aiomqtt
import pytest
from PIL import Image

from ai_server.app import start_server
from ai_server.control.errors import Rejected
from ai_server.control.media_check import MediaPolicy
from ai_server.fakes import FakeLLM, FakeSTT, FakeTTS
from ai_server.media import analysis
from ai_server.media.analysis import ANALYSIS_PIXELS, BadImage, decode_image
from shared.config import AIServerSettings, MediaSettings, MqttSettings, load
from shared.mqtt import topics
from tests.ai_server.control.conftest import b64
from tests.conftest import Broker

pytestmark = [pytest.mark.timeout(60)]


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


@pytest.fixture(scope="module")
def bomb() -> bytes:
    buf = io.BytesIO()
    Image.new("1", (13000, 13000)).save(buf, "PNG", optimize=True)
    return buf.getvalue()


def encoded(size: tuple[int, int], fmt: str, mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, 128 if mode != "RGB" else (10, 200, 30)).save(buf, fmt)
    return buf.getvalue()


@pytest.mark.unit
def test_the_bomb_is_refused_from_its_header_quickly_and_without_memory(bomb: bytes) -> None:
    assert len(bomb) < 64_000
    policy = MediaPolicy(load(MediaSettings), max_pixels=40_000_000)
    before, started = rss_mib(), time.perf_counter()
    with pytest.raises(Rejected) as err:
        policy.check("image", "png", bomb)
    took_ms, grew = (time.perf_counter() - started) * 1000, rss_mib() - before
    print(f"13000x13000 PNG ({len(bomb)} bytes) refused in {took_ms:.1f} ms, RSS +{grew:.1f} MiB")
    assert err.value.reason == "oversized" and "169000000 pixels" in err.value.detail
    assert took_ms < 500 and grew < 20
    with pytest.raises(BadImage) as bad:  # and the decoder refuses it too, whoever calls it
        decode_image(bomb, "png", max_pixels=40_000_000)
    assert bad.value.reason == "oversized"


@pytest.mark.unit
def test_pillow_itself_raises_above_the_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)  # restored after the test
    monkeypatch.setattr(analysis, "_max_pixels", analysis._max_pixels)
    analysis.limit_pixels(1_000_000)
    with pytest.raises(Image.DecompressionBombWarning):  # not a warning any more: an error
        Image.open(io.BytesIO(encoded((1200, 1000), "PNG")))
    with pytest.raises(BadImage) as bad:  # the default cap of decode_image follows
        decode_image(encoded((1200, 1000), "PNG"))
    assert bad.value.reason == "oversized"
    assert decode_image(encoded((1000, 1000), "PNG")).width == 1000


@pytest.mark.unit
@pytest.mark.parametrize(("fmt", "mode"), [("JPEG", "RGB"), ("PNG", "RGB"), ("PNG", "1"), ("GIF", "P")])
def test_big_images_are_decoded_small_for_analysis(fmt: str, mode: str) -> None:
    image = decode_image(encoded((4000, 3000), fmt, mode))  # 12 MP
    rows, cols = image.bgr.shape[:2]
    assert rows * cols <= ANALYSIS_PIXELS and image.bgr.shape[2] == 3
    assert (image.width, image.height) == (4000, 3000)  # what was sent, for the context
    assert image.scale == pytest.approx(4000 / cols) and image.scale >= 1.7


@pytest.mark.unit
def test_a_truncated_big_jpeg_is_still_refused() -> None:
    data = encoded((4000, 3000), "JPEG")
    with pytest.raises(BadImage) as bad:
        decode_image(data[: len(data) // 2], "jpeg")
    assert bad.value.reason == "corrupt"


@pytest.mark.integration
async def test_an_upload_of_the_bomb_is_answered_oversized_and_the_server_carries_on(
    mosquitto: Broker, bomb: bytes
) -> None:
    # A share group of its own: the session-wide broker keeps other tests' offline persistent AI server
    # sessions in the default group, and mosquitto hands shared-subscription messages to those too.
    settings = load(AIServerSettings, ai_mqtt_client_id="", vision_enabled=False,
                    ai_mqtt_share_group=f"bombs-{uuid.uuid4().hex[:8]}")
    mqtt = load(MqttSettings, mqtt_host=mosquitto.host, mqtt_port=mosquitto.port, mqtt_keepalive_s=5)
    ai = await start_server(settings, stt=FakeSTT(), llm=FakeLLM("fine"), tts=FakeTTS(), host="127.0.0.1", port=0,
                            metrics_port=0, warm=False, mqtt=mqtt, media=load(MediaSettings))
    session = f"web-{uuid.uuid4().hex[:8]}"
    try:
        assert ai.control is not None
        await ai.control.wait_connected(10)
        async with aiomqtt.Client(mosquitto.host, mosquitto.port, identifier=f"app-{session}") as app:
            await app.subscribe(topics.chat_reply(session), qos=1)
            replies = app.messages
            for data, fmt in ((bomb, "png"), (encoded((64, 48), "PNG"), "png")):
                upload = {"session_id": session, "media_type": "image", "format": fmt, "filename": "x.png",
                          "context": "", "data": b64(data)}
                await app.publish(f"naila/uploads/{session}/image", json.dumps(upload), qos=1)
            async with asyncio.timeout(10):
                first = json.loads(bytes((await anext(replies)).payload))
                second = json.loads(bytes((await anext(replies)).payload))
        # Refused by the header check, or by Pillow's own (limit_pixels) while reading the header.
        assert first["error"].startswith("refused (oversized)") and "169000000 pixels" in first["error"]
        assert second["error"] is None and "64x48" in second["text"]
        assert ai.control.metrics.rejected["oversized"] == 1
    finally:
        await ai.stop(grace=0)
