"""Listening modes through a real hub: push-to-talk over the real control data channel from an
aiortc peer, the page switching its mode, the mode a device reports in its MQTT status (real
mosquitto), and the effective mode in /health?detail=1. The AI server is the recording fake."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import aiomqtt
import numpy as np
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from hub.server import run_hub
from shared import control_channel
from shared.config import HubSettings, MqttSettings, WebRTCSettings, load
from shared.contract import pb
from shared.mqtt import DeviceStatus, build, outbound, topics
from tests.conftest import Broker
from tests.hub.conftest import RATE, Device, FakeAI, SpeechSource, get_json, post_connect, until

pytestmark = pytest.mark.integration


async def connect_with_control(url: str, device_id: str) -> tuple[Device, Any, list[dict[str, Any]]]:
    """A device peer that opens the control channel before its offer, as the page does."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    mic = SpeechSource()
    pc.addTransceiver(mic, direction="sendrecv")
    channel = pc.createDataChannel(control_channel.LABEL)
    received: list[dict[str, Any]] = []
    channel.on("message", lambda m: received.append(json.loads(m)))
    await pc.setLocalDescription(await pc.createOffer())
    status, body = await post_connect(url, {"device_id": device_id, "sdp": pc.localDescription.sdp})
    assert status == 200, body
    await pc.setRemoteDescription(RTCSessionDescription(sdp=body["sdp"], type="answer"))
    await until(lambda: pc.connectionState == "connected" and channel.readyState == "open", 10, "connected")
    return Device(device_id, pc, mic), channel, received


async def test_push_to_talk_over_the_control_channel(make_hub, fake_ai: FakeAI, phrase) -> None:  # type: ignore[no-untyped-def]
    hub = await make_hub(hub_listening_mode="push_to_talk")
    dev, channel, _ = await connect_with_control(hub.url, "page-1")
    try:
        silence = np.zeros(RATE // 2, dtype=np.int16)
        # Speech with the button up goes nowhere.
        await asyncio.sleep(dev.mic.say(np.concatenate([silence, phrase, silence])) + 0.3)
        assert pb.START not in fake_ai.events("page-1")
        assert hub.metrics.utterances_ignored["push_to_talk"] >= 1
        # Held: the phrase goes up; released mid-silence: the turn ends on release, not on the VAD.
        channel.send(json.dumps({"type": "ptt", "pressed": True}))
        await until(lambda: hub.sessions["page-1"].listening.pressed, 2, "button down at the hub")
        await asyncio.sleep(dev.mic.say(np.concatenate([silence, phrase])) + 0.1)
        assert fake_ai.events("page-1")[0] == pb.START
        channel.send(json.dumps({"type": "ptt", "pressed": False}))
        await until(lambda: pb.END in fake_ai.events("page-1"), 3, "END on release")
        assert len(fake_ai.utterances("page-1")) == 1
        # A malformed message is refused, counted, and the session carries on.
        channel.send(json.dumps({"type": "ptt", "pressed": "yes"}))
        channel.send(json.dumps({"type": "listening", "mode": "sometimes"}))
        await until(lambda: hub.metrics.control_rejected["bad_mode"] == 1, 2, "bad mode counted")
        assert hub.metrics.control_rejected["bad_ptt"] == 1
        # The page switches to always: speech goes up without the button.
        channel.send(json.dumps({"type": "listening", "mode": "always"}))
        await until(lambda: hub.sessions["page-1"].listening.mode == "always", 2, "mode switched")
        _, detail = await get_json(hub.url + "/health?detail=1")
        me = next(d for d in detail["devices"] if d["device_id"] == "page-1")
        assert me["listening_mode"] == "always" and me["listening_mode_source"] == "page"
    finally:
        await dev.close()


async def test_mode_from_the_devices_mqtt_status(
    fake_ai: FakeAI, loopback_ice: None, mosquitto: Broker
) -> None:
    mqtt = load(MqttSettings, mqtt_host=mosquitto.host, mqtt_port=mosquitto.port, mqtt_keepalive_s=5)
    settings = load(HubSettings, hub_host="127.0.0.1", hub_ai_server=f"127.0.0.1:{fake_ai.port}",
                    hub_device_tokens={}, hub_allow_unauthenticated=True, hub_id=f"t-{uuid.uuid4().hex[:8]}",
                    hub_listening_modes={"pi-den": "always"})
    hub = await run_hub(settings, WebRTCSettings(webrtc_ice_servers=[]), port=0, mqtt=mqtt)
    device = f"pi-den-{uuid.uuid4().hex[:6]}"
    try:
        assert hub.mqtt is not None and await hub.mqtt.wait_connected(5)
        assert hub.listening_modes.source_of("pi-den") == ("always", "config")
        assert hub.listening_modes.mode_of(device) == "wake_word"  # the product default
        status = build(DeviceStatus, device_id=device, online=True, capabilities=["audio"], firmware_version="1",
                       listening_mode="push_to_talk")
        msg = outbound(topics.device_status(device), status)
        async with aiomqtt.Client(mosquitto.host, mosquitto.port, identifier=f"p-{uuid.uuid4().hex[:8]}") as c:
            await c.publish(msg.topic, msg.payload, qos=1, retain=True)
            await until(lambda: hub.listening_modes.mode_of(device) == "push_to_talk", 5, "mode from status")
            await c.publish(msg.topic, b"", qos=1, retain=True)  # clear the retained status
        dev, _, _ = await connect_with_control(hub.url, device)
        try:
            assert hub.sessions[device].listening.mode == "push_to_talk"
        finally:
            await dev.close()
    finally:
        await hub.stop()
