"""The device's MQTT side (aiomqtt): retained status with a last will, heartbeat, commands.

* ``naila/devices/{id}/status``: retained :class:`DeviceStatus`, ``online: true`` on connect and
  every ``DEVICE_HEARTBEAT_S``; the broker publishes the retained ``online: false`` will if the
  device vanishes, and a clean stop publishes it itself.
* ``.../command`` and ``.../media/request`` are handled by :class:`CommandHandler`.
* QoS and retain come from the shared policy table (``shared.mqtt.outbound`` / ``policy_for``).
* The broker connection is redialled forever with exponential backoff and full jitter.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
from collections.abc import Callable
from typing import Any

import aiomqtt

from device_agent.commands import CommandHandler, DeviceControl
from shared.backoff import Backoff
from shared.config import DeviceSettings, MqttSettings
from shared.mqtt import (
    DeviceStatus,
    MessageError,
    OutboundMessage,
    build,
    is_safe_segment,
    last_will,
    offline_status,
    outbound,
    policy_for,
    topics,
)

log = logging.getLogger(__name__)


def local_ip_towards(host: str, port: int) -> str | None:
    """The address this machine uses to reach ``host`` (no packet is sent)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect((host, port))
            return str(s.getsockname()[0])
    except OSError:
        return None


class MqttAgent:
    """Keeps the device on the broker; see the module doc."""

    def __init__(
        self,
        mqtt: MqttSettings,
        device: DeviceSettings,
        control: DeviceControl,
        *,
        capabilities: list[str],
        firmware_version: str,
        status_fields: Callable[[], dict[str, Any]] = dict,
        rng: Callable[[], float] = random.random,
        backoff_initial_s: float = 0.5,
    ) -> None:
        self.mqtt = mqtt
        self.device = device
        self.device_id = device.device_id
        self.capabilities = capabilities
        self.firmware_version = firmware_version
        self._status_fields = status_fields
        self.handler = CommandHandler(self.device_id, control, self._publish)
        self.backoff = Backoff(backoff_initial_s, device.device_reconnect_max_s, rand=rng)
        self.status_topic = topics.device_status(self.device_id)
        self.command_topic = topics.device_command(self.device_id)
        self.media_request_topic = topics.media_request(self.device_id)
        self.room = self._safe_label("DEVICE_ROOM", device.device_room)
        self.zone = self._safe_label("DEVICE_ZONE", device.device_zone)
        self.connected = asyncio.Event()
        self.connects = 0
        self.heartbeats = 0
        self._client: aiomqtt.Client | None = None
        self._task: asyncio.Task[None] | None = None
        self._heartbeat_task: asyncio.Task[None] | None = None

    @staticmethod
    def _safe_label(var: str, value: str) -> str | None:
        if not value:
            return None
        if not is_safe_segment(value):
            log.warning("%s=%r is not a safe MQTT id ([A-Za-z0-9_.-]); left out of the status", var, value)
            return None
        return value

    # -- status ---------------------------------------------------------------------------
    def status(self, online: bool = True) -> DeviceStatus:
        if not online:
            return offline_status(
                self.device_id,
                firmware_version=self.firmware_version,
                capabilities=self.capabilities,
                room=self.room,
                zone=self.zone,
            )
        fields = self._status_fields()
        return build(
            DeviceStatus,
            device_id=self.device_id,
            online=True,
            capabilities=self.capabilities,
            firmware_version=self.firmware_version,
            room=self.room,
            zone=self.zone,
            ip=local_ip_towards(self.mqtt.mqtt_host, self.mqtt.mqtt_port),
            volume=fields.get("volume"),
            muted=fields.get("muted"),
        )

    async def publish_status(self, online: bool = True) -> dict[str, Any]:
        status = self.status(online)
        await self._publish(outbound(self.status_topic, status))
        return status.model_dump(mode="json")

    async def _publish(self, msg: OutboundMessage) -> None:
        client = self._client
        if client is None:
            raise aiomqtt.MqttError("not connected to the broker")
        await client.publish(msg.topic, msg.payload, qos=msg.qos, retain=msg.retain)

    # -- lifecycle ------------------------------------------------------------------------
    async def start(self) -> None:
        if self._task is not None:
            raise RuntimeError("MQTT agent already started")
        self._task = asyncio.create_task(self._run(), name="mqtt-agent")

    async def stop(self) -> None:
        """Say goodbye (retained ``online: false``), disconnect cleanly, stop redialling."""
        # Stop the heartbeat first: an online status sent after the goodbye would stay retained.
        heartbeat, self._heartbeat_task = self._heartbeat_task, None
        if heartbeat is not None:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
        if self._client is not None and self.connected.is_set():
            try:
                async with asyncio.timeout(2.0):
                    await self.publish_status(online=False)
                log.info("MQTT: published offline status")
            except (aiomqtt.MqttError, MessageError, TimeoutError) as exc:
                log.warning("MQTT: could not publish offline status: %s", exc)
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            try:
                await self._session()
            except aiomqtt.MqttError as exc:
                log.warning("MQTT %s:%d: %s", self.mqtt.mqtt_host, self.mqtt.mqtt_port, exc)
            except MessageError as exc:  # our own status does not validate: a config problem
                log.error("MQTT: cannot build the device status: %s", exc)
            except Exception:
                log.exception("MQTT session crashed")
            finally:
                self._client = None
                self.connected.clear()
            delay = self.backoff.next_delay()
            log.info("MQTT: reconnecting in %.2f s", delay)
            await asyncio.sleep(delay)

    def _client_for(self, will: aiomqtt.Will) -> aiomqtt.Client:
        m = self.mqtt
        return aiomqtt.Client(
            m.mqtt_host,
            m.mqtt_port,
            username=m.mqtt_username,
            password=m.mqtt_password.get_secret_value() if m.mqtt_password else None,
            identifier=f"naila-device-{self.device_id}",
            keepalive=m.mqtt_keepalive_s,
            will=will,
            tls_params=aiomqtt.TLSParameters() if m.mqtt_tls else None,
            timeout=10,
        )

    async def _session(self) -> None:
        w = last_will(self.status(online=True))
        log.info("MQTT: connecting to %s:%d as %s", self.mqtt.mqtt_host, self.mqtt.mqtt_port, self.device_id)
        async with self._client_for(aiomqtt.Will(w.topic, w.payload, w.qos, w.retain)) as client:
            self._client = client
            for topic in (self.command_topic, self.media_request_topic):
                await client.subscribe(topic, qos=policy_for(topic).qos)
            await self.publish_status()
            self.connected.set()
            self.connects += 1
            self.backoff.reset()
            log.info("MQTT: online; listening on %s and %s", self.command_topic, self.media_request_topic)
            heartbeat = asyncio.create_task(self._heartbeat(), name="mqtt-heartbeat")
            self._heartbeat_task = heartbeat
            try:
                async for message in client.messages:
                    topic = message.topic.value
                    if topic == self.command_topic:
                        await self.handler.on_command(message.payload)
                    elif topic == self.media_request_topic:
                        await self.handler.on_media_request(message.payload)
            finally:
                heartbeat.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await heartbeat

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.device.device_heartbeat_s)
            try:
                await self.publish_status()
                self.heartbeats += 1
            except aiomqtt.MqttError as exc:
                log.warning("MQTT heartbeat failed: %s", exc)
