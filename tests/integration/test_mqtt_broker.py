"""The MQTT contract against a real mosquitto: retained status, last will on an unclean death, uploads.

The device side runs in a child process that is SIGKILLed: that is the only way to be sure no
DISCONNECT packet is sent (closing an aiomqtt client in-process always says goodbye), so the
broker must publish the will exactly as it would for a Pi losing power.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import textwrap
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Protocol

import aiomqtt
import pytest

from shared.mqtt import (
    DeviceStatus,
    WebUpload,
    decode,
    decode_message,
    last_will,
    outbound,
    topics,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

REPO_ROOT = Path(__file__).resolve().parents[2]
RECEIVE_TIMEOUT_S = 10.0


class Broker(Protocol):
    """What the ``mosquitto`` fixture (tests/conftest.py) yields."""

    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...


# The "device": registers its will, publishes its retained online status, then waits forever.
# Also the killed device of tests/ai_server/control/test_registry.py.
DEVICE_SCRIPT = textwrap.dedent(
    """
    import asyncio, sys

    import aiomqtt

    from shared.mqtt import DeviceStatus, last_will, outbound, topics

    async def main(host: str, port: int, device_id: str) -> None:
        status = DeviceStatus(
            device_id=device_id, online=True, capabilities=["audio", "speaker"],
            firmware_version="1.2.0", room="kitchen", zone="back_yard", ip="127.0.0.1",
        )
        will = last_will(status)
        async with aiomqtt.Client(
            host, port, identifier=f"device-{device_id}", keepalive=60,
            will=aiomqtt.Will(will.topic, will.payload, qos=will.qos, retain=will.retain),
        ) as client:
            out = outbound(topics.device_status(device_id), status)
            await client.publish(out.topic, out.payload, qos=out.qos, retain=out.retain)
            print("online", flush=True)
            await asyncio.Event().wait()

    asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3]))
    """
)


@asynccontextmanager
async def client(broker: Broker, name: str) -> AsyncIterator[aiomqtt.Client]:
    host, port = broker.host, broker.port
    async with aiomqtt.Client(host, port, identifier=f"{name}-{uuid.uuid4().hex[:8]}") as c:
        yield c


async def next_message(c: aiomqtt.Client) -> aiomqtt.Message:
    async with asyncio.timeout(RECEIVE_TIMEOUT_S):
        return await anext(aiter(c.messages))


async def clear_retained(broker: Broker, topic: str) -> None:
    """Leave the session-wide broker as we found it (an empty retained payload deletes)."""
    async with client(broker, "cleanup") as c:
        await c.publish(topic, b"", qos=1, retain=True)


async def test_retained_status_and_last_will_on_unclean_death(mosquitto: Broker) -> None:
    device_id = f"pi_{uuid.uuid4().hex[:10]}"
    status_topic = topics.device_status(device_id)
    host, port = mosquitto.host, mosquitto.port
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    device = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        DEVICE_SCRIPT,
        host,
        str(port),
        device_id,
        stdout=asyncio.subprocess.PIPE,
        env=env,
    )
    try:
        assert device.stdout is not None
        async with asyncio.timeout(30):
            line = await device.stdout.readline()
        assert line.strip() == b"online", f"device did not come up (exit code {device.returncode})"

        async with client(mosquitto, "hub") as hub:
            # Subscribing after the publish: the broker hands over the retained status.
            # Its own topic only: other tests leave retained statuses on the shared broker.
            await hub.subscribe(status_topic, qos=1)
            retained = await next_message(hub)
            assert retained.retain
            parsed, online = decode_message(retained.topic.value, retained.payload)
            assert parsed.device_id == device_id
            assert isinstance(online, DeviceStatus)
            assert online.online is True and online.room == "kitchen"
            assert online.capabilities == ["audio", "speaker"]

            # Power cut: no DISCONNECT, the TCP connection just dies with the process.
            device.send_signal(signal.SIGKILL)
            await device.wait()

            will_msg = await next_message(hub)
            assert will_msg.topic.value == status_topic
            offline = decode(DeviceStatus, will_msg.payload)
            assert offline.online is False
            assert offline.device_id == device_id
            assert offline.room == "kitchen" and offline.ip is None

        # The will was retained: a late subscriber learns the device is offline.
        async with client(mosquitto, "late") as late:
            await late.subscribe(status_topic, qos=1)
            msg = await next_message(late)
            assert msg.retain
            assert decode(DeviceStatus, msg.payload).online is False
    finally:
        if device.returncode is None:
            device.kill()
            await device.wait()
        await clear_retained(mosquitto, status_topic)


async def test_will_matches_helper_without_a_child_process(mosquitto: Broker) -> None:
    """The will payload is exactly what ``last_will`` built (no re-encoding on the way)."""
    device_id = f"pi_{uuid.uuid4().hex[:10]}"
    will = last_will(device_id)
    host, port = mosquitto.host, mosquitto.port
    async with client(mosquitto, "watcher") as watcher:
        await watcher.subscribe(will.topic, qos=1)
        dying = aiomqtt.Client(
            host, port, identifier=f"dying-{device_id}", will=aiomqtt.Will(will.topic, will.payload, 1, True)
        )
        await dying.__aenter__()
        try:
            # Shut the socket down under paho: the broker sees EOF without DISCONNECT.
            sock = dying._client.socket()
            assert isinstance(sock, socket.socket)
            sock.shutdown(socket.SHUT_RDWR)
            msg = await next_message(watcher)
            assert msg.payload == will.payload
        finally:
            with contextlib.suppress(aiomqtt.MqttError):  # already disconnected: that was the point
                await dying.__aexit__(None, None, None)
            await clear_retained(mosquitto, will.topic)


async def test_web_upload_through_the_broker(mosquitto: Broker) -> None:
    session_id = f"web_{uuid.uuid4().hex[:10]}"
    blob = os.urandom(512 * 1024)
    upload = WebUpload(
        session_id=session_id,
        media_type="image",
        format="jpeg",
        filename="photo.jpg",
        context="What's in this picture?",
        data=blob,
    )
    out = outbound(topics.upload(session_id, "image"), upload)
    async with client(mosquitto, "ai") as ai, client(mosquitto, "web") as web:
        await ai.subscribe(topics.ALL_UPLOADS, qos=1)
        await web.publish(out.topic, out.payload, qos=out.qos, retain=out.retain)
        msg = await next_message(ai)
        parsed, message = decode_message(msg.topic.value, msg.payload)
        assert parsed.session_id == session_id and parsed.upload_kind == "image"
        assert isinstance(message, WebUpload) and message.data == blob
