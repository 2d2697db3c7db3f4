"""Arbitration and rooms inside the hub's device sessions, with a fake AI link and a real Arbiter.

Frames carry their level in their samples and their VAD verdict in sample 1 (Scripted), so
two sessions can hear "the same speech" at different levels on one controllable timeline.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest
from aiortc import RTCPeerConnection

from hub.arbitration import Arbiter
from hub.device_status import DeviceStatusFeed
from hub.rooms import RoomDirectory
from hub.session import DeviceSession
from shared.contract import pb
from shared.mqtt import DeviceStatus, build, outbound, topics
from tests.hub.test_arbitration import speech
from tests.hub.test_session_logic import FakeHost

pytestmark = pytest.mark.unit


@dataclass
class ArbitratedHost(FakeHost):
    arbiter: Arbiter = field(default_factory=lambda: Arbiter(live_devices=lambda: 2))
    rooms: RoomDirectory = field(default_factory=RoomDirectory)


def envelope(seed: int, n: int = 60) -> list[float]:
    """Amplitudes of a real spoken phrase (espeak-ng), 20 ms per value; another phrase per seed."""
    return [32768 * 10 ** (db / 20) for db in speech(seed, frames=n)]


def frame(amplitude: float, voiced: bool) -> np.ndarray:
    f = np.full(320, max(1, int(amplitude)), dtype=np.int16)
    f[1::2] *= -1  # a square wave: RMS = amplitude
    f[1] = -f[1] if voiced else 0
    return f


def play(sessions: dict[DeviceSession, tuple[list[float], float]], t0: float = 10.0) -> None:
    """Feed every session the same timeline: 20 quiet frames, the speech (scaled), 25 quiet frames."""
    n = max(len(env) for env, _ in sessions.values())
    for i in range(20 + n + 25):
        t = t0 + i * 0.02
        for s, (env, gain) in sessions.items():
            j = i - 20
            speaking = 0 <= j < len(env)
            amp = env[j] * gain if speaking else 20.0
            s.process_frame(frame(amp, speaking), t)


def sent(host: FakeHost, device_id: str) -> list[int]:
    return [o.msg.event for o in host.link.sent if o.msg.device_id == device_id]


async def test_only_the_louder_device_opens_the_utterance() -> None:
    host = ArbitratedHost()
    kitchen = DeviceSession("kitchen-pi", RTCPeerConnection(), host)  # type: ignore[arg-type]
    hall = DeviceSession("hall-pi", RTCPeerConnection(), host)  # type: ignore[arg-type]
    try:
        env = envelope(1)
        play({kitchen: (env, 1.0), hall: (env, 0.2)})
        k = sent(host, "kitchen-pi")
        assert k[0] == pb.START and k[-1] == pb.END and k.count(pb.START) == 1
        assert sent(host, "hall-pi") == []
        assert host.metrics.arbitration == {"won": 1, "lost": 1}
        # The held audio went upstream: nothing of the utterance is lost to the decision.
        frames = sum(len(o.msg.audio_pcm) // 640 for o in host.link.sent if o.msg.device_id == "kitchen-pi")
        assert frames >= 60
    finally:
        await kitchen.close("test")
        await hall.close("test")


async def test_two_different_utterances_are_both_sent() -> None:
    host = ArbitratedHost()
    a = DeviceSession("a", RTCPeerConnection(), host)  # type: ignore[arg-type]
    b = DeviceSession("b", RTCPeerConnection(), host)  # type: ignore[arg-type]
    try:
        play({a: (envelope(2), 1.0), b: (envelope(3), 0.8)})
        assert sent(host, "a").count(pb.START) == 1 and sent(host, "b").count(pb.START) == 1
        assert sent(host, "a")[-1] == pb.END and sent(host, "b")[-1] == pb.END
    finally:
        await a.close("test")
        await b.close("test")


async def test_the_room_from_the_device_status_rides_on_every_message() -> None:
    host = ArbitratedHost(arbiter=Arbiter(live_devices=lambda: 1))
    status = build(DeviceStatus, device_id="pi-k", online=True, capabilities=["audio"], firmware_version="1",
                   room="kitchen")
    out = outbound(topics.device_status("pi-k"), status)
    feed = DeviceStatusFeed()  # the hub's one decoding subscription (hub.device_status)
    feed.add_listener(host.rooms.on_status)
    await feed.on_mqtt(out.topic, out.payload)
    await feed.on_mqtt(topics.device_status("pi-k"), b"{not json")  # ignored, room kept
    s = DeviceSession("pi-k", RTCPeerConnection(), host)  # type: ignore[arg-type]
    try:
        play({s: (envelope(4, 20), 1.0)})
        rooms = {o.msg.room for o in host.link.sent}
        assert rooms == {"kitchen"} and sent(host, "pi-k")[0] == pb.START
    finally:
        await s.close("test")
