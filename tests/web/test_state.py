"""The dashboard model and the event fan-out, without a network: MQTT inputs, sessions, levels."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest

from hub.metrics import HubMetrics
from hub.turns import TurnLog, TurnRecord
from hub.web.events import QUEUE_SIZE, EventBus
from hub.web.state import DashboardState
from shared.mqtt import Alert, DeviceStatus, build, encode, topics

pytestmark = pytest.mark.unit


@dataclass
class FakeSession:
    input_level_dbfs: float = -120.0
    last_media_at: float = 0.0


def drain(bus_sub: Any) -> list[tuple[str, Any]]:
    out = []
    while not bus_sub.queue.empty():
        raw = bus_sub.queue.get_nowait()
        if raw is None:
            break
        lines = raw.decode().splitlines()
        out.append((lines[0][7:], json.loads(lines[1][6:])))
    return out


class Clock:
    """The dashboard's clock, moved by hand (device-list updates go out at most DEVICES_EVERY_S apart)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(clock: Clock | None = None) -> tuple[DashboardState, EventBus, dict[str, FakeSession], TurnLog]:
    bus, sessions, turns = EventBus(), {}, TurnLog(10)
    state = DashboardState(
        bus, HubMetrics(), turns, sessions, hub_instance="i1", clock=clock or Clock()  # type: ignore[arg-type]
    )
    return state, bus, sessions, turns


def status(device_id: str, online: bool, **kw: Any) -> bytes:
    return encode(build(DeviceStatus, device_id=device_id, online=online, capabilities=[], firmware_version="1", **kw))


async def test_device_status_alerts_and_bad_messages() -> None:
    clock = Clock()
    state, bus, _, _ = make(clock)
    sub = bus.subscribe(None)
    assert sub is not None
    await state.statuses.on_mqtt(topics.device_status("pi-a"), status("pi-a", True, room="kitchen"))
    seen = state.devices["pi-a"].last_seen
    clock.now += 1  # device-list updates are at most 2 a second (test_hub_data_status_flood.py)
    await state.statuses.on_mqtt(topics.device_status("pi-a"), status("pi-a", False))
    view = state.devices["pi-a"]
    assert not view.online and state.rooms.room_of("pi-a") == "kitchen", "an offline will without a room keeps the room"
    assert view.last_seen == seen, "going offline does not move 'last seen'"
    # Payload and topic disagree, unsafe ids, not JSON: all dropped.
    await state.statuses.on_mqtt(topics.device_status("pi-b"), status("pi-c", True))
    await state.statuses.on_mqtt("naila/devices/<b>/status", status("pi-b", True))
    await state.statuses.on_mqtt(topics.device_status("pi-b"), b"{not json")
    assert set(state.devices) == {"pi-a"}
    # An empty retained message deletes the status.
    clock.now += 1
    await state.statuses.on_mqtt(topics.device_status("pi-a"), b"")
    assert state.devices == {}
    for zone, kind in (("door", "person"), ("garden", "motion"), ("door", "motion")):
        alert = build(
            Alert, alert_type=kind, zone=zone, confidence=0.5, source_device="cam", snapshot_available=True,
            snapshot_id=f"snap-{zone}-{kind}",
        )
        await state.on_mqtt(topics.ALERTS_ALL, encode(alert))
    assert [a["alert_type"] for a in state.alerts_matching("door", None)] == ["person", "motion"]
    assert [a["zone"] for a in state.alerts_matching(None, "motion")] == ["garden", "door"]
    assert state.alerts[0]["snapshot"] == "/api/alerts/snap-door-person/snapshot", "served by the hub, behind the login"
    kinds = [k for k, _ in drain(sub)]
    assert kinds.count("devices") == 3 and kinds.count("alert") == 3


def test_sessions_and_levels_are_polled() -> None:
    clock = Clock()
    state, bus, sessions, turns = make(clock)
    dash, page = bus.subscribe(None), bus.subscribe("web-x")
    assert dash is not None and page is not None
    sessions["web-x"] = FakeSession(-30.04)
    state.set_browser_room("web-x", "office")
    state.poll_sessions()
    assert state.devices["web-x"].connected and state.device_list()[0]["room"] == "office"
    state.poll_sessions()  # nothing changed: nothing sent
    sessions["web-x"].input_level_dbfs = -200.0
    state.poll_sessions()
    del sessions["web-x"]
    clock.now += 1
    state.poll_sessions()
    assert not state.devices["web-x"].online
    turns.add(TurnRecord("web-x", "c", transcript="hi"))
    events = drain(dash)
    assert [k for k, _ in events] == ["devices", "levels", "levels", "devices", "levels", "turn", "latency"]
    assert events[1][1] == {"web-x": -30.0} and events[2][1] == {"web-x": -90.0}
    assert [k for k, _ in drain(page)] == ["turn"], "a device page gets only its own turns"


def test_a_slow_page_is_cut_off_not_waited_for() -> None:
    bus = EventBus(max_clients=2)
    slow, other = bus.subscribe(None), bus.subscribe(None)
    assert slow is not None and other is not None and bus.subscribe(None) is None
    for i in range(QUEUE_SIZE):
        bus.publish("x", i)
    drain(other)
    bus.publish("x", "one too many")
    assert slow.closed and len(bus) == 1 and bus.dropped_clients == 1
    assert slow.queue.get_nowait() is None, "its writer is woken to end the stream"


async def test_the_privacy_switches_of_a_device_reach_the_dashboard() -> None:
    state, _bus, _, _ = make(Clock())
    await state.statuses.on_mqtt(topics.device_status("pi-p"), status("pi-p", True, camera_enabled=False))
    (row,) = state.device_list()
    assert (row["camera_enabled"], row["microphone_enabled"]) == (False, None)  # None: no such switch
    await state.statuses.on_mqtt(topics.device_status("pi-p"), status("pi-p", False))  # its will says nothing
    assert state.device_list()[0]["camera_enabled"] is False
