"""The session-wide test broker stays fair to every test (tests/conftest.py): an AI server a test starts
gets a clean session and a shared-subscription group of the test's own, so the offline persistent AI
server sessions earlier tests leave behind never take its chat requests or uploads.

The hazard itself is mosquitto's: a shared subscription's messages go round-robin to every member of
the group, offline persistent ones included (queued for them), so requests vanish until they return.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import uuid

import aiomqtt
import pytest

from ai_server.app import AIServer, start_server
from ai_server.fakes import FakeLLM, FakeSTT, FakeTTS
from shared.config import AIServerSettings, MediaSettings, MqttSettings, load
from shared.mqtt import topics
from tests.conftest import Broker

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

PRODUCT_GROUP = "naila-ai"  # AI_MQTT_SHARE_GROUP's product default
REQUESTS = 4


async def leave_an_offline_member(broker: Broker, group: str) -> None:
    """What a stopped AI server with a fixed AI_MQTT_CLIENT_ID leaves on the broker (tests/scale's do)."""
    gone = aiomqtt.Client(
        broker.host, broker.port, identifier=f"naila-ai-server-gone-{uuid.uuid4().hex[:8]}", clean_session=False
    )
    async with gone:
        await gone.subscribe(f"$share/{group}/{topics.ALL_CHAT_REQUESTS}", qos=1)


async def start_ai_server(broker: Broker, **settings: object) -> AIServer:
    """An AI server as a test starts one; ``settings`` only what the test names."""
    mqtt = load(MqttSettings, mqtt_host=broker.host, mqtt_port=broker.port, mqtt_keepalive_s=5)
    ai = await start_server(
        load(AIServerSettings, vision_enabled=False, **settings),
        stt=FakeSTT(),
        llm=FakeLLM("here"),
        tts=FakeTTS(),
        host="127.0.0.1",
        port=0,
        metrics_port=0,
        warm=False,
        mqtt=mqtt,
        media=load(MediaSettings),
    )
    assert ai.control is not None
    await ai.control.wait_connected(10)
    return ai


async def answered(broker: Broker, within_s: float) -> int:
    """How many of REQUESTS chat requests, published once each, get a reply within ``within_s``."""
    session = f"web-{uuid.uuid4().hex[:8]}"
    replies: set[str] = set()
    async with aiomqtt.Client(broker.host, broker.port, identifier=f"app-{session}") as app:
        await app.subscribe(topics.chat_reply(session), qos=1)
        for i in range(REQUESTS):
            request = {"session_id": session, "text": "are you there?", "conversation_id": f"c-{i}"}
            await app.publish(topics.chat_request(session), json.dumps(request), qos=1)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within_s):
                async for msg in app.messages:
                    assert isinstance(msg.payload, bytes)
                    replies.add(json.loads(msg.payload)["conversation_id"])
                    if len(replies) == REQUESTS:
                        break
    return len(replies)


def test_a_test_gets_a_clean_session_and_a_share_group_of_its_own(ai_server_share_group: str) -> None:
    settings = load(AIServerSettings)
    assert settings.ai_mqtt_client_id == ""  # random id, clean session: nothing outlives the test
    assert settings.ai_mqtt_share_group == ai_server_share_group != PRODUCT_GROUP
    assert os.environ["AI_MQTT_SHARE_GROUP"] == ai_server_share_group  # subprocesses copy it


async def test_an_offline_persistent_server_in_the_default_group_takes_none_of_a_tests_requests(
    mosquitto: Broker,
) -> None:
    await leave_an_offline_member(mosquitto, PRODUCT_GROUP)
    ai = await start_ai_server(mosquitto)
    try:
        assert await answered(mosquitto, within_s=10) == REQUESTS
    finally:
        await ai.stop(grace=0)


async def test_in_the_same_group_the_offline_member_takes_its_share(mosquitto: Broker) -> None:
    """The hazard the share group of its own avoids (and what a test naming the group still meets)."""
    group = f"contrast-{uuid.uuid4().hex[:8]}"
    await leave_an_offline_member(mosquitto, group)
    ai = await start_ai_server(mosquitto, ai_mqtt_share_group=group)
    try:
        assert await answered(mosquitto, within_s=2) < REQUESTS
    finally:
        await ai.stop(grace=0)
