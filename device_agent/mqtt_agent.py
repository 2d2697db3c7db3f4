"""The device's MQTT side (aiomqtt): retained status with a last will, heartbeat, commands.

* ``naila/devices/{id}/status``: retained :class:`DeviceStatus`, ``online: true`` on connect and
  every ``DEVICE_HEARTBEAT_S``; the broker publishes the retained ``online: false`` will if the
  device vanishes, and a clean stop publishes it itself.
* ``.../command`` and ``.../media/request`` are handled by :class:`CommandHandler`.
* With ``DEVICE_SIGNALING=mqtt``, :attr:`MqttAgent.signaling` sends the WebRTC offers on
  ``.../signaling/offer`` and gets the answers on ``.../signaling/answer`` (subscribed here).
* QoS and retain come from the shared policy table (``shared.mqtt.outbound`` / ``policy_for``).
* The broker connection (:class:`shared.mqtt_link.MqttLink`) is redialled forever with backoff;
  every reconnect re-subscribes and republishes the retained status.
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
from device_agent.mqtt_signaling import MqttSignaling
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
    topics,
)
from shared.mqtt_link import MqttLink

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
        self.status_topic = topics.device_status(self.device_id)
        self.command_topic = topics.device_command(self.device_id)
        self.media_request_topic = topics.media_request(self.device_id)
        self.room = self._safe_label("DEVICE_ROOM", device.device_room)
        self.zone = self._safe_label("DEVICE_ZONE", device.device_zone)
        self.connects = 0
        self.heartbeats = 0
        self._heartbeat_task: asyncio.Task[None] | None = None
        self.link = MqttLink(
            mqtt,
            client_id=f"naila-device-{self.device_id}",
            subscriptions=[self.command_topic, self.media_request_topic],
            on_message=self._on_message,
            on_connect=self._on_connect,
            backoff=Backoff(backoff_initial_s, device.device_reconnect_max_s, rand=rng),
        )
        self.connected = self.link.connected
        self.signaling: MqttSignaling | None = None
        if device.device_signaling == "mqtt":
            self.signaling = MqttSignaling(
                self.link, self.device_id, token=device.device_hub_token, hub_id=device.device_hub_id or None
            )
            self.link.subscriptions.append(self.signaling.answer_topic)

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
            # issue 22: the privacy switches, so the dashboard and the AI server see them.
            camera_enabled=fields.get("camera_enabled"),
            microphone_enabled=fields.get("microphone_enabled"),
            # The hub runs the wake word for this device; None leaves the mode to the hub's settings.
            listening_mode=fields.get("listening_mode", self.device.device_listening_mode) or None,
        )

    async def publish_status(self, online: bool = True) -> dict[str, Any]:
        status = self.status(online)
        await self._publish(outbound(self.status_topic, status))
        return status.model_dump(mode="json")

    async def _publish(self, msg: OutboundMessage) -> None:
        await self.link.publish(msg)

    # -- lifecycle ------------------------------------------------------------------------
    async def start(self) -> None:
        try:
            will = last_will(self.status(online=True))
        except MessageError as exc:  # our own status does not validate: a config problem
            raise RuntimeError(f"cannot build the device status: {exc}") from exc
        self.link.will = OutboundMessage(will.topic, will.payload, will.qos, will.retain)
        log.info("MQTT: connecting to %s as %s", self.link.address, self.device_id)
        await self.link.start()

    async def stop(self) -> None:
        """Say goodbye (retained ``online: false``), disconnect cleanly, stop redialling."""
        # Stop the heartbeat first: an online status sent after the goodbye would stay retained.
        heartbeat, self._heartbeat_task = self._heartbeat_task, None
        if heartbeat is not None:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
        await self.link.stop(goodbye=outbound(self.status_topic, self.status(online=False)))

    async def _on_connect(self, link: MqttLink) -> None:
        await self.publish_status()
        self.connects += 1
        log.info("MQTT: online; listening on %s and %s", self.command_topic, self.media_request_topic)
        if self._heartbeat_task is None or self._heartbeat_task.done():
            self._heartbeat_task = asyncio.create_task(self._heartbeat(), name="mqtt-heartbeat")

    async def _on_message(self, topic: str, payload: bytes) -> None:
        if topic == self.command_topic:
            await self.handler.on_command(payload)
        elif topic == self.media_request_topic:
            await self.handler.on_media_request(payload)
        elif self.signaling is not None and topic == self.signaling.answer_topic:
            await self.signaling.on_answer(topic, payload)

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.device.device_heartbeat_s)
            if not self.link.connected.is_set():
                continue
            try:
                await self.publish_status()
                self.heartbeats += 1
            except aiomqtt.MqttError as exc:
                log.warning("MQTT heartbeat failed: %s", exc)
