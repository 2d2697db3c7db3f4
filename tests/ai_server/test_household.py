"""The Household servicer's handlers on a real media store and real timers (issue 24).

A snapshot decided by the vision alert dispatcher comes back with its box; the event history is
filtered by camera, zone and time; the timer list follows every change (WatchTimers) and a cancel
by id stops a timer, a reminder, or a ring. The clock is the timers' ManualClock; the one fake is
the player (what would reach a device), as in tests/ai_server/assist/test_timers.py.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import io
from collections.abc import AsyncGenerator, AsyncIterator
from pathlib import Path
from typing import Any, NoReturn

import grpc
import pytest
from PIL import Image

from ai_server.assist import reminders as reminders_mod
from ai_server.assist import timers as timers_mod
from ai_server.assist.alarms import AlarmChanges, Alarms
from ai_server.assist.clock import ManualClock
from ai_server.assist.core import AssistContext, AssistServices, IntentMatch, IntentRegistry
from ai_server.household import HouseholdService
from ai_server.metrics import Metrics
from ai_server.store.media import MediaStore
from ai_server.vision.alerting import AlertDispatcher, Decision, ZoneEntry
from ai_server.vision.metrics import VisionMetrics
from shared.contract import pb
from tests.ai_server.assist.test_timers import T0, FakePlayer

pytestmark = pytest.mark.unit


class Aborted(Exception):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code, self.details = code, details


class Context:
    """grpc.aio's ServicerContext as the handlers use it: abort raises."""

    async def abort(self, code: grpc.StatusCode, details: str) -> NoReturn:
        raise Aborted(code, details)


def jpeg(width: int = 64, height: int = 48) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 40, 40)).save(out, "JPEG")
    return out.getvalue()


class Household:
    def __init__(self, tmp: Path) -> None:
        self.clock = ManualClock(T0)
        self.player = FakePlayer()
        self.player.clock = self.clock
        self.registry = IntentRegistry()
        services = AssistServices(self.registry, self.clock.now, str(tmp / "assist"))
        changes = AlarmChanges()
        timers = timers_mod.install(services, player=self.player, clock=self.clock.clock, on_change=changes)
        reminders = reminders_mod.install(services, timers=timers)
        self.alarms = Alarms(timers, reminders, changes)
        self.store = MediaStore(tmp / "media")
        self.metrics = Metrics()
        self.vision_metrics = VisionMetrics(self.metrics.registry)
        self.service = HouseholdService(self.store, self.alarms, self.metrics)

    async def say(self, intent: str, device: str = "kitchen-pi", **slots: Any) -> str:
        ctx = AssistContext(now=self.clock.now(), device_id=device, room="kitchen")
        reply = await self.registry.handle(IntentMatch(intent, slots), ctx)
        assert reply is not None
        return reply.text

    def close(self) -> None:
        self.alarms.close()
        self.store.close()
        self.metrics.close()


@pytest.fixture
async def home(tmp_path: Path) -> AsyncIterator[Household]:
    h = Household(tmp_path)
    yield h
    h.close()


async def _alert(home: Household, *, device: str, zone: str, at: dt.datetime, box: tuple[float, ...]) -> None:
    dispatcher = AlertDispatcher(lambda: home.store, home.vision_metrics)  # MQTT off: recorded
    entry = ZoneEntry(
        device, zone, "person", "person_detected", 0.91, 7, 0.0, at, jpeg(), (box[0], box[1], box[2], box[3]), (64, 48)
    )
    dispatcher.submit([Decision(entry, "alert")])
    await dispatcher.drain()
    await dispatcher.close()


async def test_an_alert_snapshot_comes_back_with_the_box_of_what_alerted(home: Household) -> None:
    await _alert(home, device="door-cam", zone="front_door", at=T0, box=(10, 5, 20, 30))
    [event] = home.store.events.query()
    assert event.media_id is not None
    snap = await home.service.GetSnapshot(pb.SnapshotRequest(id=event.media_id), Context())
    assert snap.jpeg == jpeg() and snap.format == "jpeg"
    assert (snap.width, snap.height, snap.device_id, snap.zone) == (64, 48, "door-cam", "front_door")
    [d] = snap.detections
    assert (d.label, d.zone, d.track_id) == ("person", "front_door", 7)
    assert (d.bbox.x, d.bbox.y, d.bbox.w, d.bbox.h) == (10, 5, 20, 30)
    meta = await home.service.GetSnapshot(pb.SnapshotRequest(id=event.media_id, without_image=True), Context())
    assert meta.jpeg == b"" and len(meta.detections) == 1


async def test_bad_and_unknown_snapshot_ids_are_refused_in_one_line_and_counted(home: Household) -> None:
    upload = home.store.add(jpeg(), source="mqtt_upload", media_type="image", format="jpeg")
    for wanted, code in (
        ("../etc/passwd", grpc.StatusCode.INVALID_ARGUMENT),
        ("f" * 32, grpc.StatusCode.NOT_FOUND),
        (upload.id, grpc.StatusCode.NOT_FOUND),
    ):  # an upload is not an alert snapshot
        with pytest.raises(Aborted) as caught:
            await home.service.GetSnapshot(pb.SnapshotRequest(id=wanted), Context())
        assert caught.value.code == code and "\n" not in caught.value.details
    assert home.metrics.counters["household_refused"] == 3


async def test_an_oversized_snapshot_is_refused(home: Household) -> None:
    await _alert(home, device="door-cam", zone="front_door", at=T0, box=(1, 1, 2, 2))
    [event] = home.store.events.query()
    assert event.media_id is not None
    small = HouseholdService(home.store, home.alarms, home.metrics, max_snapshot_bytes=100)
    with pytest.raises(Aborted) as caught:
        await small.GetSnapshot(pb.SnapshotRequest(id=event.media_id), Context())
    assert caught.value.code == grpc.StatusCode.FAILED_PRECONDITION


def ms(t: dt.datetime) -> int:
    return int(t.timestamp() * 1000)


async def test_the_event_history_filters_by_camera_zone_and_time(home: Household) -> None:
    hour = dt.timedelta(hours=1)
    await _alert(home, device="door-cam", zone="front_door", at=T0, box=(1, 1, 2, 2))
    await _alert(home, device="yard-cam", zone="backyard", at=T0 + hour, box=(1, 1, 2, 2))
    await _alert(home, device="door-cam", zone="front_door", at=T0 + 2 * hour, box=(1, 1, 2, 2))
    every = await home.service.QueryEvents(pb.EventQuery(), Context())
    assert [e.device_id for e in every.events] == ["door-cam", "yard-cam", "door-cam"]  # newest first
    door = await home.service.QueryEvents(pb.EventQuery(device_id="door-cam"), Context())
    assert [e.timestamp_ms for e in door.events] == [ms(T0 + 2 * hour), ms(T0)]
    yard = await home.service.QueryEvents(pb.EventQuery(zone="backyard"), Context())
    assert [e.device_id for e in yard.events] == ["yard-cam"] and yard.events[0].media_id
    window = await home.service.QueryEvents(
        pb.EventQuery(since_ms=ms(T0 + hour), until_ms=ms(T0 + 2 * hour)), Context()
    )
    assert [e.zone for e in window.events] == ["backyard"]
    for bad in (pb.EventQuery(zone="a/b"), pb.EventQuery(since_ms=ms(T0 + hour), until_ms=ms(T0))):
        with pytest.raises(Aborted) as caught:
            await home.service.QueryEvents(bad, Context())
        assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT


async def test_the_timer_list_follows_every_change_and_a_cancel_stops_the_ringing(home: Household) -> None:
    stream = home.service.WatchTimers(pb.TimersRequest(), Context())
    assert isinstance(stream, AsyncGenerator)
    first = await stream.__anext__()
    assert list(first.timers) == []
    assert await home.say("HassStartTimer", name="pasta", minutes=8) == "Pasta timer set for 8 minutes."
    started = await asyncio.wait_for(stream.__anext__(), 5)
    [timer] = started.timers
    assert (timer.kind, timer.label, timer.device_id, timer.room) == ("timer", "pasta timer", "kitchen-pi", "kitchen")
    assert timer.ends_at_ms == int((T0 + dt.timedelta(minutes=8)).timestamp() * 1000)
    assert timer.duration_ms == 480_000 and not timer.ringing

    await home.clock.advance(8 * 60)  # done: it rings
    ringing = (await home.service.ListTimers(pb.TimersRequest(), Context())).timers
    assert [(t.id, t.ringing) for t in ringing] == [(timer.id, True)]
    assert home.player.played, "the timer did not ring"
    done = await home.service.CancelTimer(pb.CancelTimerRequest(id=timer.id), Context())
    assert (done.found, done.kind, done.stopped_ringing) == (True, "timer", True)
    assert home.alarms.timers.ringer.rings == {}
    played = len(home.player.played)
    await home.clock.advance(30)
    assert len(home.player.played) == played, "it kept ringing after the cancel"
    latest = await asyncio.wait_for(stream.__anext__(), 5)  # changes folded: the newest list
    assert list(latest.timers) == []
    await stream.aclose()


async def test_a_running_timer_and_a_reminder_are_cancelled_by_id(home: Household) -> None:
    await home.say("HassStartTimer", minutes=10)
    await home.say("NailaRemind", reminder="to call mum in 20 minutes")
    board = (await home.service.ListTimers(pb.TimersRequest(), Context())).timers
    assert [(t.kind, t.label) for t in board] == [("timer", "10 minute timer"), ("reminder", "call mum")]
    timer, reminder = board
    assert (await home.service.CancelTimer(pb.CancelTimerRequest(id=timer.id), Context())).kind == "timer"
    assert (await home.service.CancelTimer(pb.CancelTimerRequest(id=reminder.id), Context())).kind == "reminder"
    assert list((await home.service.ListTimers(pb.TimersRequest(), Context())).timers) == []
    await home.clock.advance(30 * 60)
    assert home.player.played == [], "a cancelled timer or reminder still rang"
    again = await home.service.CancelTimer(pb.CancelTimerRequest(id=timer.id), Context())
    assert not again.found
    with pytest.raises(Aborted) as caught:
        await home.service.CancelTimer(pb.CancelTimerRequest(id="x y"), Context())
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_timer_set_from_the_dashboard_is_a_voice_timer_and_rings_on_its_device(home: Household) -> None:
    timer = await home.service.SetTimer(
        pb.SetTimerRequest(duration_s=90, label="Tea", device_id="hall-pi", room="hall"), Context()
    )
    assert (timer.kind, timer.label, timer.device_id, timer.room) == ("timer", "tea timer", "hall-pi", "hall")
    assert timer.ends_at_ms == int((T0 + dt.timedelta(seconds=90)).timestamp() * 1000)
    # The same timer as a voice one: "how long is left on the tea timer" from that device finds it.
    assert "tea" in await home.say("HassTimerStatus", device="hall-pi", name="tea")
    assert home.alarms.timers.store is not None and home.alarms.timers.store.timers(), "not persisted"
    await home.clock.advance(90)
    assert [(target, text) for _, target, text in home.player.played] == [("hall-pi", "Your tea timer is done.")]
    for bad, wanted in (
        (pb.SetTimerRequest(duration_s=0, device_id="hall-pi"), "duration"),
        (pb.SetTimerRequest(duration_s=25 * 3600, device_id="hall-pi"), "24 hours"),
        (pb.SetTimerRequest(duration_s=60, device_id="../x"), "device_id"),
        (pb.SetTimerRequest(duration_s=60, device_id="hall-pi", label="a\nb"), "label"),
    ):
        with pytest.raises(Aborted) as caught:
            await home.service.SetTimer(bad, Context())
        assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT and wanted in caught.value.details
        assert "\n" not in caught.value.details
