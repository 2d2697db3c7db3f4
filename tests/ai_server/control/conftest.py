"""Fixtures for the MQTT control plane: an AI server (fake models) on the session's real mosquitto.

The broker is shared by the whole test session and keeps retained messages, so every test
uses fresh ids (``uid``). ``Watch`` reads one aiomqtt client in the background and hands out
messages per topic, so a test can wait for a topic without eating the others.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiomqtt
import pytest
from PIL import Image

from ai_server.app import AIServer
from ai_server.control.plane import ControlPlane
from device_agent.camera import Snapshot
from device_agent.mqtt_agent import MqttAgent
from shared.config import DeviceSettings, MediaSettings, MqttSettings, load
from shared.mqtt import DeviceStatus, build, outbound, topics
from tests.conftest import Broker

ServerFactory = Callable[..., Awaitable[AIServer]]


def uid(prefix: str) -> str:
    """An id no other test of the session uses (retained messages outlive tests)."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def image_bytes(fmt: str = "PNG", size: tuple[int, int] = (64, 48)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(buf, format=fmt)
    return buf.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


class Watch:
    """Everything one MQTT client receives, queued per topic."""

    def __init__(self, client: aiomqtt.Client) -> None:
        self.client = client
        self._queues: dict[str, asyncio.Queue[aiomqtt.Message]] = {}
        self._task = asyncio.create_task(self._read())

    def _queue(self, topic: str) -> asyncio.Queue[aiomqtt.Message]:
        return self._queues.setdefault(topic, asyncio.Queue())

    async def _read(self) -> None:
        async for msg in self.client.messages:
            self._queue(msg.topic.value).put_nowait(msg)

    async def subscribe(self, *filters: str) -> None:
        for f in filters:
            await self.client.subscribe(f, qos=1)

    async def next(self, topic: str, within_s: float = 5.0) -> aiomqtt.Message:
        return await asyncio.wait_for(self._queue(topic).get(), within_s)

    async def next_json(self, topic: str, within_s: float = 5.0) -> dict[str, Any]:
        msg = await self.next(topic, within_s)
        assert isinstance(msg.payload, bytes)
        data = json.loads(msg.payload)
        assert isinstance(data, dict)
        return data

    async def nothing_on(self, topic: str, within_s: float) -> bool:
        with contextlib.suppress(TimeoutError):
            await self.next(topic, within_s)
            return False
        return True

    async def publish(self, topic: str, payload: bytes | str | dict[str, Any], *, retain: bool = False) -> None:
        raw = json.dumps(payload).encode() if isinstance(payload, dict) else payload
        await self.client.publish(topic, raw, qos=1, retain=retain)

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
            await self._task


@pytest.fixture
def mqtt_settings(mosquitto: Broker) -> MqttSettings:
    return load(MqttSettings, mqtt_host=mosquitto.host, mqtt_port=mosquitto.port, mqtt_keepalive_s=5)


@pytest.fixture
async def watch(mosquitto: Broker) -> AsyncIterator[Watch]:
    async with aiomqtt.Client(mosquitto.host, mosquitto.port, identifier=uid("watch")) as client:
        w = Watch(client)
        yield w
        await w.close()


ControlFactory = Callable[..., Awaitable[tuple[AIServer, ControlPlane]]]


@pytest.fixture
async def control_server(make_server: ServerFactory, mqtt_settings: MqttSettings) -> ControlFactory:
    """``await control_server(settings={...}, media={...}, llm=...)``: a server whose control plane is connected."""

    async def make(
        *, settings: dict[str, Any] | None = None, media: dict[str, Any] | None = None, **kw: Any
    ) -> tuple[AIServer, ControlPlane]:
        server = await make_server(
            settings={"ai_mqtt": True, **(settings or {})},
            mqtt=mqtt_settings,
            media=load(MediaSettings, **(media or {})),
            **kw,
        )
        assert server.control is not None
        await server.control.wait_connected(10)
        return server, server.control

    return make


async def announce_device(
    watch: Watch,
    device_id: str,
    *,
    online: bool = True,
    capabilities: tuple[str, ...] = ("audio", "speaker", "video", "snapshot"),
    room: str | None = "kitchen",
    zone: str | None = "front_door",
) -> None:
    """Publish a retained DeviceStatus as a device would."""
    status = build(
        DeviceStatus,
        device_id=device_id,
        online=online,
        capabilities=list(capabilities),
        firmware_version="t-1",
        room=room,
        zone=zone,
    )
    out = outbound(topics.device_status(device_id), status)
    await watch.client.publish(out.topic, out.payload, qos=out.qos, retain=out.retain)


async def until(cond: Callable[[], bool], within_s: float = 5.0) -> None:
    deadline = time.monotonic() + within_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


class FakeDeviceControl:
    """The device side of commands (device_agent.commands.DeviceControl) without audio or camera."""

    def __init__(self, jpeg: bytes | None) -> None:
        self.jpeg = jpeg
        self.volume = 100
        self.muted = False
        self.agent: MqttAgent | None = None

    def set_volume(self, level: int) -> None:
        self.volume = level

    def set_mic_muted(self, muted: bool) -> None:
        self.muted = muted

    def restart_stream(self) -> None:
        pass

    async def snapshot(self, quality: int, size: tuple[int, int] | None) -> Snapshot | None:
        if self.jpeg is None:
            return None  # no camera: the device refuses media requests (and never uploads)
        width, height = Image.open(io.BytesIO(self.jpeg)).size
        return Snapshot(self.jpeg, width, height)

    async def publish_status(self) -> dict[str, Any]:
        assert self.agent is not None
        return await self.agent.publish_status()


@contextlib.asynccontextmanager
async def real_device(
    mqtt: MqttSettings, device_id: str, *, camera: bool = True, zone: str = "porch"
) -> AsyncIterator[tuple[MqttAgent, FakeDeviceControl]]:
    """A real device_agent MqttAgent (status, will, commands, media requests) on the test broker."""
    control = FakeDeviceControl(image_bytes("JPEG", (80, 60)) if camera else None)
    settings = load(DeviceSettings, device_id=device_id, device_room="hall", device_zone=zone)
    agent = MqttAgent(mqtt, settings, control, capabilities=["audio", "speaker", "snapshot"], firmware_version="test-1")
    control.agent = agent
    await agent.start()
    try:
        await asyncio.wait_for(agent.connected.wait(), 10)
        yield agent, control
    finally:
        await agent.stop()
