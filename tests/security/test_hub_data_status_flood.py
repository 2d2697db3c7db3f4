"""M8: a flood of device statuses costs the hub's event loop little and bounded memory.

The dashboard model and the room directory are driven directly (their MQTT handlers), on a
hand-moved clock: device-list updates go out at most twice a second, each device's statuses
pass a rate limit (the latest over-limit one is applied later, so the final state still
shows), and the device and room maps stay bounded.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from hub.device_status import STATUS_BURST, DeviceStatusFeed
from hub.metrics import HubMetrics
from hub.rooms import RoomDirectory
from hub.turns import TurnLog
from hub.web.events import EventBus, Subscriber
from hub.web.state import DEVICES_EVERY_S, MAX_DEVICES, TICK_S, DashboardState
from shared.mqtt import DeviceStatus, build, encode, topics

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self) -> None:
        self.now = 5000.0

    def __call__(self) -> float:
        return self.now


def status(device_id: str, online: bool = True, room: str | None = None) -> bytes:
    return encode(
        build(DeviceStatus, device_id=device_id, online=online, capabilities=[], firmware_version="1", room=room)
    )


def device_events(sub: Subscriber) -> list[list[dict[str, Any]]]:
    out = []
    while not sub.queue.empty():
        raw = sub.queue.get_nowait()
        assert raw is not None
        name, data = raw.decode().splitlines()[:2]
        if name == "event: devices":
            out.append(json.loads(data[len("data: ") :]))
    return out


def make(clock: Clock) -> tuple[DashboardState, Subscriber, HubMetrics]:
    bus, metrics = EventBus(), HubMetrics()
    state = DashboardState(bus, metrics, TurnLog(10), {}, hub_instance="i", clock=clock)
    sub = bus.subscribe(None)
    assert sub is not None
    return state, sub, metrics


async def test_device_list_updates_are_coalesced_to_two_a_second() -> None:
    clock = Clock()
    state, dash, _ = make(clock)
    # 10 s of a status every 10 ms from 200 devices (each within its own rate), the ticker
    # flushing every TICK_S as in production.
    sent = 0
    next_tick = clock.now
    for i in range(1000):
        clock.now += 0.01
        await state.statuses.on_mqtt(topics.device_status(f"pi-{i % 200}"), status(f"pi-{i % 200}", online=i % 3 != 0))
        sent += 1
        if clock.now >= next_tick:
            next_tick += TICK_S
            state.flush_devices()
    clock.now += DEVICES_EVERY_S
    state.flush_devices()  # the trailing update: whatever changed last is shown
    updates = device_events(dash)
    assert sent == 1000
    assert 10 <= len(updates) <= 2 * 10 + 1, len(updates)
    last = {d["device_id"]: d for d in updates[-1]}
    assert len(last) == 200
    assert last["pi-199"]["mqtt_online"] is (999 % 3 != 0), "the final state is what the dashboard shows"


async def test_the_first_change_goes_out_at_once_and_the_rest_waits_for_the_window() -> None:
    clock = Clock()
    state, dash, _ = make(clock)
    await state.statuses.on_mqtt(topics.device_status("pi-a"), status("pi-a"))
    assert len(device_events(dash)) == 1, "nothing to coalesce with: sent now"
    await state.statuses.on_mqtt(topics.device_status("pi-b"), status("pi-b"))
    state.flush_devices()
    assert device_events(dash) == [], "inside the window: held"
    clock.now += DEVICES_EVERY_S
    state.flush_devices()
    [update] = device_events(dash)
    assert {d["device_id"] for d in update} == {"pi-a", "pi-b"}
    state.flush_devices()
    assert device_events(dash) == [], "nothing changed since: nothing sent"


async def test_one_flooding_device_is_rate_limited_and_its_latest_status_wins() -> None:
    clock = Clock()
    state, dash, metrics = make(clock)
    for i in range(500):  # 500 statuses in 0.5 s, flapping online/offline
        clock.now += 0.001
        flap = status("pi-flood", online=i % 2 == 0, room=f"r{i}")
        await state.statuses.on_mqtt(topics.device_status("pi-flood"), flap)
    assert metrics.web_refused["status_limited"] == 500 - STATUS_BURST
    assert state.rooms.room_of("pi-flood") == f"r{STATUS_BURST - 1}", "over the limit: parked, not applied"
    # Another device is not affected by the flood.
    await state.statuses.on_mqtt(topics.device_status("pi-calm"), status("pi-calm", room="hall"))
    assert state.rooms.room_of("pi-calm") == "hall"
    clock.now += 10
    state.statuses.apply_parked()
    view = state.devices["pi-flood"]
    assert state.rooms.room_of("pi-flood") == "r499", "the last status is applied once under the rate"
    assert view.mqtt_online is False
    # A clear after a parked status must not be undone by it.
    for i in range(STATUS_BURST + 1):
        await state.statuses.on_mqtt(topics.device_status("pi-flood"), status("pi-flood", room=f"again{i}"))
    await state.statuses.on_mqtt(topics.device_status("pi-flood"), b"")
    clock.now += 10
    state.statuses.apply_parked()
    assert "pi-flood" not in state.devices
    assert device_events(dash), "the dashboard was told"


async def test_the_device_map_stays_bounded_even_when_every_device_says_it_is_online() -> None:
    clock = Clock()
    state, _, _ = make(clock)
    for i in range(MAX_DEVICES + 50):
        await state.statuses.on_mqtt(topics.device_status(f"pi-{i}"), status(f"pi-{i}", online=True))
    assert len(state.devices) == MAX_DEVICES
    assert f"pi-{MAX_DEVICES + 49}" in state.devices, "the newest is kept; the oldest MQTT-only ones go"


async def test_the_room_directory_is_rate_limited_per_device_and_bounded() -> None:
    clock = Clock()
    feed, rooms = DeviceStatusFeed(clock=clock), RoomDirectory(max_rooms=100)
    feed.add_listener(rooms.on_status)
    for i in range(50):
        await feed.on_mqtt(topics.device_status("pi-flood"), status("pi-flood", room=f"r{i}"))
    assert feed.limited == 50 - STATUS_BURST and rooms.room_of("pi-flood") == f"r{STATUS_BURST - 1}"
    clock.now += 60
    feed.apply_parked()
    assert rooms.room_of("pi-flood") == "r49", "back under its rate: its latest status is applied"
    await feed.on_mqtt(topics.device_status("pi-flood"), status("pi-flood", room="kitchen"))
    assert rooms.room_of("pi-flood") == "kitchen", "heard again"
    for i in range(300):
        await feed.on_mqtt(topics.device_status(f"pi-{i}"), status(f"pi-{i}", room="hall"))
    assert len(rooms) == 100
    assert rooms.room_of("pi-299") == "hall" and rooms.room_of("pi-0") == "", "least recently told forgotten first"
    await feed.on_mqtt("naila/devices/<x>/status", status("pi-1", room="x"))  # bad topic: dropped, no error
    assert feed.invalid == 1
