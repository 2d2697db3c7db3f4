"""MQTT signaling decisions at the hub, on fakes and an injected clock (the broker path is in test_mqtt_signaling.py).

The fakes stand in for the hub (``connect_device`` + ``sessions``) and the broker connection
(``add_listener`` + ``publish``); everything else is the real MqttSignaling.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiomqtt
import pytest
from aiortc import RTCIceCandidate

from hub.metrics import HubMetrics
from hub.mqtt_control import MessageHandler
from hub.mqtt_signaling import MAX_EARLY_CANDIDATES, MqttSignaling, remote_candidate
from hub.signaling import RequestRejected
from shared.config import HubSettings, load
from shared.mqtt import IceCandidate, OutboundMessage, SignalingDescription, decode, topics

pytestmark = pytest.mark.unit

# Enough of an offer for check_offer_sdp: one audio section (the fake hub does not negotiate).
SDP = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"
CANDIDATE = "candidate:1 1 udp 2130706431 192.0.2.7 50000 typ host"


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class FakePc:
    def __init__(self) -> None:
        self.added: list[RTCIceCandidate | None] = []

    async def addIceCandidate(self, candidate: RTCIceCandidate | None) -> None:
        self.added.append(candidate)


@dataclass
class FakeSession:
    pc: FakePc = field(default_factory=FakePc)
    closed: bool = False


class FakeHub:
    """connect_device answers "answer-for-<device>", or raises ``fail``; ``gate`` holds it open."""

    def __init__(self) -> None:
        self.sessions: dict[str, FakeSession] = {}
        self.offers: list[tuple[str, str]] = []
        self.fail: Exception | None = None
        self.gate: asyncio.Event | None = None

    async def connect_device(self, device_id: str, sdp: str) -> str:
        self.offers.append((device_id, sdp))
        if self.gate is not None:
            await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        self.sessions[device_id] = FakeSession()
        return f"answer-for-{device_id}"


class FakeMqtt:
    def __init__(self) -> None:
        self.listeners: dict[str, MessageHandler] = {}
        self.published: list[OutboundMessage] = []
        self.down = False

    def add_listener(self, topic_filter: str, handler: MessageHandler) -> Callable[[], None]:
        self.listeners[topic_filter] = handler
        return lambda: None

    async def publish(self, msg: OutboundMessage) -> None:
        if self.down:
            raise aiomqtt.MqttError("not connected")
        self.published.append(msg)

    def answers(self) -> list[SignalingDescription]:
        return [decode(SignalingDescription, m.payload) for m in self.published]


@dataclass
class Rig:
    hub: FakeHub
    mqtt: FakeMqtt
    signaling: MqttSignaling
    metrics: HubMetrics
    clock: FakeClock

    async def offer(self, topic_device: str, session_id: str = "s1", **fields: Any) -> None:
        payload = {"type": "offer", "sdp": SDP, "device_id": topic_device, "session_id": session_id, **fields}
        await self.raw_offer(topic_device, json.dumps(payload).encode())

    async def raw_offer(self, device_id: str, payload: bytes) -> None:
        await self.signaling.on_offer(topics.signaling_offer(device_id), payload)
        await self.signaling.wait_idle()

    async def ice(self, device_id: str, session_id: str, candidate: str = CANDIDATE, **fields: Any) -> None:
        payload = {"candidate": candidate, "sdpMid": "0", "sdpMLineIndex": 0, "session_id": session_id, **fields}
        await self.signaling.on_ice(topics.signaling_ice(device_id), json.dumps(payload).encode())


def make_rig(**settings: Any) -> Rig:
    hub, mqtt, clock = FakeHub(), FakeMqtt(), FakeClock()
    metrics = HubMetrics(clock)
    hub_settings = load(HubSettings, **{"hub_device_tokens": {}, "hub_allow_unauthenticated": True, **settings})
    signaling = MqttSignaling(hub, mqtt, hub_settings, metrics, clock=clock)
    return Rig(hub, mqtt, signaling, metrics, clock)


def test_it_listens_to_every_devices_offers_and_candidates() -> None:
    rig = make_rig()
    assert set(rig.mqtt.listeners) == {"naila/devices/+/signaling/offer", "naila/devices/+/signaling/ice"}


async def test_an_offer_is_answered_on_the_devices_answer_topic_with_its_session_id() -> None:
    rig = make_rig()
    await rig.offer("pi-a", "sess-1")
    assert rig.hub.offers == [("pi-a", SDP)]
    [msg] = rig.mqtt.published
    assert msg.topic == "naila/devices/pi-a/signaling/answer" and msg.qos == 1 and not msg.retain
    [answer] = rig.mqtt.answers()
    assert (answer.type, answer.sdp, answer.device_id, answer.session_id, answer.error) == (
        "answer",
        "answer-for-pi-a",
        "pi-a",
        "sess-1",
        None,
    )
    assert (rig.metrics.mqtt_offers, rig.metrics.mqtt_answers) == (1, 1)
    assert not rig.metrics.mqtt_offers_rejected


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"sdp": "not an sdp"}, "bad_sdp"),
        # neither audio nor video (a camera-only offer is a device like any other, issue 22)
        ({"sdp": "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=application 9 UDP/DTLS/SCTP x\r\n"}, "bad_sdp"),
        ({"device_id": "pi-other"}, "topic_mismatch"),  # speaking for another device
        ({"type": "answer"}, "topic_mismatch"),  # an answer on the offer topic
        ({"sdp": ""}, "bad_message"),
        ({"sdp": 42}, "bad_message"),
    ],
)
async def test_a_refused_offer_gets_an_error_answer_and_opens_nothing(fields: dict[str, Any], reason: str) -> None:
    rig = make_rig()
    await rig.offer("pi-a", "sess-1", **fields)
    assert rig.hub.offers == []
    [answer] = rig.mqtt.answers()
    assert answer.sdp == "" and answer.session_id == "sess-1" and answer.device_id == "pi-a"
    assert answer.error is not None and answer.error.startswith(f"{reason}: ")
    assert rig.mqtt.published[0].topic == "naila/devices/pi-a/signaling/answer"
    assert rig.metrics.mqtt_offers_rejected == {reason: 1} and rig.metrics.mqtt_answers == 0


async def test_garbage_without_a_session_id_is_counted_but_cannot_be_answered() -> None:
    rig = make_rig()
    for payload in (b"not json", b"[1, 2]", b'{"session_id": "has/slash"}', b""):
        await rig.raw_offer("pi-a", payload)
    assert rig.mqtt.published == [] and rig.hub.offers == []
    assert rig.metrics.mqtt_offers_rejected == {"bad_message": 4}


async def test_a_failure_inside_connect_device_is_answered_like_the_http_path() -> None:
    rig = make_rig()
    rig.hub.fail = ValueError("offer has no audio")
    await rig.offer("pi-a", "s1")
    [answer] = rig.mqtt.answers()
    assert answer.error == "bad_sdp: offer rejected: offer has no audio"
    rig.hub.fail = RequestRejected("busy", "no room")
    await rig.offer("pi-a", "s2")
    assert rig.mqtt.answers()[1].error == "busy: no room"
    assert rig.metrics.mqtt_offers_rejected == {"bad_sdp": 1, "busy": 1}


async def test_rate_limit_per_device_on_the_injected_clock() -> None:
    rig = make_rig(hub_mqtt_offer_burst=2, hub_mqtt_offers_per_min=6)  # one more every 10 s
    for i in range(3):
        await rig.offer("pi-a", f"s{i}")
    await rig.offer("pi-b", "b0")  # another device has its own budget
    assert [a.error for a in rig.mqtt.answers()] == [None, None, "rate_limited: too many offers; slow down", None]
    assert rig.mqtt.answers()[2].session_id == "s2"
    rig.clock.now += 9.9
    await rig.offer("pi-a", "s3")
    assert rig.mqtt.answers()[-1].error is not None
    rig.clock.now += 0.2  # 10.1 s since the burst: one token back
    await rig.offer("pi-a", "s4")
    assert rig.mqtt.answers()[-1].error is None and rig.mqtt.answers()[-1].session_id == "s4"
    assert [d for d, _ in rig.hub.offers] == ["pi-a", "pi-a", "pi-b", "pi-a"]
    assert rig.metrics.mqtt_offers_rejected == {"rate_limited": 2}


async def test_a_redelivered_offer_is_dropped_without_a_second_session() -> None:
    rig = make_rig()
    await rig.offer("pi-a", "s1")
    await rig.offer("pi-a", "s1")  # QoS 1 may deliver twice
    assert len(rig.hub.offers) == 1 and len(rig.mqtt.published) == 1
    assert rig.metrics.mqtt_offers_rejected == {"duplicate": 1}
    await rig.offer("pi-a", "s2")  # a new attempt is served
    assert len(rig.hub.offers) == 2


async def test_hub_device_tokens_apply_to_mqtt_offers_too() -> None:
    mine, shared = "pi-a-token-0123456789abcdef", "shared-token-0123456789abcdef"
    rig = make_rig(hub_device_tokens={"pi-a": mine, "*": shared})
    await rig.offer("pi-a", "s1")
    await rig.offer("pi-a", "s2", token="wrong")
    await rig.offer("pi-a", "s3", token=shared)  # pi-a has its own entry: "*" does not apply
    await rig.offer("pi-a", "s4", token=mine)
    await rig.offer("pi-b", "b1", token=shared)
    errors = [a.error for a in rig.mqtt.answers()]
    assert errors[:3] == ["unauthorized: missing, unknown or wrong device token"] * 3
    assert errors[3:] == [None, None]
    assert rig.metrics.mqtt_offers_rejected == {"unauthorized": 3}


async def test_mqtt_offers_are_default_deny_too() -> None:
    token = "pi-a-token-0123456789abcdef"
    rig = make_rig(hub_allow_unauthenticated=False, hub_device_tokens={"pi-a": token})
    await rig.offer("pi-b", "b1")  # no entry, no "*"
    await rig.offer("pi-a", "a1", token=token)
    assert [a.error for a in rig.mqtt.answers()] == ["unauthorized: missing, unknown or wrong device token", None]
    assert [d for d, _ in rig.hub.offers] == ["pi-a"]


def test_the_token_is_not_in_the_offers_repr() -> None:
    offer = SignalingDescription(type="offer", sdp=SDP, device_id="d", session_id="s", token="s3cret")
    assert "s3cret" not in repr(offer) and "s3cret" not in str(offer)


async def test_an_answer_that_cannot_be_published_is_counted() -> None:
    rig = make_rig()
    rig.mqtt.down = True
    await rig.offer("pi-a", "s1")
    assert rig.hub.offers and rig.metrics.mqtt_offers_rejected == {"answer_not_sent": 1}
    assert rig.metrics.mqtt_answers == 0


async def test_negotiations_in_flight_are_bounded() -> None:
    rig = make_rig(hub_max_negotiations=2)
    rig.hub.gate = asyncio.Event()
    for dev in ("pi-a", "pi-b", "pi-c"):
        await rig.signaling.on_offer(
            topics.signaling_offer(dev),
            json.dumps({"type": "offer", "sdp": SDP, "device_id": dev, "session_id": "s"}).encode(),
        )
    await asyncio.sleep(0)
    assert [a.error for a in rig.mqtt.answers()] == ["busy: 2 offers are being negotiated; retry later"]
    rig.hub.gate.set()
    await rig.signaling.wait_idle()
    assert sorted(a.device_id for a in rig.mqtt.answers() if a.error is None) == ["pi-a", "pi-b"]


# --- trickled ICE ----------------------------------------------------------------------------


async def test_candidates_go_to_the_live_session_of_their_offer() -> None:
    rig = make_rig()
    await rig.offer("pi-a", "s1")
    pc = rig.hub.sessions["pi-a"].pc
    await rig.ice("pi-a", "s1")
    await rig.ice("pi-a", "s1", candidate="")  # end of candidates
    await rig.ice("pi-a", "old-session")
    await rig.ice("pi-b", "s1")  # no session for that device
    [added, end] = pc.added
    assert added is not None and (added.ip, added.port, added.type, added.sdpMid) == ("192.0.2.7", 50000, "host", "0")
    assert end is None
    assert rig.metrics.mqtt_ice == {"added": 1, "end_of_candidates": 1, "no_session": 2}


async def test_candidates_that_beat_the_answer_are_held_then_added() -> None:
    rig = make_rig()
    rig.hub.gate = asyncio.Event()
    await rig.signaling.on_offer(
        topics.signaling_offer("pi-a"),
        json.dumps({"type": "offer", "sdp": SDP, "device_id": "pi-a", "session_id": "s1"}).encode(),
    )
    for _ in range(MAX_EARLY_CANDIDATES + 1):
        await rig.ice("pi-a", "s1")
    assert rig.metrics.mqtt_ice == {"held": MAX_EARLY_CANDIDATES, "too_many_early": 1}
    rig.hub.gate.set()
    await rig.signaling.wait_idle()
    assert len(rig.hub.sessions["pi-a"].pc.added) == MAX_EARLY_CANDIDATES
    assert rig.metrics.mqtt_ice["added"] == MAX_EARLY_CANDIDATES


async def test_candidates_for_a_closed_or_replaced_session_are_dropped() -> None:
    rig = make_rig()
    await rig.offer("pi-a", "s1")
    rig.hub.sessions["pi-a"].closed = True
    await rig.ice("pi-a", "s1")
    await rig.offer("pi-a", "s2")
    old = rig.hub.sessions["pi-a"]
    rig.hub.sessions["pi-a"] = FakeSession()  # replaced by an HTTP /connect, say
    await rig.ice("pi-a", "s2")
    assert old.pc.added == [] and rig.metrics.mqtt_ice == {"no_session": 2}


async def test_bad_candidates_are_counted_and_the_session_carries_on() -> None:
    rig = make_rig()
    await rig.offer("pi-a", "s1")
    await rig.ice("pi-a", "s1", candidate="candidate:garbage")
    await rig.signaling.on_ice(topics.signaling_ice("pi-a"), b'{"candidate": "x", "session_id": "s1"}')  # no mid
    await rig.ice("pi-a", "s1")
    assert rig.metrics.mqtt_ice == {"bad_candidate": 1, "bad_message": 1, "added": 1}


async def test_candidate_floods_are_rate_limited() -> None:
    rig = make_rig()
    await rig.offer("pi-a", "s1")
    for _ in range(100):
        await rig.ice("pi-a", "s1")
    assert rig.metrics.mqtt_ice == {"added": 64, "rate_limited": 36}
    rig.clock.now += 1.0  # 20 per second come back
    for _ in range(25):
        await rig.ice("pi-a", "s1")
    assert rig.metrics.mqtt_ice["added"] == 84


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (CANDIDATE, ("1", 1, "udp", 2130706431, "192.0.2.7", 50000, "host")),
        ("a=" + CANDIDATE, ("1", 1, "udp", 2130706431, "192.0.2.7", 50000, "host")),
        (
            "842163049 1 udp 1677729535 203.0.113.5 3478 typ srflx raddr 10.0.0.2 rport 50000",
            ("842163049", 1, "udp", 1677729535, "203.0.113.5", 3478, "srflx"),
        ),
    ],
)
def test_remote_candidate_parses_w3c_lines(line: str, expected: tuple[Any, ...]) -> None:
    c = remote_candidate(IceCandidate(candidate=line, sdpMid="0", sdpMLineIndex=0, session_id="s"))
    assert c is not None
    assert (c.foundation, c.component, c.protocol, c.priority, c.ip, c.port, c.type) == expected
    assert (c.sdpMid, c.sdpMLineIndex) == ("0", 0)


@pytest.mark.parametrize("line", ["candidate:1 1 udp", "candidate:1 x udp 1 1.2.3.4 5 typ host", "hello world"])
def test_remote_candidate_refuses_what_is_not_a_candidate(line: str) -> None:
    with pytest.raises(ValueError, match="not an ICE candidate"):
        remote_candidate(IceCandidate(candidate=line, sdpMid="0", session_id="s"))


async def test_a_closed_session_is_forgotten() -> None:
    """H6: no per-device entry outlives its session (the hub calls session_closed)."""
    rig = make_rig()
    await rig.offer("pi-a", "s1")
    session = rig.hub.sessions["pi-a"]
    rig.signaling.session_closed("pi-a", FakeSession())  # another session of that id: kept
    await rig.ice("pi-a", "s1")
    assert rig.metrics.mqtt_ice["added"] == 1
    rig.signaling.session_closed("pi-a", session)
    await rig.ice("pi-a", "s1")
    assert rig.metrics.mqtt_ice["no_session"] == 1 and not rig.signaling._live
