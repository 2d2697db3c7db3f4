"""The device's MQTT signaling transport on a fake broker link, and the agent's wiring of it.

The real broker and hub are in tests/hub/test_mqtt_signaling.py. Here: one offer per attempt with
a fresh session_id, answers for other sessions ignored, refusals and timeouts as ConnectError
(which HubClient turns into its usual backoff), and MqttAgent subscribing to the answer topic
only in mqtt mode.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from typing import Any, cast

import aiomqtt
import pytest

from device_agent.mqtt_agent import MqttAgent
from device_agent.mqtt_signaling import MqttSignaling
from device_agent.webrtc_client import ConnectError
from shared.config import DeviceSettings, MqttSettings, load
from shared.mqtt import OutboundMessage, SignalingDescription, decode, encode
from shared.mqtt_link import MqttLink

pytestmark = pytest.mark.unit

DEV = "pi-sig"
ANSWER_TOPIC = f"naila/devices/{DEV}/signaling/answer"


class FakeLink:
    """What MqttSignaling uses of MqttLink: connected, publish, address."""

    def __init__(self, connected: bool = True) -> None:
        self.connected = asyncio.Event()
        if connected:
            self.connected.set()
        self.published: list[OutboundMessage] = []
        self.fail: Exception | None = None
        self.address = "broker:1883"
        self.on_publish: list[asyncio.Event] = []

    async def publish(self, msg: OutboundMessage) -> None:
        if self.fail is not None:
            raise self.fail
        self.published.append(msg)
        for ev in self.on_publish:
            ev.set()

    def offers(self) -> list[SignalingDescription]:
        return [decode(SignalingDescription, m.payload) for m in self.published]


def transport(link: FakeLink, **kw: Any) -> MqttSignaling:
    ids = (f"s{i}" for i in itertools.count(1))
    return MqttSignaling(cast(MqttLink, link), DEV, session_ids=lambda: next(ids), **kw)


def answer(session_id: str, sdp: str = "v=0 answer", error: str | None = None) -> bytes:
    return encode(SignalingDescription(type="answer", sdp=sdp, device_id=DEV, session_id=session_id, error=error))


async def published(link: FakeLink, n: int) -> None:
    """Wait until the fake link has seen ``n`` publishes."""
    async with asyncio.timeout(2):
        while len(link.published) < n:
            event = asyncio.Event()
            link.on_publish.append(event)
            await event.wait()


async def test_the_offer_goes_out_and_the_matching_answer_comes_back() -> None:
    link = FakeLink()
    sig = transport(link, token="s3cret")
    exchange = asyncio.create_task(sig.exchange("v=0 offer"))
    await published(link, 1)
    [msg] = link.published
    assert msg.topic == f"naila/devices/{DEV}/signaling/offer" and msg.qos == 1 and not msg.retain
    [offer] = link.offers()
    assert (offer.type, offer.sdp, offer.device_id, offer.session_id, offer.token) == (
        "offer",
        "v=0 offer",
        DEV,
        "s1",
        "s3cret",
    )
    await sig.on_answer(ANSWER_TOPIC, answer("s0"))  # a late answer to an older attempt
    assert not exchange.done() and sig.stale_answers == 1
    await sig.on_answer(ANSWER_TOPIC, answer("s1", sdp="v=0 the answer"))
    assert await exchange == "v=0 the answer"
    await sig.on_answer(ANSWER_TOPIC, answer("s1"))  # a redelivery after the fact
    assert sig.stale_answers == 2


async def test_every_attempt_has_its_own_session_id_and_no_token_when_unset() -> None:
    link = FakeLink()
    sig = MqttSignaling(cast(MqttLink, link), DEV, token="")
    for _ in range(2):
        exchange = asyncio.create_task(sig.exchange("v=0"))
        await published(link, len(link.published) + 1)
        await sig.on_answer(ANSWER_TOPIC, answer(link.offers()[-1].session_id))
        await exchange
    first, second = link.offers()
    assert first.session_id != second.session_id and first.token is None


async def test_a_refusal_fails_the_attempt_at_once_with_the_hubs_reason() -> None:
    link = FakeLink()
    sig = transport(link)
    exchange = asyncio.create_task(sig.exchange("v=0"))
    await published(link, 1)
    await sig.on_answer(ANSWER_TOPIC, answer("s1", sdp="", error="rate_limited: too many offers; slow down"))
    with pytest.raises(ConnectError, match="hub refused the offer: rate_limited: too many offers"):
        await exchange


async def test_no_answer_is_a_timeout() -> None:
    link = FakeLink()
    sig = transport(link, timeout_s=0.05)
    with pytest.raises(ConnectError, match=r"no answer from the hub within 0\.05 s on naila/devices/pi-sig/"):
        await sig.exchange("v=0")
    # The abandoned attempt's answer, arriving late, is not mistaken for the next one's.
    nxt = asyncio.create_task(sig.exchange("v=0"))
    await published(link, 2)
    await sig.on_answer(ANSWER_TOPIC, answer("s1"))
    assert sig.stale_answers == 1 and not nxt.done()
    with pytest.raises(ConnectError):
        await nxt


async def test_it_waits_for_the_broker_within_the_timeout() -> None:
    link = FakeLink(connected=False)
    sig = transport(link, timeout_s=5)
    exchange = asyncio.create_task(sig.exchange("v=0"))
    await asyncio.sleep(0.01)
    assert link.published == []
    link.connected.set()
    await published(link, 1)
    await sig.on_answer(ANSWER_TOPIC, answer("s1"))
    assert await exchange == "v=0 answer"

    never = transport(FakeLink(connected=False), timeout_s=0.05)
    with pytest.raises(ConnectError, match=r"broker broker:1883 unreachable"):
        await never.exchange("v=0")


async def test_publish_failures_and_oversized_offers_are_connect_errors() -> None:
    link = FakeLink()
    link.fail = aiomqtt.MqttError("connection lost")
    with pytest.raises(ConnectError, match="cannot publish the offer: connection lost"):
        await transport(link).exchange("v=0")
    with pytest.raises(ConnectError, match="offer not sendable over MQTT"):
        await transport(FakeLink()).exchange("v=0" + "x" * 40_000)


async def test_malformed_or_foreign_answers_are_ignored() -> None:
    link = FakeLink()
    sig = transport(link)
    exchange = asyncio.create_task(sig.exchange("v=0"))
    await published(link, 1)
    await sig.on_answer(ANSWER_TOPIC, b"not json")
    other = json.dumps({"type": "answer", "sdp": "x", "device_id": "pi-else", "session_id": "s1"}).encode()
    await sig.on_answer(ANSWER_TOPIC, other)  # payload for another device on our topic
    assert sig.bad_answers == 2 and not exchange.done()
    await sig.on_answer(ANSWER_TOPIC, answer("s1"))
    assert await exchange == "v=0 answer"


class Control:
    def set_volume(self, level: int) -> None: ...
    def set_mic_muted(self, muted: bool) -> None: ...
    def restart_stream(self) -> None: ...
    async def snapshot(self, quality: int, size: tuple[int, int] | None) -> None: ...
    async def publish_status(self) -> dict[str, Any]:
        return {}


def agent(**device: Any) -> MqttAgent:
    settings = load(DeviceSettings, device_id=DEV, **device)
    return MqttAgent(load(MqttSettings), settings, Control(), capabilities=["audio"], firmware_version="1")


async def test_the_agent_subscribes_to_its_answer_topic_only_in_mqtt_mode() -> None:
    http = agent()
    assert http.signaling is None and ANSWER_TOPIC not in http.link.subscriptions
    mqtt = agent(device_signaling="mqtt", device_hub_token="tok")
    assert mqtt.signaling is not None and mqtt.signaling.link is mqtt.link
    assert ANSWER_TOPIC in mqtt.link.subscriptions and mqtt.signaling.token == "tok"
    # Messages on the answer topic reach the transport.
    await mqtt._on_message(ANSWER_TOPIC, answer("nobody-waits"))
    assert mqtt.signaling.stale_answers == 1


def test_mqtt_signaling_needs_the_mqtt_link() -> None:
    from shared.config import ConfigError

    with pytest.raises(ConfigError, match=r"DEVICE_SIGNALING='mqtt'.*needs DEVICE_MQTT=true"):
        load(DeviceSettings, device_signaling="mqtt", device_mqtt=False)
