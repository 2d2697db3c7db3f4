"""The privacy switches and recording requests end to end: the real device agent on mosquitto, its
real WebRTC link (aiortc, loopback) to an answering peer, and a second MQTT client as the server."""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiomqtt
import av
import pytest

from device_agent.audio_io import MemoryAudioBackend
from shared.audio import espeak, rms_dbfs
from shared.config import MqttSettings, load
from shared.mqtt import CommandResponse, DeviceStatus, MediaUpload, decode, topics
from tests.conftest import Broker, free_port
from tests.device_agent.conftest import Answerer
from tests.device_agent.test_integration import make_agent, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def mqtt_settings(mosquitto: Broker) -> MqttSettings:
    return load(MqttSettings, mqtt_host=mosquitto.host, mqtt_port=mosquitto.port, mqtt_keepalive_s=5)


class Server:
    """A second MQTT client playing the AI server: every message it gets is kept, by topic, in order."""

    def __init__(self, client: aiomqtt.Client) -> None:
        self.client = client
        self.got: dict[str, list[bytes]] = {}
        self._read: dict[str, int] = {}
        self._new = asyncio.Event()

    async def run(self) -> None:
        async for msg in self.client.messages:
            assert isinstance(msg.payload, bytes)
            self.got.setdefault(msg.topic.value, []).append(msg.payload)
            self._new.set()

    async def next_on(self, topic: str, within_s: float = 8.0) -> bytes:
        async with asyncio.timeout(within_s):
            while len(self.got.get(topic, [])) <= self._read.get(topic, 0):
                self._new.clear()
                await self._new.wait()
        n = self._read.get(topic, 0)
        self._read[topic] = n + 1
        return self.got[topic][n]


@pytest.fixture
async def server(mosquitto: Broker) -> AsyncIterator[Server]:
    async with aiomqtt.Client(mosquitto.host, mosquitto.port, identifier=f"server-{time.monotonic_ns()}") as c:
        srv = Server(c)
        task = asyncio.create_task(srv.run())
        yield srv
        task.cancel()


async def next_on(server: Server, topic: str, within_s: float = 8.0) -> bytes:
    return await server.next_on(topic, within_s)


async def command(server: Server, dev: str, name: str, rid: str, **params: Any) -> CommandResponse:
    payload = {"command": name, "params": params, "request_id": rid}
    await server.client.publish(topics.device_command(dev), json.dumps(payload).encode(), qos=1)
    return decode(CommandResponse, await next_on(server, topics.device_command_response(dev)))


async def status_until(server: Server, dev: str, **want: Any) -> DeviceStatus:
    """The next status with these field values (a heartbeat with older values may come first)."""
    while True:
        status = decode(DeviceStatus, await next_on(server, topics.device_status(dev)))
        if all(getattr(status, k) == v for k, v in want.items()):
            return status


async def test_camera_and_microphone_off_and_on_over_mqtt_survive_a_reconnect_and_a_restart(
    loopback_ice: None,
    answerers: list[Answerer],
    mqtt_settings: MqttSettings,
    server: Server,
    tmp_path: Path,
) -> None:
    hub = Answerer(free_port())
    await hub.start()
    answerers.append(hub)
    dev, state = "it-privacy", tmp_path / "state.json"
    backend = MemoryAudioBackend()
    agent = make_agent(hub.url, dev, backend, mqtt=mqtt_settings, camera="synthetic", device_state_file=str(state))
    await server.client.subscribe(topics.device_status(dev), qos=1)
    await server.client.subscribe(topics.device_command_response(dev), qos=1)
    await agent.start()
    try:
        assert await agent.wait_connected(10), agent.hub.last_error
        first = await status_until(server, dev, online=True)
        assert (first.camera_enabled, first.microphone_enabled) == (True, True) and "privacy" in first.capabilities
        assert await wait_until(lambda: len(hub.video_levels) > 5, 5)
        assert min(hub.video_levels[-5:]) > 20  # the synthetic scene, not black

        resp = await command(server, dev, "camera", "cam-off", enabled=False)
        assert resp.ok and resp.result == {"camera_enabled": False}
        assert (await status_until(server, dev, camera_enabled=False)).online
        # The track keeps its place in the session and sends black, one frame a second.
        seen = len(hub.video_levels)
        assert await wait_until(lambda: len(hub.video_levels) >= seen + 3, 6)
        assert max(hub.video_levels[-2:]) < 2
        resp = await command(server, dev, "snapshot", "snap-off")
        assert not resp.ok and resp.error == "the camera is off (privacy)"

        resp = await command(server, dev, "microphone", "mic-off", enabled=False)
        assert resp.ok and agent.pipeline.mic_muted
        status = await status_until(server, dev, microphone_enabled=False)
        assert status.muted is True and status.camera_enabled is False
        t0 = asyncio.get_running_loop().time()
        backend.play_into_mic(espeak("this must not leave the house", 16_000), 16_000)
        await asyncio.sleep(1.5)
        assert rms_dbfs(hub.received(since=t0)) < -80  # silence went out, not the words

        resp = await command(server, dev, "listening_mode", "mode-always", mode="always")
        assert resp.ok and resp.result == {"listening_mode": "always"}
        assert (await status_until(server, dev, listening_mode="always")).camera_enabled is False

        for bad, why in [({}, "missing parameter 'enabled'"), ({"enabled": "off"}, "must be bool")]:
            resp = await command(server, dev, "camera", "cam-bad", **bad)
            assert not resp.ok and resp.request_id == "cam-bad" and why in (resp.error or "")

        # A reconnect of the stream (restart_stream, a hub restart) keeps both off.
        agent.restart_stream()
        assert await wait_until(lambda: agent.hub.connects == 2, 10)
        seen = len(hub.video_levels)
        assert await wait_until(lambda: len(hub.video_levels) >= seen + 2, 6)
        assert max(hub.video_levels[seen:]) < 2 and agent.pipeline.mic_muted
    finally:
        await agent.stop()
    assert json.loads(state.read_text()) == {"camera": False, "microphone": False, "listening_mode": "always"}

    # A restart (power cut) too: DEVICE_STATE_FILE is read before anything streams.
    again = make_agent(
        hub.url, dev, MemoryAudioBackend(), mqtt=mqtt_settings, camera="synthetic", device_state_file=str(state)
    )
    await again.start()
    try:
        status = await status_until(server, dev, online=True, camera_enabled=False)
        assert status.microphone_enabled is False and again.pipeline.mic_muted
        assert status.listening_mode == "always" and again.hub.listening_mode == "always"
        resp = await command(server, dev, "camera", "cam-on", enabled=True)
        assert resp.ok and (await status_until(server, dev, camera_enabled=True)).online
        assert await again.wait_connected(10)
        seen = len(hub.video_levels)
        assert await wait_until(lambda: len(hub.video_levels) >= seen + 5, 6)
        assert min(hub.video_levels[-3:]) > 20  # the camera is back
    finally:
        await again.stop()


async def test_recording_requests_get_a_clip_or_an_error_result(mqtt_settings: MqttSettings, server: Server) -> None:
    dev = "it-rec"
    backend = MemoryAudioBackend()
    dead_hub = f"http://127.0.0.1:{free_port()}"  # recordings need no stream
    agent = make_agent(dead_hub, dev, backend, mqtt=mqtt_settings, camera="synthetic", device_recording_max_s=5)
    await server.client.subscribe(topics.media_recording(dev), qos=1)
    await server.client.subscribe(topics.device_command_response(dev), qos=1)
    await agent.start()
    try:
        assert agent.mqtt is not None
        await asyncio.wait_for(agent.mqtt.connected.wait(), 10)

        async def request(rid: str, **params: Any) -> None:
            body = {"request_type": "recording", "request_id": rid, "params": params}
            await server.client.publish(topics.media_request(dev), json.dumps(body).encode(), qos=1)

        backend.play_into_mic(espeak("record this please", 16_000), 16_000)
        await request("rec-a", duration_ms=1500)
        upload = decode(MediaUpload, await next_on(server, topics.media_recording(dev)))
        assert (upload.request_id, upload.media_type, upload.format) == ("rec-a", "audio", "opus")
        assert (upload.duration_ms, upload.sample_rate) == (1500, 48_000)
        with av.open(io.BytesIO(upload.data), mode="r") as clip:
            pcm = [f.to_ndarray() for f in clip.decode(audio=0)]
        samples = sum(p.shape[-1] for p in pcm)
        assert abs(samples - 72_000) < 2_000  # 1.5 s at 48 kHz (Opus pre-skip aside)

        await request("rec-v", media_type="video", duration_ms=1000)
        upload = decode(MediaUpload, await next_on(server, topics.media_recording(dev)))
        assert (upload.media_type, upload.format, upload.width, upload.height) == ("video", "webm", 160, 120)
        with av.open(io.BytesIO(upload.data), mode="r") as clip:
            frames = list(clip.decode(video=0))
        assert len(frames) == 10 and frames[0].width == 160  # VIDEO_MAX_FPS=10 for 1 s

        bad: list[tuple[str, dict[str, Any], str]] = [
            ("rec-long", {"duration_ms": 60_000}, "DEVICE_RECORDING_MAX_S"),
            ("rec-mp3", {"format": "mp3"}, "audio recordings are opus or wav"),
            ("rec-what", {"media_type": "smell"}, "parameter 'media_type'"),
        ]
        for rid, params, why in bad:
            await request(rid, **params)
            resp = decode(CommandResponse, await next_on(server, topics.device_command_response(dev)))
            assert resp.request_id == rid and not resp.ok and why in (resp.error or "")
        agent.set_camera_enabled(False)
        await request("rec-off", media_type="video")
        resp = decode(CommandResponse, await next_on(server, topics.device_command_response(dev)))
        assert resp.request_id == "rec-off" and resp.error == "recording: the camera is off (privacy)"
        assert agent.mqtt.handler.handled["recording"] == 2
    finally:
        await agent.stop()
