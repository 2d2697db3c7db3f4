"""MQTT work shared by several AI servers (issue 21): chat requests and uploads are taken through a
shared subscription ($share/<AI_MQTT_SHARE_GROUP>/...), so each is answered exactly once however many
AI servers share the broker; device statuses stay plain (every server keeps the registry).

1. Two real AI server processes on one mosquitto: chat requests published once are each answered
   exactly once, and both servers take a share.
2. The broker as ``naila init`` deploys it (deploy/mosquitto: TLS, passwords, the shipped ACL): the
   AI server's user may take ``$share/naila-ai/naila/chat/+/request`` (mosquitto checks a shared
   subscription against the topic after the group), each message goes to one of two members, and
   device statuses still reach both.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections import Counter
from pathlib import Path

import aiomqtt
import pytest

from ai_server.control.plane import subscriptions
from shared.mqtt import topics
from shared.mqtt_link import MqttLink
from tests.conftest import Broker
from tests.integration.test_mosquitto_acl import AI, APP, DEV, WAIT_S, deployment
from tests.scale.ai_process import reply_of
from tests.scale.conftest import AiProcess

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

GROUP = "naila-ai"  # AI_MQTT_SHARE_GROUP's default


@pytest.mark.slow
async def test_a_chat_request_is_answered_exactly_once_by_one_of_two_ai_servers(
    mosquitto: Broker, ai_processes: list[AiProcess], tmp_path: Path
) -> None:
    broker = f"{mosquitto.host}:{mosquitto.port}"
    a, b = AiProcess("A", tmp_path / "a", broker), AiProcess("B", tmp_path / "b", broker)
    ai_processes += [a, b]
    await asyncio.gather(asyncio.to_thread(a.start), asyncio.to_thread(b.start))
    session = f"web-{uuid.uuid4().hex[:8]}"
    n = 12  # within the default chat budget (AI_MQTT_RATE_BURST)
    async with aiomqtt.Client(mosquitto.host, mosquitto.port, identifier=f"app-{session}") as app:
        await app.subscribe(topics.chat_reply(session), qos=1)
        await asyncio.sleep(1.0)  # both servers' control planes connect and subscribe (no hook to wait on)
        for i in range(n):
            request = {"session_id": session, "text": f"question {i}", "conversation_id": f"c-{i}"}
            await app.publish(topics.chat_request(session), json.dumps(request), qos=1)
        replies: Counter[str] = Counter()
        by: Counter[str] = Counter()

        async def read(until_all: bool) -> None:
            async for msg in app.messages:
                assert isinstance(msg.payload, bytes)
                data = json.loads(msg.payload)
                assert data["error"] is None, data
                replies[data["conversation_id"]] += 1
                by[data["text"].strip()] += 1
                if until_all and len(replies) == n:
                    return

        async with asyncio.timeout(60):
            await read(until_all=True)
        # A second answer to any of them would arrive within a reply's time (1.5 s): read 3 s more.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(3.0):
                await read(until_all=False)
    assert set(replies) == {f"c-{i}" for i in range(n)} and set(replies.values()) == {1}, replies
    assert by[reply_of("A")] > 0 and by[reply_of("B")] > 0, f"one server took every request: {by}"


async def test_the_shipped_acl_lets_the_ai_server_share_requests_and_keeps_statuses_for_all(tmp_path: Path) -> None:
    with deployment(tmp_path) as dep:
        received: dict[str, list[str]] = {"one": [], "two": []}
        n = 10
        everything = n + 2  # each request once, the status twice (once per server)
        all_in = asyncio.Event()
        links = []
        for name in received:

            async def on_message(topic: str, payload: bytes, name: str = name) -> None:
                received[name].append(f"{topic} {payload.decode()}")
                if sum(len(v) for v in received.values()) >= everything:
                    all_in.set()

            link = MqttLink(
                dep.settings(AI),
                client_id=f"naila-ai-server-{name}",
                subscriptions=subscriptions(GROUP),
                on_message=on_message,
            )
            await link.start()
            links.append(link)
        try:
            for link in links:
                async with asyncio.timeout(WAIT_S):
                    await link.connected.wait()
            async with dep.client(APP) as app, dep.client(DEV) as dev:
                for i in range(n):
                    await app.publish(topics.chat_request("s1"), f"q{i}", qos=1)
                await dev.publish(topics.device_status(DEV), "online", qos=1)
                async with asyncio.timeout(WAIT_S):
                    await all_in.wait()
            requests = [m for v in received.values() for m in v if "/chat/" in m]
            assert sorted(requests) == sorted(f"{topics.chat_request('s1')} q{i}" for i in range(n))
            assert all(f"{topics.device_status(DEV)} online" in v for v in received.values())
            assert all(any("/chat/" in m for m in v) for v in received.values()), "the broker shared them out"
        finally:
            for link in links:
                await link.stop()
