"""The pipeline with a scripted detector (shapes drawn into JPEG frames) on a clock the test moves.

Real tracker (ultralytics ByteTrack), zones and alert rules; no model, no broker: alerts are only
recorded (the control plane is off), in a store under ``tmp_path``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from ai_server.store import MediaStore
from ai_server.vision.alerting import CameraRank
from ai_server.vision.config import VisionConfig
from ai_server.vision.pipeline import Frame, FrameResult, VisionPipeline
from tests.ai_server.vision.conftest import Clock, ShapeDetector, car, person, scene

pytestmark = [pytest.mark.unit, pytest.mark.timeout(60)]

PipelineFactory = Callable[..., VisionPipeline]


@pytest.fixture
async def make(media_store: MediaStore, clock: Clock) -> AsyncIterator[PipelineFactory]:
    made: list[VisionPipeline] = []

    def factory(detector: ShapeDetector | None = None, **config: Any) -> VisionPipeline:
        config.setdefault("alert_labels", ("person", "car"))
        places = config.pop("places", lambda d: (None, None))
        vp = VisionPipeline(detector or ShapeDetector(), VisionConfig(**config), store=media_store,
                            places=places, clock=clock)
        made.append(vp)
        return vp

    yield factory
    for vp in made:
        await vp.stop()


class Feed:
    """Frames of one camera with increasing ids, the clock moving 0.2 s (5 fps) per motion frame."""

    def __init__(self, vp: VisionPipeline, clock: Clock, device_id: str) -> None:
        self.vp, self.clock, self.device_id, self.n = vp, clock, device_id, 0

    async def motion(self, jpeg: bytes, step_s: float = 0.2) -> FrameResult:
        self.clock.advance(step_s)
        self.n += 1
        return await self.vp.analyse(Frame(self.device_id, jpeg, frame_id=self.n))

    async def refresh(self, jpeg: bytes) -> FrameResult:
        self.n += 1
        return await self.vp.analyse(Frame(self.device_id, jpeg, frame_id=self.n, refresh=True))


async def test_a_static_scene_costs_no_yolo_call(make: PipelineFactory, clock: Clock) -> None:
    detector = ShapeDetector()
    vp = make(detector)
    feed = Feed(vp, clock, "door")
    still = scene(car(100, 150))
    for _ in range(30):  # five minutes of the hub's 10 s refreshes
        clock.advance(10)
        result = await feed.refresh(still)
        assert result.error == "" and result.detections == ()
    vp.tick()
    assert detector.calls == 0 and vp.metrics.events["yolo_calls"] == 0
    assert vp.metrics.events["refreshes"] == 30
    view = vp.latest("door")
    assert view is not None and view.detections is None and view.jpeg == still
    assert (view.width, view.height) == (320, 240)
    assert [c.device_id for c in vp.cameras()] == ["door"] and vp.cameras()[0].online
    # A question about the camera analyses the refresh frame then, once.
    analysed = await vp.analysed("door")
    assert analysed is not None and [d.label for d in analysed.detections or ()] == ["car"]
    assert detector.calls == 1
    assert await vp.analysed("door") == analysed and detector.calls == 1
    assert vp.latest("door") == analysed
    assert await vp.analysed("nobody") is None and vp.latest("nobody") is None


async def test_a_walker_is_tracked_enters_the_zone_after_inertia_and_alerts_once(
    make: PipelineFactory, clock: Clock
) -> None:
    vp = make(zones={"door": {"porch": [(0.0, 0.5), (0.5, 0.5), (0.5, 1.0), (0.0, 1.0)]}}, zone_inertia=3)
    feed = Feed(vp, clock, "door")
    results = []
    for x in range(20, 120, 8):  # walks along the porch (feet at y=200 of 240: lower half)
        results.append(await feed.motion(scene(person(x, 130))))
    ids = {d.track_id for r in results for d in r.detections}
    assert ids == {1}  # one physical object, one id, from the first frame (ByteTrack confirms at once there)
    zones = [r.detections[0].zone for r in results]
    assert zones[:2] == ["", ""] and set(zones[2:]) == {"porch"}  # in the zone from the 3rd frame on
    await vp.drain()
    events = await vp.events()
    assert [(e.zone, e.alert_type, e.track_id, e.outcome) for e in events] == [
        ("porch", "person_detected", 1, "recorded")]
    assert events[0].snapshot is not None and events[0].snapshot.read_bytes().startswith(b"\xff\xd8")
    assert vp.metrics.events["tracks_new"] == 1
    # Into the upper half (no zone): the detection says so.
    out = await feed.motion(scene(person(150, 20)))
    assert out.detections[0].zone == ""


async def test_a_parked_car_does_not_alert_again(make: PipelineFactory, clock: Clock) -> None:
    vp = make(dedup_s=60, track_lost_s=5)
    feed = Feed(vp, clock, "drive")
    parked = car(100, 150)
    for _ in range(4):
        await feed.motion(scene(parked))
    # Quiet street for an hour: only refreshes, no analysed frame, so the car is never "missing".
    for _ in range(360):
        clock.advance(10)
        await feed.refresh(scene(parked))
    vp.tick()
    # Someone walks past: motion frames again, with the car still there. Same track, no new car alert,
    # although the de-dup window is long over; the walker is new and alerts.
    for x in range(10, 200, 12):
        result = await feed.motion(scene(parked, person(x, 20)))
    cars = [d for d in result.detections if d.label == "car"]
    assert [d.track_id for d in cars] == [1]
    await vp.drain()
    events = await vp.events()
    assert sorted(e.alert_type for e in events) == ["car_detected", "person_detected"]
    assert vp.metrics.events["tracks_ended"] == 0


async def test_an_object_that_left_ends_its_track_and_a_new_one_is_new(make: PipelineFactory, clock: Clock) -> None:
    vp = make(dedup_s=60, track_lost_s=5)
    feed = Feed(vp, clock, "drive")
    for _ in range(4):
        await feed.motion(scene(car(100, 150)))
    await feed.motion(scene())  # it drove off: the analysed frame is empty
    clock.advance(4.0)
    vp.tick()
    assert vp.metrics.events["tracks_ended"] == 0
    clock.advance(1.5)
    vp.tick()
    assert vp.metrics.events["tracks_ended"] == 1
    clock.advance(120)
    for _ in range(4):  # another car parks in the same place: a new track, a new alert (window over)
        r = await feed.motion(scene(car(100, 150)))
    assert [d.track_id for d in r.detections] == [2]
    await vp.drain()
    assert [e.outcome for e in await vp.events()] == ["recorded", "recorded"]


async def test_dedup_within_the_window_records_without_alerting(make: PipelineFactory, clock: Clock) -> None:
    vp = make(dedup_s=60, track_lost_s=1)
    feed = Feed(vp, clock, "door")
    for _visit in range(3):  # three visits 20 s apart, each a new track
        for x in range(20, 80, 10):
            await feed.motion(scene(person(x, 130)))
        await feed.motion(scene())
        clock.advance(20)
        vp.tick()
    await vp.drain()
    assert [e.outcome for e in await vp.events()][::-1] == ["recorded", "duplicate", "duplicate"]
    assert vp.metrics.events["alert_recorded"] == 1 and vp.metrics.events["alert_duplicate"] == 2


async def test_cameras_that_overlap_alert_once_from_the_priority_camera(make: PipelineFactory, clock: Clock) -> None:
    vp = make(
        cameras={"door": CameraRank(10, "front"), "hall": CameraRank(1, "front")}, overlap_hold_s=2.0,
        places=lambda d: ("hall", "front_door"),
    )
    door, hall = Feed(vp, clock, "door"), Feed(vp, clock, "hall")
    await door.refresh(scene())  # both cameras are online
    await hall.refresh(scene())
    # The hall camera (low priority) confirms the entry first; the door camera a frame later.
    for x in range(20, 60, 10):
        await hall.motion(scene(person(x, 130)), step_s=0.1)
    for x in range(20, 60, 10):
        await door.motion(scene(person(x + 100, 130)), step_s=0.1)
    clock.advance(2.5)
    vp.tick()
    await vp.drain()
    events = await vp.events()
    got = sorted((e.device_id, e.zone, e.outcome) for e in events)
    assert got == [("door", "front_door", "recorded"), ("hall", "front_door", "overlap")]
    assert [c.device_id for c in vp.cameras()] == ["door", "hall"]  # priority first
    assert [c.zone for c in vp.cameras()] == ["front_door", "front_door"]


async def test_frames_of_several_cameras_share_one_yolo_call(make: PipelineFactory) -> None:
    detector = ShapeDetector()
    vp = make(detector, max_batch=4)
    frames = [Frame(f"cam{i}", scene(person(10 + 20 * i, 100)), frame_id=1) for i in range(6)]
    results = await asyncio.gather(*(vp.analyse(f) for f in frames))
    assert detector.batches == [4, 2]  # max_batch, then the rest
    assert [r.device_id for r in results] == [f.device_id for f in frames]
    assert all(len(r.detections) == 1 and r.error == "" for r in results)
    assert vp.metrics.events["yolo_calls"] == 2 and vp.metrics.events["yolo_images"] == 6


async def test_under_load_a_camera_keeps_one_waiting_frame_the_newest(make: PipelineFactory) -> None:
    detector = ShapeDetector()
    vp = make(detector)
    futures = [vp.submit(Frame("door", scene(person(10 + 5 * i, 100)), frame_id=i)) for i in range(10)]
    results = await asyncio.gather(*futures)
    assert detector.images == 1  # nine were superseded before the batch started
    assert [r.error.split(":")[0] for r in results[:9]] == ["superseded"] * 9
    assert results[9].error == "" and len(results[9].detections) == 1
    assert vp.metrics.events["frames_superseded"] == 9


async def test_bad_frames_are_refused_counted_and_the_next_frame_still_analysed(make: PipelineFactory) -> None:
    vp = make(max_frame_bytes=200_000)
    good = scene(person(50, 100))
    cases = {
        "not_jpeg": b"\x89PNG\r\n\x1a\n" + bytes(100),
        "bad_jpeg": b"\xff\xd8\xff" + bytes(50),
        "oversized": b"\xff\xd8\xff" + bytes(300_000),
        "bad_device_id": good,
    }
    for reason, data in cases.items():
        device = "door" if reason != "bad_device_id" else "../etc"
        result = await vp.analyse(Frame(device, data, frame_id=1))
        assert result.error.startswith(f"refused ({reason})"), result.error
        assert vp.metrics.events[f"frames_refused_{reason}"] == 1
    # A timestamp no clock can mean is not worth refusing the frame for: the server's time is used.
    result = await vp.analyse(Frame("door", good, timestamp_ms=2**63, frame_id=1))
    assert result.error == "" and vp.metrics.events["bad_timestamps"] == 1
    truncated = good[: len(good) // 3]  # a readable header, a body cut short
    result = await vp.analyse(Frame("door", truncated, frame_id=2))
    assert result.error == "" or "undecodable" in result.error
    result = await vp.analyse(Frame("door", good, frame_id=3))
    assert result.error == "" and [d.label for d in result.detections] == ["person"]


async def test_a_camera_whose_frames_stop_goes_offline_and_its_tracks_end(make: PipelineFactory, clock: Clock) -> None:
    vp = make(offline_after_s=30, track_lost_s=5)
    feed = Feed(vp, clock, "yard")
    for x in range(20, 60, 10):
        await feed.motion(scene(person(x, 100)))
    await feed.refresh(scene(person(50, 100)))
    clock.advance(29)
    vp.tick()
    assert vp.cameras()[0].online and vp.metrics.events["tracks_ended"] == 0
    clock.advance(1)
    vp.tick()
    info = vp.cameras()[0]
    assert not info.online and vp.metrics.events["camera_offline"] == 1
    assert vp.metrics.events["tracks_ended"] == 1
    assert vp.latest("yard") is not None  # the last view stays (a question can say how old it is)
    # Back online: the person is a new track (ByteTrack confirms a new id on its second frame).
    first = await feed.motion(scene(person(50, 100)))
    assert vp.cameras()[0].online and vp.metrics.events["camera_online"] == 1
    second = await feed.motion(scene(person(52, 100)))
    assert [d.track_id for d in first.detections] == [-1] and [d.track_id for d in second.detections] == [2]


async def test_a_motion_frame_waiting_for_its_batch_is_what_a_question_gets(make: PipelineFactory) -> None:
    detector = ShapeDetector()
    vp = make(detector)
    pending = vp.submit(Frame("door", scene(person(40, 100)), frame_id=1))
    view = await vp.analysed("door")  # does not run a second detection: waits for the frame's batch
    assert view is not None and [d.label for d in view.detections or ()] == ["person"]
    assert (await pending).error == "" and detector.images == 1
    assert (await vp.analyse(Frame("door", scene(), frame_id=2, refresh=True))).error == ""
    await vp.stop()
    # Nothing hangs on a stopped pipeline: frames are answered, a question about an unanalysed view fails at once.
    assert (await vp.analyse(Frame("door", scene(), frame_id=3))).error == "vision is stopped"
    with pytest.raises(RuntimeError, match="stopped"):
        await asyncio.wait_for(vp.analysed("door"), 1.0)
