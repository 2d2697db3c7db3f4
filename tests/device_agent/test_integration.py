"""The device agent against a real aiortc answerer over loopback, and against a real mosquitto.

WebRTC: mic speech reaches the answerer, the answerer's audio reaches the speaker, the camera's
video arrives, a wrong token is refused, a vanished hub is redialled, and (slow) the assistant's
own voice played through a simulated room is cancelled before it reaches the hub.
MQTT: retained status + heartbeat, commands answered with their request_id, malformed commands
answered with an error, snapshots, a clean goodbye, and the broker's last will on a crash.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiomqtt
import av
import numpy as np
import numpy.typing as npt
import pytest

from device_agent.aec_eval import erle_db
from device_agent.agent import DeviceAgent
from device_agent.audio_io import EchoPath, MemoryAudioBackend
from shared.audio import Int16Array, espeak, resample, rms_dbfs
from shared.config import AudioSettings, DeviceSettings, MqttSettings, VideoSettings, WebRTCSettings, load
from shared.mqtt import CommandResponse, DeviceStatus, MediaUpload, decode, topics
from tests.conftest import Broker, free_port
from tests.device_agent.conftest import Answerer, ReplyTrack

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def make_agent(
    hub_url: str,
    device_id: str,
    backend: MemoryAudioBackend,
    *,
    mqtt: MqttSettings | None = None,
    camera: str = "none",
    **device: Any,
) -> DeviceAgent:
    settings = load(
        DeviceSettings,
        device_id=device_id,
        device_hub_url=hub_url,
        device_mqtt=mqtt is not None,
        device_camera=camera,
        device_reconnect_initial_s=0.2,
        device_reconnect_max_s=1.0,
        device_rtp_timeout_s=1.5,
        **device,
    )
    return DeviceAgent(
        settings,
        audio_backend=backend,
        audio=load(AudioSettings, audio_echo_cancellation=True, audio_noise_suppression=True),
        video=load(VideoSettings, video_resolution="160x120", video_max_fps=10),
        mqtt=mqtt or load(MqttSettings),
        webrtc=load(WebRTCSettings, webrtc_ice_servers=[]),
    )


async def wait_until(cond: Callable[[], bool], within_s: float, step: float = 0.05) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if cond():
            return True
        await asyncio.sleep(step)
    return cond()


def envelope(x: Int16Array, rate: int = 48_000, ms: int = 10) -> npt.NDArray[np.float64]:
    n = rate * ms // 1000
    frames = x[: x.size // n * n].astype(np.float64).reshape(-1, n)
    return np.asarray(np.sqrt(np.mean(frames**2, axis=1)), dtype=np.float64)


def envelope_match(sent: Int16Array, got: Int16Array, max_lag: int = 100) -> float:
    """Best normalised correlation of the 10 ms loudness envelopes over 0..1 s of delay."""
    a, b = envelope(sent), envelope(got)
    best = 0.0
    for lag in range(min(max_lag, max(b.size - a.size, 0)) + 1):
        seg = b[lag : lag + a.size]
        if seg.size < a.size:
            break
        ac, bc = a - a.mean(), seg - seg.mean()
        best = max(best, float(np.dot(ac, bc) / np.sqrt(np.dot(ac, ac) * np.dot(bc, bc) + 1e-9)))
    return best


def dominant_hz(x: Int16Array, rate: int = 48_000) -> float:
    spectrum = np.abs(np.fft.rfft(x.astype(np.float64) * np.hanning(x.size)))
    return float(np.argmax(spectrum) * rate / x.size)


async def test_speech_goes_up_reply_comes_down_and_video_flows(
    loopback_ice: None, answerers: list[Answerer]
) -> None:
    hub = Answerer(free_port(), token="s3cret")
    await hub.start()
    answerers.append(hub)
    backend = MemoryAudioBackend()
    agent = make_agent(hub.url, "it-audio", backend, camera="synthetic", device_hub_token="s3cret")
    await agent.start()
    try:
        assert await agent.wait_connected(10), agent.hub.last_error
        assert hub.device_ids == ["it-audio"]
        await asyncio.sleep(0.5)
        speech = espeak("testing one two three, can you hear me", 16_000)
        loop = asyncio.get_running_loop()
        t_play = loop.time()
        backend.play_into_mic(speech, 16_000)
        sent = resample(speech, 16_000, 48_000)
        # Wait for the audio to arrive, not only a fixed time: on a loaded machine the uplink may run
        # late. Audio the device lost, or that came more than 1 s late, still fails the envelope check.
        await asyncio.sleep(speech.size / 16_000 + 1.0)
        await wait_until(lambda: hub.received(since=t_play).size >= sent.size + 48_000, 10)

        got = hub.received(since=t_play)
        assert envelope_match(sent, got) > 0.8
        assert abs(rms_dbfs(got) - rms_dbfs(sent)) < 10  # not muted, not clipped

        reply = backend.speaker_audio(since=t_play)
        assert rms_dbfs(reply) > -30
        assert dominant_hz(reply[-48_000:]) == pytest.approx(440, abs=5)
        assert hub.video_frames > 5
        agent.restart_stream()  # the MQTT restart_stream command: redial at once, no backoff
        assert await wait_until(lambda: agent.hub.connects == 2, 10)
        assert len(hub.pcs) == 2
    finally:
        await agent.stop()


async def test_wrong_token_is_refused_and_retried(loopback_ice: None, answerers: list[Answerer]) -> None:
    hub = Answerer(free_port(), token="right")
    await hub.start()
    answerers.append(hub)
    agent = make_agent(hub.url, "it-token", MemoryAudioBackend(), device_hub_token="wrong")
    await agent.start()
    try:
        assert await wait_until(lambda: hub.requests >= 2, 10)  # refused, then retried with backoff
        assert not agent.hub.connected and "HTTP 401" in (agent.hub.last_error or "")
        assert "bad token" in (agent.hub.last_error or "")
    finally:
        await agent.stop()


async def test_hub_restart_is_redialled_and_audio_resumes(loopback_ice: None, answerers: list[Answerer]) -> None:
    port = free_port()
    first = Answerer(port)
    await first.start()
    backend = MemoryAudioBackend()
    agent = make_agent(first.url, "it-restart", backend)
    await agent.start()
    try:
        assert await agent.wait_connected(10)
        assert await wait_until(lambda: len(first.audio) > 20, 5)
        await first.stop()  # the hub process dies
        assert await wait_until(lambda: not agent.hub.connected, 6), "link loss not noticed"
        await asyncio.sleep(1.0)  # a few refused redials while it is down
        second = Answerer(port)
        await second.start()
        answerers.append(second)
        t_back = asyncio.get_running_loop().time()
        assert await wait_until(lambda: agent.hub.connects == 2, 15), agent.hub.last_error
        assert agent.hub.attempts >= 3
        assert await wait_until(lambda: len(second.audio) > 20, 5), "mic audio did not resume"
        await asyncio.sleep(0.5)
        assert rms_dbfs(backend.speaker_audio(since=t_back)) > -30, "hub audio did not resume"
    finally:
        await agent.stop()


@pytest.mark.slow
async def test_the_assistants_own_voice_is_cancelled_before_the_hub(
    loopback_ice: None, answerers: list[Answerer]
) -> None:
    """Speech from the hub, played through a 150 ms room into the mic: the hub gets it >= 15 dB down."""
    voice = np.concatenate(
        [espeak("Here is the weather for today. It will be sunny and warm with a light breeze.", 48_000),
         espeak("Your timer is set for ten minutes, and I will remind you when it is done.", 48_000)]
    )
    hub = Answerer(free_port(), reply=ReplyTrack(samples=voice))
    await hub.start()
    answerers.append(hub)
    backend = MemoryAudioBackend(echo_path=EchoPath(delay_ms=40, gain=0.5, rt60_ms=150))
    agent = make_agent(hub.url, "it-echo", backend)
    await agent.start()
    try:
        assert await agent.wait_connected(10)
        await asyncio.sleep(14.0)  # speex converges in ~10 s of speech
        now = asyncio.get_running_loop().time()
        raw = backend.mic_audio(since=now - 3.0)
        sent = hub.received(since=now - 3.0)
        assert rms_dbfs(raw) > -40  # there really is echo on the mic
        print(f"echo at the mic {rms_dbfs(raw):.1f} dBFS, sent to the hub {rms_dbfs(sent):.1f} dBFS")
        assert erle_db(raw, sent) >= 15.0, (rms_dbfs(raw), rms_dbfs(sent))
    finally:
        await agent.stop()


# --- MQTT ---------------------------------------------------------------------------------


@pytest.fixture
def mqtt_settings(mosquitto: Broker) -> MqttSettings:
    return load(MqttSettings, mqtt_host=mosquitto.host, mqtt_port=mosquitto.port, mqtt_keepalive_s=5)


@pytest.fixture
async def observer(mosquitto: Broker) -> AsyncIterator[aiomqtt.Client]:
    async with aiomqtt.Client(mosquitto.host, mosquitto.port, identifier=f"observer-{time.monotonic_ns()}") as c:
        yield c


async def next_on(client: aiomqtt.Client, topic: str, within_s: float = 5.0) -> bytes:
    async with asyncio.timeout(within_s):
        async for msg in client.messages:
            if msg.topic.value == topic:
                assert isinstance(msg.payload, bytes)
                return msg.payload
    raise AssertionError("unreachable")


async def command(observer: aiomqtt.Client, device_id: str, payload: bytes | dict[str, Any]) -> CommandResponse:
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    await observer.publish(topics.device_command(device_id), raw, qos=1)
    return decode(CommandResponse, await next_on(observer, topics.device_command_response(device_id)))


async def test_mqtt_status_heartbeat_commands_and_goodbye(
    mosquitto: Broker, mqtt_settings: MqttSettings, observer: aiomqtt.Client
) -> None:
    dev = "it-mqtt"
    dead_hub = f"http://127.0.0.1:{free_port()}"  # the stream keeps redialling; MQTT does not care
    agent = make_agent(dead_hub, dev, MemoryAudioBackend(), mqtt=mqtt_settings, camera="synthetic",
                       device_heartbeat_s=0.3, device_room="kitchen")
    await agent.start()
    try:
        assert agent.mqtt is not None
        await asyncio.wait_for(agent.mqtt.connected.wait(), 10)
        await observer.subscribe(topics.device_status(dev), qos=1)
        first = decode(DeviceStatus, await next_on(observer, topics.device_status(dev)))  # retained
        assert first.online and first.device_id == dev and first.room == "kitchen"
        assert {"audio", "speaker", "video", "snapshot"} <= set(first.capabilities)
        assert (first.volume, first.muted) == (100, False)
        beat = decode(DeviceStatus, await next_on(observer, topics.device_status(dev), 2.0))
        assert beat.timestamp > first.timestamp

        await observer.subscribe(topics.device_command_response(dev), qos=1)
        await observer.subscribe(topics.media_snapshot(dev), qos=1)
        resp = await command(observer, dev, {"command": "volume", "params": {"level": 30}, "request_id": "req_v"})
        assert resp.ok and resp.request_id == "req_v" and agent.pipeline.volume == 30

        resp = await command(observer, dev, {"command": "mute", "params": {"muted": True}, "request_id": "req_m"})
        assert resp.ok and agent.pipeline.mic_muted

        resp = await command(observer, dev, b'{"command": "volume", "request_id": "req_bad", "params": 7}')
        assert not resp.ok and resp.request_id == "req_bad" and "malformed" in (resp.error or "")
        resp = await command(observer, dev, b"this is not json")
        assert not resp.ok and resp.request_id == "unknown"
        resp = await command(observer, dev, {"command": "dance", "request_id": "req_d"})
        assert not resp.ok and "unknown command" in (resp.error or "")
        assert agent.mqtt.handler.errors == {"malformed": 2, "unknown": 1}

        await observer.publish(
            topics.device_command(dev),
            json.dumps({"command": "snapshot", "params": {"quality": 80}, "request_id": "req_s"}).encode(),
            qos=1,
        )
        upload = decode(MediaUpload, await next_on(observer, topics.media_snapshot(dev)))
        assert upload.request_id == "req_s" and (upload.width, upload.height) == (160, 120)
        with av.open(io.BytesIO(upload.data), mode="r") as c:
            assert next(c.decode(video=0)).width == 160

        await observer.publish(
            topics.media_request(dev), b'{"request_type": "snapshot", "request_id": "req_mr"}', qos=1
        )
        assert decode(MediaUpload, await next_on(observer, topics.media_snapshot(dev))).request_id == "req_mr"
    finally:
        await agent.stop()
    # Clean goodbye: online=false is the last status (a heartbeat may still be in flight before it).
    status = decode(DeviceStatus, await next_on(observer, topics.device_status(dev)))
    while status.online:
        status = decode(DeviceStatus, await next_on(observer, topics.device_status(dev)))
    async with aiomqtt.Client(mosquitto.host, mosquitto.port) as late:  # and it is what stays retained
        await late.subscribe(topics.device_status(dev), qos=1)
        assert not decode(DeviceStatus, await next_on(late, topics.device_status(dev))).online


async def test_last_will_announces_a_crashed_device(
    mosquitto: Broker, observer: aiomqtt.Client, tmp_path: Path
) -> None:
    dev = "it-will"
    env = {
        **os.environ,
        "DEVICE_ID": dev,
        "DEVICE_HUB_URL": f"http://127.0.0.1:{free_port()}",
        "DEVICE_AUDIO_BACKEND": "file",
        "DEVICE_SPEAKER_FILE": str(tmp_path / "speaker.wav"),
        "MQTT_HOST": mosquitto.host,
        "MQTT_PORT": str(mosquitto.port),
        "MQTT_KEEPALIVE_S": "5",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "naila", "device", cwd=ROOT, env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        await observer.subscribe(topics.device_status(dev), qos=1)
        online = decode(DeviceStatus, await next_on(observer, topics.device_status(dev), 60))
        assert online.online
        proc.send_signal(signal.SIGKILL)  # no MQTT DISCONNECT: the broker must publish the will
        will = decode(DeviceStatus, await next_on(observer, topics.device_status(dev), 10))
        assert not will.online and will.device_id == dev
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
    # Retained: a newcomer sees the device offline.
    async with aiomqtt.Client(mosquitto.host, mosquitto.port) as late:
        await late.subscribe(topics.device_status(dev), qos=1)
        assert not decode(DeviceStatus, await next_on(late, topics.device_status(dev))).online


def _mosquitto(port: int, conf_dir: Path) -> subprocess.Popen[bytes]:
    conf = conf_dir / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    return subprocess.Popen([exe, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def test_broker_restart_is_redialled_with_backoff(tmp_path: Path) -> None:
    port = free_port()
    broker = _mosquitto(port, tmp_path)
    mqtt = load(MqttSettings, mqtt_host="127.0.0.1", mqtt_port=port, mqtt_keepalive_s=5)
    agent = make_agent(f"http://127.0.0.1:{free_port()}", "it-mqtt-restart", MemoryAudioBackend(), mqtt=mqtt)
    assert agent.mqtt is not None
    await agent.start()
    try:
        assert await wait_until(lambda: agent.mqtt is not None and agent.mqtt.connects == 1, 10)
        broker.terminate()
        broker.wait(5)
        assert await wait_until(lambda: agent.mqtt is not None and not agent.mqtt.connected.is_set(), 10)
        await asyncio.sleep(1.5)  # refused redials meanwhile
        assert agent.mqtt.link.backoff.attempt >= 2
        broker = _mosquitto(port, tmp_path)
        assert await wait_until(lambda: agent.mqtt is not None and agent.mqtt.connects == 2, 15)
        async with aiomqtt.Client("127.0.0.1", port) as c:  # status is retained again on the new broker
            await c.subscribe(topics.device_status("it-mqtt-restart"), qos=1)
            assert decode(DeviceStatus, await next_on(c, topics.device_status("it-mqtt-restart"))).online
    finally:
        await agent.stop()
        broker.terminate()
        broker.wait(5)


SOUNDCARD_SMOKE = """
import asyncio, sys
import numpy as np
import numpy.typing as npt
from device_agent.audio_io import SoundDeviceBackend

async def main():
    backend = SoundDeviceBackend()
    sizes = set()
    def cb(mic):
        sizes.add((mic.dtype.name, mic.size))
        return np.zeros_like(mic)
    await backend.start(cb)
    await asyncio.sleep(0.3)
    await backend.stop()
    print(sorted(sizes), backend.callback_errors)

asyncio.run(main())
"""


async def test_sounddevice_backend_opens_a_real_portaudio_duplex_stream(tmp_path: Path) -> None:
    """PortAudio + ALSA for real, on ALSA's null device (no sound card in CI)."""
    pytest.importorskip("sounddevice")
    (tmp_path / ".asoundrc").write_text("pcm.!default { type null }\n")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", SOUNDCARD_SMOKE, cwd=ROOT, env={**os.environ, "HOME": str(tmp_path)},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0
    assert out.decode().strip() == "[('int16', 480)] 0"
