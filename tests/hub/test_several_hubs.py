"""Several hubs on one broker (issue 21): real hubs, a real mosquitto, real aiortc device agents.

Exactly one hub answers an MQTT offer, the device connects to it, moves to the other hub when
its hub goes away, a targeted offer is answered only by its hub, and an HTTP device with a list
of hubs falls over to the second when the first is down. The election itself is tested on data
in test_hub_directory.py.
"""

from __future__ import annotations

import asyncio
import json
import time

import aiomqtt
import pytest

from device_agent.audio_io import MemoryAudioBackend
from hub.server import Hub
from shared.config import MqttSettings
from shared.mqtt import SignalingDescription, decode, topics
from tests.conftest import free_port

from . import test_mqtt_signaling as signaling
from .conftest import until
from .test_mqtt_signaling import HubMaker, device_agent, uid

# The two-hub rigs are the single-hub MQTT signaling tests' fixtures, used twice.
broker_settings = signaling.broker_settings
mqtt_hub = signaling.mqtt_hub
probe = signaling.probe

pytestmark = pytest.mark.integration


async def both_see_each_other(a_hub: Hub, b_hub: Hub) -> None:
    ids = {a_hub.settings.hub_id, b_hub.settings.hub_id}
    for hub in (a_hub, b_hub):
        directory = hub.hubs
        assert directory is not None
        await until(lambda d=directory: ids <= {h for h, s in d.hubs.items() if s.online}, 5, "hub presences")


async def test_two_hubs_one_answer_and_the_device_moves_when_its_hub_goes_away(
    mqtt_hub: HubMaker, broker_settings: MqttSettings
) -> None:
    a, b = await mqtt_hub(), await mqtt_hub()
    await both_see_each_other(a, b)
    dev = uid("pi-two")
    agent = device_agent(dev, MemoryAudioBackend(), broker_settings)
    await agent.start()
    try:
        assert await agent.wait_connected(15), agent.hub.last_error
        answers = a.metrics.mqtt_answers + b.metrics.mqtt_answers
        assert answers == 1, "exactly one hub answers the offer"
        serving, other = (a, b) if dev in a.sessions else (b, a)
        assert dev not in other.sessions and other.metrics.mqtt_offers_other_hub == 1
        signaling = agent.mqtt.signaling  # type: ignore[union-attr]
        assert signaling is not None and signaling.last_hub == serving.settings.hub_id
        # The other hub's presence lists the device under the serving hub (the dashboard uses it).
        await until(lambda: other.hubs.serving_hub(dev) == serving.settings.hub_id, 5, "presence with the device")

        connects = agent.hub.connects
        t0 = time.monotonic()
        await serving.stop()  # its goodbye says offline; its sessions close
        await until(lambda: agent.hub.connects > connects and dev in other.sessions, 20, "the device on the other hub")
        moved_s = time.monotonic() - t0
        print(f"failover to the other hub: {moved_s:.2f} s")
        assert moved_s < 15
        assert signaling.last_hub == other.settings.hub_id
    finally:
        await agent.stop()


async def test_a_targeted_offer_is_answered_only_by_its_hub(mqtt_hub: HubMaker, probe: aiomqtt.Client) -> None:
    a, b = await mqtt_hub(), await mqtt_hub()
    await both_see_each_other(a, b)
    for target in (a, b):
        dev = uid("pi-target")
        answer_topic = topics.signaling_answer(dev)
        await probe.subscribe(answer_topic, qos=1)
        body = {
            "type": "offer",
            "sdp": "not an sdp",
            "device_id": dev,
            "session_id": uid("s"),
            "hub_id": target.settings.hub_id,
        }
        await probe.publish(topics.signaling_offer(dev), json.dumps(body).encode(), qos=1)
        replies: list[SignalingDescription] = []
        with pytest.raises(TimeoutError):  # collect for a while: a second answer would show up here
            async with asyncio.timeout(1.5):
                async for msg in probe.messages:
                    if msg.topic.value == answer_topic:
                        assert isinstance(msg.payload, bytes)
                        replies.append(decode(SignalingDescription, msg.payload))
        assert len(replies) == 1 and replies[0].hub_id == target.settings.hub_id
        assert replies[0].error is not None and replies[0].error.startswith("bad_sdp")


async def test_an_offer_for_an_offline_hub_is_answered_by_another(mqtt_hub: HubMaker, probe: aiomqtt.Client) -> None:
    a = await mqtt_hub()
    gone = uid("gone")
    dev = uid("pi-orphan")
    answer_topic = topics.signaling_answer(dev)
    await probe.subscribe(answer_topic, qos=1)
    # A hub that said goodbye (its retained presence is offline), then an offer naming it.
    offline = {"hub_id": gone, "online": False, "devices": [dev], "device_count": 1}
    await probe.publish(topics.hub_status(gone), json.dumps(offline).encode(), qos=1, retain=True)
    await until(lambda: gone in a.hubs.hubs, 5, "the offline presence")  # type: ignore[union-attr]
    body = {"type": "offer", "sdp": "not an sdp", "device_id": dev, "session_id": uid("s"), "hub_id": gone}
    await probe.publish(topics.signaling_offer(dev), json.dumps(body).encode(), qos=1)
    async with asyncio.timeout(5):
        async for msg in probe.messages:
            if msg.topic.value == answer_topic:
                assert isinstance(msg.payload, bytes)
                assert decode(SignalingDescription, msg.payload).hub_id == a.settings.hub_id
                break
    await probe.publish(topics.hub_status(gone), b"", qos=1, retain=True)  # leave the broker clean


async def test_an_http_device_falls_over_to_the_second_hub_in_its_list(mqtt_hub: HubMaker) -> None:
    hub = await mqtt_hub()
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens: connection refused
    dev = uid("pi-list")
    agent = device_agent(
        dev,
        MemoryAudioBackend(),
        MqttSettings(),
        device_signaling="http",
        device_mqtt=False,
        device_hub_url=f"{dead},{hub.url}",
        device_reconnect_initial_s=5.0,
        device_reconnect_max_s=10.0,
    )
    t0 = time.monotonic()
    await agent.start()
    try:
        # Well inside the 5 s first backoff: the second hub is tried at once after the first fails.
        assert await agent.wait_connected(4.5), agent.hub.last_error
        print(f"connected through the second hub in {time.monotonic() - t0:.2f} s")
        assert dev in hub.sessions and agent.hub.url == f"{hub.url}/connect"
        assert agent.hub.hubs.failed_in_row == 0 and "unreachable" in (agent.hub.last_error or "")
    finally:
        await agent.stop()
