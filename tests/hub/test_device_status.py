"""hub.device_status: one decoding subscription hands each device status to every hub consumer."""

from __future__ import annotations

import asyncio

import pytest

from hub.device_status import STATUS_BURST, STATUS_PER_S, DeviceStatusFeed
from hub.metrics import HubMetrics
from hub.rooms import RoomDirectory
from shared.mqtt import DeviceStatus, build, encode, topics

pytestmark = pytest.mark.unit


def status(device_id: str, room: str | None = None) -> bytes:
    return encode(
        build(DeviceStatus, device_id=device_id, online=True, capabilities=[], firmware_version="1", room=room)
    )


async def test_every_listener_gets_the_one_decoded_status_and_a_broken_one_hurts_nobody() -> None:
    feed, rooms = DeviceStatusFeed(), RoomDirectory()
    seen: list[DeviceStatus] = []
    cleared: list[str] = []

    def broken(_: DeviceStatus) -> None:
        raise RuntimeError("boom")

    feed.add_listener(broken)
    feed.add_listener(rooms.on_status)
    feed.add_listener(seen.append, cleared.append)
    await feed.on_mqtt(topics.device_status("pi-k"), status("pi-k", room="kitchen"))
    assert rooms.room_of("pi-k") == "kitchen" and [s.device_id for s in seen] == ["pi-k"]
    await feed.on_mqtt(topics.device_status("pi-k"), status("pi-x"))  # topic and payload disagree
    await feed.on_mqtt(topics.device_status("pi-k"), b"{not json")
    assert feed.invalid == 2 and len(seen) == 1
    await feed.on_mqtt(topics.device_status("pi-k"), b"")
    assert cleared == ["pi-k"] and rooms.room_of("pi-k") == "kitchen", "a cleared status keeps the room"


async def test_a_parked_status_is_applied_by_the_feeds_own_timer() -> None:
    metrics, now = HubMetrics(), [100.0]
    feed, rooms = DeviceStatusFeed(metrics, clock=lambda: now[0]), RoomDirectory()
    feed.add_listener(rooms.on_status)
    for i in range(STATUS_BURST + 3):
        await feed.on_mqtt(topics.device_status("pi-f"), status("pi-f", room=f"r{i}"))
    assert rooms.room_of("pi-f") == f"r{STATUS_BURST - 1}" and metrics.web_refused["status_limited"] == 3
    # One timer, due one token interval later; fired here by hand on the moved clock.
    timer = feed._timer
    assert timer is not None
    assert timer.when() - asyncio.get_running_loop().time() == pytest.approx(1 / STATUS_PER_S, abs=0.1)
    now[0] += 1 / STATUS_PER_S
    timer.cancel()
    feed._on_timer()
    assert rooms.room_of("pi-f") == f"r{STATUS_BURST + 2}", "the latest parked status, applied"
    assert feed._timer is None, "nothing parked any more: no timer"
