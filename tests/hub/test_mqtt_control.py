"""The hub's MQTT component against a real mosquitto: listeners added before and after connecting,
wildcard matching, a failing listener isolated, removal, and a broker that comes back."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiomqtt
import pytest

from hub.metrics import HubMetrics
from hub.mqtt_control import HubMqtt
from shared.backoff import Backoff
from shared.config import MqttSettings, load
from shared.mqtt import Alert, DeviceStatus, encode, topics
from tests.conftest import Broker, free_port

pytestmark = pytest.mark.integration


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def probe(mosquitto: Broker) -> AsyncIterator[aiomqtt.Client]:
    async with aiomqtt.Client(mosquitto.host, mosquitto.port, identifier=uid("probe")) as client:
        yield client


def start_mosquitto(port: int, conf_dir: Path) -> subprocess.Popen[bytes]:
    conf = conf_dir / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    return subprocess.Popen([exe, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop_mosquitto(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


class Inbox:
    """A listener that records what it gets (the session broker also holds other tests' retained statuses)."""

    def __init__(self) -> None:
        self.got: list[tuple[str, bytes]] = []
        self.changed = asyncio.Event()

    async def __call__(self, topic: str, payload: bytes) -> None:
        self.got.append((topic, payload))
        self.changed.set()

    def on(self, topic: str) -> list[bytes]:
        return [payload for t, payload in self.got if t == topic]

    async def wait_for(self, topic: str, n: int = 1, within_s: float = 5.0) -> None:
        async with asyncio.timeout(within_s):
            while len(self.on(topic)) < n:
                self.changed.clear()
                await self.changed.wait()


async def test_listeners_get_what_matches_their_filter_and_a_failing_one_is_isolated(
    mosquitto: Broker, probe: aiomqtt.Client
) -> None:
    metrics = HubMetrics()
    mqtt = HubMqtt(load(MqttSettings, mqtt_host=mosquitto.host, mqtt_port=mosquitto.port), uid("hub"), metrics)
    statuses, alerts, late = Inbox(), Inbox(), Inbox()
    broken_calls = 0

    async def broken(topic: str, payload: bytes) -> None:
        nonlocal broken_calls
        broken_calls += 1
        raise RuntimeError("a bug in some hub module")

    # Registered before start, from synchronous setup code (no event loop needed to register).
    mqtt.add_listener(topics.ALL_DEVICE_STATUS, broken)
    remove_statuses = mqtt.add_listener(topics.ALL_DEVICE_STATUS, statuses)
    mqtt.add_listener(topics.ALERTS_ALL, alerts)
    await mqtt.start()
    try:
        assert await mqtt.wait_connected(5) and metrics.mqtt_connected()
        dev = uid("pi")
        status_topic = topics.device_status(dev)
        status = DeviceStatus(device_id=dev, online=True, capabilities=["audio"], firmware_version="1")
        await probe.publish(status_topic, encode(status), qos=1)
        alert = Alert(alert_type="motion", zone="yard", confidence=0.9, source_device=dev)
        await probe.publish(topics.alert("yard", "motion"), encode(alert), qos=1)  # not subscribed: not seen
        await probe.publish(topics.ALERTS_ALL, encode(alert), qos=1)
        await statuses.wait_for(status_topic)
        await alerts.wait_for(topics.ALERTS_ALL)
        assert statuses.on(status_topic) == [encode(status)]
        assert alerts.got == [(topics.ALERTS_ALL, encode(alert))]
        # The broken listener ran on every status, failed each time, and nobody else noticed.
        assert broken_calls >= 1 and metrics.mqtt_listener_errors == broken_calls == len(statuses.got)

        # Added while connected: subscribed at once. Removed: no longer called.
        events_topic = topics.device_events(dev)
        mqtt.add_listener(events_topic, late)
        remove_statuses()
        await asyncio.sleep(0.2)  # the SUBACK round trip
        await probe.publish(status_topic, encode(status), qos=1)
        await probe.publish(events_topic, json.dumps({"event": "button", "device_id": dev}).encode(), qos=1)
        await late.wait_for(events_topic)  # same connection, in order: the status came before
        assert statuses.on(status_topic) == [encode(status)]
        assert metrics.mqtt_listener_errors == broken_calls and broken_calls >= 2
        with pytest.raises(ValueError):
            mqtt.add_listener("naila/#/status", late)
    finally:
        await mqtt.stop()
    assert not mqtt.connected and not metrics.mqtt_connected()


async def test_no_broker_start_returns_and_it_connects_when_one_appears(tmp_path: Path) -> None:
    port = free_port()
    settings = load(MqttSettings, mqtt_host="127.0.0.1", mqtt_port=port)
    mqtt = HubMqtt(settings, uid("hub"), HubMetrics(), backoff=Backoff(0.05, 0.2))
    inbox = Inbox()
    mqtt.add_listener(topics.ALL_DEVICE_STATUS, inbox)
    await asyncio.wait_for(mqtt.start(), 1.0)  # returns at once without a broker
    try:
        await asyncio.sleep(0.3)
        assert not mqtt.connected
        broker = start_mosquitto(port, tmp_path)
        try:
            assert await mqtt.wait_connected(10), "never connected once the broker was up"
            async with aiomqtt.Client("127.0.0.1", port) as probe:
                dev = uid("pi")
                status = DeviceStatus(device_id=dev, online=True, capabilities=[], firmware_version="1")
                await probe.publish(topics.device_status(dev), encode(status), qos=1)
                await inbox.wait_for(
                    topics.device_status(dev)
                )  # the listener registered before any connection was subscribed
        finally:
            stop_mosquitto(broker)
    finally:
        await mqtt.stop()
