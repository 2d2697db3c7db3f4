"""MQTT signaling end to end: a real mosquitto, the real hub, real aiortc peers and a real device agent.

The decisions themselves (each refusal reason, rate limit arithmetic, duplicates, candidate
bookkeeping) are tested on fakes in test_mqtt_signaling_logic.py; here the point is the network:
offers and answers crossing a broker, sessions coming up, audio flowing, and the hub staying up
(and serving HTTP) whatever arrives or whether a broker exists at all.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiomqtt
import numpy as np
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from device_agent.agent import DeviceAgent
from device_agent.audio_io import MemoryAudioBackend
from hub.server import Hub, run_hub
from shared.audio import Int16Array, rms_dbfs
from shared.config import AudioSettings, DeviceSettings, HubSettings, MqttSettings, VideoSettings, WebRTCSettings, load
from shared.mqtt import SignalingDescription, decode, topics
from shared.rate_limit import RateLimiter
from tests.conftest import Broker, free_port

from .conftest import METRICS_TOKEN, RATE, Device, FakeAI, SpeechSource, connect_device, get_json, get_text, until

pytestmark = pytest.mark.integration

SILENCE = np.zeros(RATE // 2, dtype=np.int16)
# Parses, has audio: enough to get past check_offer_sdp to the check under test.
SDP = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"
TOKEN_1 = "device-token-one-0123456789abcdef"  # 24+ characters (HUB_DEVICE_TOKENS' minimum)
TOKEN_2 = "device-token-two-0123456789abcdef"

HubMaker = Callable[..., Awaitable[Hub]]


def uid(prefix: str) -> str:
    """Ids unique per test: the broker is shared by the whole session."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def broker_settings(mosquitto: Broker) -> MqttSettings:
    return load(MqttSettings, mqtt_host=mosquitto.host, mqtt_port=mosquitto.port, mqtt_keepalive_s=5)


@pytest.fixture
async def mqtt_hub(fake_ai: FakeAI, loopback_ice: None, broker_settings: MqttSettings) -> AsyncIterator[HubMaker]:
    hubs: list[Hub] = []

    async def make(mqtt: MqttSettings | None = None, **overrides: Any) -> Hub:
        settings = load(
            HubSettings,
            **{
                "hub_host": "127.0.0.1",
                "hub_ai_server": f"127.0.0.1:{fake_ai.port}",
                "hub_grpc_backoff_initial_s": 0.05,
                "hub_grpc_backoff_max_s": 0.3,
                "hub_device_tokens": {},
                "hub_allow_unauthenticated": True,  # explicitly open: these tests are about the MQTT path
                "hub_id": uid("test"),
                "hub_metrics_token": METRICS_TOKEN,
                "hub_listening_mode": "always",  # plain questions, no wake word
                **overrides,
            },
        )
        hub = await run_hub(settings, WebRTCSettings(webrtc_ice_servers=[]), port=0, mqtt=mqtt or broker_settings)
        hubs.append(hub)
        assert await hub.link.wait_connected(5), "hub never connected to the fake AI server"
        if mqtt is None:
            assert hub.mqtt is not None and await hub.mqtt.wait_connected(5), "hub never reached mosquitto"
        return hub

    yield make
    for hub in hubs:
        await hub.stop()


@pytest.fixture
async def probe(mosquitto: Broker) -> AsyncIterator[aiomqtt.Client]:
    """A bare MQTT client playing a device that speaks the protocol by hand."""
    async with aiomqtt.Client(mosquitto.host, mosquitto.port, identifier=uid("probe")) as client:
        yield client


async def ask(client: aiomqtt.Client, topic_device: str, payload: dict[str, Any]) -> SignalingDescription:
    """Publish an offer on ``topic_device``'s offer topic; return what arrives on its answer topic."""
    answer_topic = topics.signaling_answer(topic_device)
    await client.subscribe(answer_topic, qos=1)
    await client.publish(topics.signaling_offer(topic_device), json.dumps(payload).encode(), qos=1)
    async with asyncio.timeout(10):
        async for msg in client.messages:
            if msg.topic.value == answer_topic:
                assert isinstance(msg.payload, bytes)
                return decode(SignalingDescription, msg.payload)
    raise AssertionError("unreachable")


def offer(device_id: str, sdp: str = SDP, session_id: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"type": "offer", "sdp": sdp, "device_id": device_id, "session_id": session_id or uid("s"), **extra}


async def mqtt_peer(client: aiomqtt.Client, device_id: str, *, trickle: bool = False) -> Device:
    """An aiortc device that signals over MQTT by hand.

    ``trickle``: the candidates are taken out of the offer and published on ``signaling/ice``
    right after it (then end-of-candidates), as a browser-style device would.
    """
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    mic = SpeechSource()
    pc.addTransceiver(mic, direction="sendrecv")
    await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    session_id = uid("s")
    candidates: list[str] = []
    if trickle:
        candidates = re.findall(r"^a=(candidate:[^\r\n]+)", sdp, flags=re.M)
        assert candidates
        sdp = re.sub(r"^a=(candidate:[^\r\n]+|end-of-candidates)\r\n", "", sdp, flags=re.M)
    answer_topic = topics.signaling_answer(device_id)
    await client.subscribe(answer_topic, qos=1)
    body = json.dumps(offer(device_id, sdp, session_id)).encode()
    await client.publish(topics.signaling_offer(device_id), body, qos=1)
    for line in [*candidates, ""] if trickle else []:
        ice = {"candidate": line, "sdpMid": "0", "sdpMLineIndex": 0, "session_id": session_id}
        await client.publish(topics.signaling_ice(device_id), json.dumps(ice).encode(), qos=1)
    async with asyncio.timeout(10):
        async for msg in client.messages:
            if msg.topic.value == answer_topic:
                assert isinstance(msg.payload, bytes)
                reply = decode(SignalingDescription, msg.payload)
                if reply.session_id == session_id:
                    break
    assert reply.error is None, reply.error
    await pc.setRemoteDescription(RTCSessionDescription(sdp=reply.sdp, type="answer"))
    await until(lambda: pc.connectionState == "connected", 10, f"{device_id} connected over MQTT signaling")
    return Device(device_id, pc, mic)


def device_agent(device_id: str, backend: MemoryAudioBackend, mqtt: MqttSettings, **device: Any) -> DeviceAgent:
    settings = load(
        DeviceSettings,
        **{
            "device_id": device_id,
            # Nothing listens there: the session can only come from MQTT signaling.
            "device_hub_url": f"http://127.0.0.1:{free_port()}",
            "device_mqtt": True,
            "device_signaling": "mqtt",
            "device_reconnect_initial_s": 0.2,
            "device_reconnect_max_s": 1.0,
            "device_rtp_timeout_s": 3.0,
            "device_echo_guard_s": 0.0,
            **device,
        },
    )
    return DeviceAgent(
        settings,
        audio_backend=backend,
        audio=load(AudioSettings, audio_echo_cancellation=False),
        video=load(VideoSettings),
        mqtt=mqtt,
        webrtc=load(WebRTCSettings, webrtc_ice_servers=[]),
    )


async def test_a_device_agent_in_mqtt_mode_gets_a_session_and_audio_flows_both_ways(
    mqtt_hub: HubMaker, fake_ai: FakeAI, broker_settings: MqttSettings, phrase: Int16Array
) -> None:
    dev = uid("pi-mq")
    hub = await mqtt_hub(hub_device_tokens={dev: TOKEN_1}, hub_allow_unauthenticated=False)
    backend = MemoryAudioBackend()
    agent = device_agent(dev, backend, broker_settings, device_hub_token=TOKEN_1)
    await agent.start()
    try:
        assert await agent.wait_connected(15), agent.hub.last_error
        assert agent.hub.target.startswith("mqtt://") and agent.hub.connects == 1
        assert dev in hub.sessions
        assert hub.metrics.mqtt_answers == 1 and not hub.metrics.mqtt_offers_rejected
        assert hub.metrics.bad_requests == {} and hub.metrics.unauthorized == 0  # HTTP never involved
        # Speech into the device's microphone reaches the AI server through the hub...
        backend.play_into_mic(np.concatenate([SILENCE, phrase, SILENCE, SILENCE]), RATE)
        await until(lambda: len(fake_ai.utterances(dev)) == 1, 15, "the utterance at the AI server")
        assert {m.conversation_id for m in fake_ai.utterances(dev)[0]} == {hub.sessions[dev].conversation_id}
        # ...and the reply (a 1 s tone) comes back to the device's speaker.
        await until(lambda: rms_dbfs(backend.speaker_audio()) > -40, 10, "the reply at the speaker")
        text = await get_text(f"{hub.url}/metrics")
        assert "naila_hub_mqtt_answers_total 1.0" in text and "naila_hub_mqtt_connected 1.0" in text
    finally:
        await agent.stop()


async def test_a_refused_device_backs_off_and_connects_once_the_hub_accepts_it(
    mqtt_hub: HubMaker, broker_settings: MqttSettings
) -> None:
    dev = uid("pi-tok")
    hub = await mqtt_hub(hub_device_tokens={dev: TOKEN_1}, hub_allow_unauthenticated=False)
    agent = device_agent(dev, MemoryAudioBackend(), broker_settings, device_hub_token=TOKEN_2)
    await agent.start()
    try:
        # Each refusal is one failed attempt on the device's usual backoff schedule.
        await until(lambda: agent.hub.backoff.attempt >= 2, 10, "two failed attempts at the device")
        assert hub.metrics.mqtt_offers_rejected["unauthorized"] >= 2
        assert "hub refused the offer: unauthorized" in (agent.hub.last_error or "")
        assert not agent.hub.connected and dev not in hub.sessions
        hub.settings.hub_device_tokens[dev] = TOKEN_2  # the operator fixes the hub's side
        assert await agent.wait_connected(15), agent.hub.last_error
        assert dev in hub.sessions and hub.metrics.mqtt_answers == 1
    finally:
        await agent.stop()


async def test_bad_sdp_gets_an_error_answer_and_the_hub_keeps_serving(
    mqtt_hub: HubMaker, fake_ai: FakeAI, probe: aiomqtt.Client, phrase: Int16Array
) -> None:
    hub = await mqtt_hub()
    dev = uid("pi-bad")
    bad = [("not an sdp at all", "bad_sdp: sdp"), (SDP.replace("m=audio", "m=application"), "no audio or video")]
    for n, (sdp, why) in enumerate(bad):
        reply = await ask(probe, dev, offer(dev, sdp, session_id=f"s-bad-{n}"))
        assert reply.type == "answer" and reply.sdp == "" and reply.session_id == f"s-bad-{n}"
        assert reply.error is not None and reply.error.startswith("bad_sdp:") and why in reply.error
    assert dev not in hub.sessions and hub.metrics.mqtt_offers_rejected == {"bad_sdp": 2}
    # Right after, a real peer signals over MQTT and talks to the AI server through the hub.
    peer = await mqtt_peer(probe, dev)
    try:
        peer.mic.say(np.concatenate([SILENCE, phrase, SILENCE, SILENCE]))
        await until(lambda: len(fake_ai.utterances(dev)) == 1, 10, "an utterance from the MQTT-signalled peer")
        status, health = await get_json(f"{hub.url}/health")
        assert status == 200 and health["active_devices"] == 1
    finally:
        await peer.close()


async def test_an_offer_in_another_devices_name_is_refused(mqtt_hub: HubMaker, probe: aiomqtt.Client) -> None:
    hub = await mqtt_hub()
    liar, victim = uid("pi-liar"), uid("pi-victim")
    reply = await ask(probe, liar, offer(victim, session_id="s-lie"))
    assert reply.device_id == liar and reply.session_id == "s-lie" and reply.sdp == ""
    assert reply.error is not None and reply.error.startswith("topic_mismatch:") and "device_id" in reply.error
    assert hub.sessions == {} and hub.metrics.mqtt_offers_rejected == {"topic_mismatch": 1}


async def test_offers_over_the_limit_are_refused_until_the_bucket_refills(
    mqtt_hub: HubMaker, probe: aiomqtt.Client
) -> None:
    hub = await mqtt_hub()
    assert hub.mqtt_signaling is not None
    now = [0.0]
    # Two back to back, then one a minute, on a clock the test moves.
    hub.mqtt_signaling.offer_limit = RateLimiter(1 / 60, 2, clock=lambda: now[0])
    dev = uid("pi-flood")
    errors = [(await ask(probe, dev, offer(dev, "junk"))).error or "" for _ in range(4)]
    assert [e.split(":")[0] for e in errors] == ["bad_sdp", "bad_sdp", "rate_limited", "rate_limited"]
    other = uid("pi-calm")  # another device is not affected
    assert ((await ask(probe, other, offer(other, "junk"))).error or "").startswith("bad_sdp")
    now[0] += 60.0
    assert ((await ask(probe, dev, offer(dev, "junk"))).error or "").startswith("bad_sdp")
    assert hub.metrics.mqtt_offers_rejected == {"bad_sdp": 4, "rate_limited": 2}


async def test_trickled_candidates_over_mqtt_bring_up_the_session(
    mqtt_hub: HubMaker, fake_ai: FakeAI, probe: aiomqtt.Client, phrase: Int16Array
) -> None:
    hub = await mqtt_hub()
    dev = uid("pi-trickle")
    peer = await mqtt_peer(probe, dev, trickle=True)
    try:
        ice = hub.metrics.mqtt_ice
        assert ice["added"] >= 1 and ice["end_of_candidates"] == 1  # directly, or held until the answer
        assert ice["no_session"] == ice["bad_candidate"] == 0
        peer.mic.say(np.concatenate([SILENCE, phrase, SILENCE, SILENCE]))
        await until(lambda: len(fake_ai.utterances(dev)) == 1, 10, "an utterance over the trickled session")
    finally:
        await peer.close()


async def test_without_a_broker_the_hub_redials_quietly_and_http_signaling_works(mqtt_hub: HubMaker) -> None:
    nobody = load(MqttSettings, mqtt_host="127.0.0.1", mqtt_port=free_port())
    hub = await mqtt_hub(mqtt=nobody)
    assert hub.mqtt is not None and not hub.mqtt.connected
    dev = await connect_device(hub.url, uid("pi-http"))
    try:
        assert dev.device_id in hub.sessions
        status, health = await get_json(f"{hub.url}/health")
        assert status == 200 and health["status"] == "ok"
        assert "naila_hub_mqtt_connected 0.0" in await get_text(f"{hub.url}/metrics")
    finally:
        await dev.close()
    t0 = time.monotonic()
    await hub.mqtt.stop()  # the redial loop stops at once (the hub's own stop does the same)
    assert time.monotonic() - t0 < 2.0


async def test_hub_mqtt_off_means_no_broker_connection(mqtt_hub: HubMaker) -> None:
    hub = await mqtt_hub(mqtt=load(MqttSettings, mqtt_port=free_port()), hub_mqtt=False)
    assert hub.mqtt is None and hub.mqtt_signaling is None
    dev = await connect_device(hub.url, uid("pi-http"))
    await dev.close()
