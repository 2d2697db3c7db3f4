"""Finding M1 on the real stack: a chat request published while the AI server is down is answered
when it comes back (persistent session under AI_MQTT_CLIENT_ID, QoS 1 queued by the broker), and
what the server's byte-bounded inbox has no room for is answered "busy", never dropped in silence.

The session's mosquitto keeps sessions in memory (persistence off), which is all this needs: the
broker stays up, the AI server restarts. Broker restarts with persistence are covered by
tests/integration/test_mqtt_link.py::test_a_persistent_session_gets_what_was_published_while_it_was_away.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiomqtt
import pytest

from ai_server.app import AIServer, start_server
from ai_server.fakes import FakeLLM, FakeSTT, FakeTTS
from shared.config import AIServerSettings, MediaSettings, MqttSettings, load
from shared.mqtt import topics
from tests.conftest import Broker

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def server(broker: Broker, client_id: str, answer: str) -> AIServer:
    # A share group of its own: the session-wide broker still holds other tests' persistent AI server
    # sessions, and mosquitto hands a shared subscription's message to members that are offline too.
    settings = load(AIServerSettings, ai_mqtt_client_id=client_id, vision_enabled=False,
                    ai_mqtt_share_group=uid("naila-ai"))
    mqtt = load(MqttSettings, mqtt_host=broker.host, mqtt_port=broker.port, mqtt_keepalive_s=5)
    ai = await start_server(settings, stt=FakeSTT(), llm=FakeLLM(answer), tts=FakeTTS(), host="127.0.0.1", port=0,
                            metrics_port=0, warm=False, mqtt=mqtt, media=load(MediaSettings))
    assert ai.control is not None
    await ai.control.wait_connected(10)
    return ai


@pytest.fixture
async def app(mosquitto: Broker) -> AsyncIterator[aiomqtt.Client]:
    """A chat client (as the web app would be) subscribed to its replies."""
    async with aiomqtt.Client(mosquitto.host, mosquitto.port, identifier=uid("app")) as client:
        yield client


async def next_reply(client: aiomqtt.Client, within_s: float = 10.0) -> dict[str, Any]:
    async with asyncio.timeout(within_s):
        async for msg in client.messages:
            assert isinstance(msg.payload, bytes)
            data = json.loads(msg.payload)
            assert isinstance(data, dict)
            return data
    raise AssertionError("no reply")


async def test_a_chat_request_sent_while_the_ai_server_is_down_is_answered_when_it_returns(
    mosquitto: Broker, app: aiomqtt.Client
) -> None:
    client_id = uid("naila-ai-server")
    session = uid("web")
    await app.subscribe(topics.chat_reply(session), qos=1)

    first = await server(mosquitto, client_id, "first life")
    assert first.control is not None and first.control.link.persistent
    await first.stop(grace=0)  # the AI server restarts (an upgrade, a crash)

    request = {"session_id": session, "text": "are you there?", "conversation_id": "c-1"}
    await app.publish(topics.chat_request(session), json.dumps(request), qos=1)

    second = await server(mosquitto, client_id, "back again")
    try:
        reply = await next_reply(app)
        assert (reply["text"], reply["conversation_id"], reply["error"]) == ("back again", "c-1", None)
    finally:
        await second.stop(grace=0)


async def test_without_a_fixed_client_id_the_session_is_clean(mosquitto: Broker, app: aiomqtt.Client) -> None:
    """The contrast (and what AI_MQTT_CLIENT_ID="" gives tests): nothing waits for a random id."""
    session = uid("web")
    await app.subscribe(topics.chat_reply(session), qos=1)
    first = await server(mosquitto, "", "first life")
    assert first.control is not None and not first.control.link.persistent
    await first.stop(grace=0)
    request = {"session_id": session, "text": "are you there?", "conversation_id": "c-1"}
    await app.publish(topics.chat_request(session), json.dumps(request), qos=1)
    second = await server(mosquitto, "", "back again")
    try:
        with pytest.raises(TimeoutError):
            await next_reply(app, within_s=1.0)
    finally:
        await second.stop(grace=0)


async def test_what_the_inbox_has_no_room_for_is_answered_busy(mosquitto: Broker, app: aiomqtt.Client) -> None:
    session = uid("web")
    await app.subscribe(topics.chat_reply(session), qos=1)
    ai = await server(mosquitto, "", "unused")
    try:
        plane = ai.control
        assert plane is not None
        # What the link hands over when its inbox is full (tests/integration/test_mqtt_link.py fills one).
        payload = json.dumps({"session_id": session, "text": "hello", "conversation_id": "c-9"}).encode()
        plane.on_overflow(topics.chat_request(session), payload)
        reply = await next_reply(app)
        assert reply["conversation_id"] == "c-9" and reply["error"].startswith("refused (busy)")
        assert plane.metrics.rejected["busy"] == 1
    finally:
        await ai.stop(grace=0)
