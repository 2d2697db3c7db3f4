"""AnalyzeFrames and GetStatus over real gRPC; alerts on the real mosquitto with their stored snapshot."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import grpc
import pytest

from ai_server.errors import StartupError
from ai_server.vision.detector import YoloDetector
from ai_server.vision.view import Views
from shared.config import MediaSettings, MqttSettings, load
from shared.contract import pb, pb_grpc
from shared.mqtt import topics
from tests.ai_server.control.conftest import ControlFactory, Watch, announce_device, uid, until
from tests.ai_server.vision.conftest import ShapeDetector, person, scene, walker_frames

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


async def analyze(address: str, frames: Sequence[pb.VisionFrame]) -> list[pb.VisionResult]:
    """All frames at once: frames of one camera that pile up supersede each other."""
    async def send() -> AsyncIterator[pb.VisionFrame]:
        for f in frames:
            yield f

    async with grpc.aio.insecure_channel(address) as ch:
        return [r async for r in pb_grpc.NailaAIStub(ch).AnalyzeFrames(send())]


async def analyze_paced(address: str, frames: Sequence[pb.VisionFrame]) -> list[pb.VisionResult]:
    """One frame at a time, each after the previous answer, on one stream (a camera at the detector's pace)."""
    async with grpc.aio.insecure_channel(address) as ch:
        call = pb_grpc.NailaAIStub(ch).AnalyzeFrames()
        results = []
        for f in frames:
            await call.write(f)
            result = await call.read()
            assert isinstance(result, pb.VisionResult)
            results.append(result)
        await call.done_writing()
        assert await call.read() == grpc.aio.EOF
        return results


async def status(address: str) -> pb.StatusResponse:
    async with grpc.aio.insecure_channel(address) as ch:
        return await pb_grpc.NailaAIStub(ch).GetStatus(pb.StatusRequest())


async def test_a_bad_jpeg_is_answered_with_an_error_and_the_stream_goes_on(make_server: Any) -> None:
    detector = ShapeDetector()
    server = await make_server(detector=detector)
    frames = [
        pb.VisionFrame(device_id="door", frame_id=1, jpeg=scene(person(40, 100)), timestamp_ms=1_700_000_000_000),
        pb.VisionFrame(device_id="door", frame_id=2, jpeg=b"\xff\xd8\xff\xe0 cut short"),
        pb.VisionFrame(device_id="door", frame_id=3, jpeg=scene(person(44, 100))),
        pb.VisionFrame(device_id="door", frame_id=4, jpeg=scene(person(44, 100)), refresh=True),
    ]
    results = await analyze_paced(server.address, frames)
    assert [r.frame_id for r in results] == [1, 2, 3, 4]
    assert results[0].error == "" and results[0].timestamp_ms == 1_700_000_000_000
    assert [(d.label, d.track_id) for d in results[0].detections] == [("person", 1)]
    box = results[0].detections[0].bbox
    assert (box.x, box.y, box.w, box.h) == pytest.approx((40, 100, 30, 70), abs=2)
    assert results[1].error.startswith("refused (bad_jpeg)") and not results[1].detections
    assert results[2].error == "" and [d.track_id for d in results[2].detections] == [1]
    assert results[3].error == "" and not results[3].detections  # a refresh: kept, not analysed
    assert detector.images == 2

    st = await status(server.address)
    assert st.vision_model == "shapes (test)"
    assert st.counters["vision_frames_refused_bad_jpeg"] == 1 and st.counters["vision_refreshes"] == 1
    assert st.counters["vision_yolo_calls"] == 2
    views: Views = server.vision  # what the rest of the server reaches
    assert server.service.vision is server.vision
    assert [c.device_id for c in views.cameras()] == ["door"]
    latest = views.latest("door")
    assert latest is not None and latest.detections is None  # the refresh is the latest view
    # Visual questions look through the same views: the refresh frame is analysed for the answer.
    from ai_server.vision.ask import VisualQuestions

    looker = server.pipeline.looker
    assert isinstance(looker, VisualQuestions) and looker.views is server.vision
    look = await looker.find("door", "", "what do you see on the door camera")
    assert look is not None and look.context is not None
    assert [o.label for o in look.context.analysis.objects] == ["person"] and detector.images == 3


async def test_frames_of_several_cameras_on_one_stream_share_a_batch_and_keep_their_order(make_server: Any) -> None:
    detector = ShapeDetector()
    server = await make_server(detector=detector, settings={"vision_batch_window_ms": 20.0})
    frames = [pb.VisionFrame(device_id=f"cam{i % 4}", frame_id=i, jpeg=scene(person(10 + 10 * i, 100)))
              for i in range(8)]
    results = await analyze(server.address, frames)
    assert [(r.device_id, r.frame_id) for r in results] == [(f.device_id, f.frame_id) for f in frames]
    assert max(detector.batches) >= 2, detector.batches  # cameras rode together
    analysed = [r for r in results if not r.error]
    assert all(r.error.startswith("superseded") for r in results if r.error)
    assert detector.images == len(analysed) and len(analysed) >= 4  # at least each camera's newest frame


async def test_the_server_starts_without_vision_when_ultralytics_is_missing(
    make_server: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import ai_server.vision.detector as detector_module

    monkeypatch.setattr(detector_module, "missing_dependency", lambda: "ultralytics is not installed")
    server = await make_server()
    assert server.vision is None
    assert "vision is off: ultralytics is not installed" in caplog.text
    st = await status(server.address)
    assert st.vision_model == "(vision unavailable: ultralytics is not installed)"
    results = await analyze(server.address, [pb.VisionFrame(device_id="door", frame_id=7, jpeg=b"x")])
    assert [(r.frame_id, r.error) for r in results] == [(7, "vision unavailable: ultralytics is not installed")]


async def test_a_vision_model_that_does_not_exist_stops_the_start(make_server: Any) -> None:
    with pytest.raises(StartupError, match=r"/nowhere/yolo\.pt"):
        await make_server(settings={"vision_model": "/nowhere/yolo.pt"})


@pytest.mark.unit
def test_starting_the_server_does_not_import_torch() -> None:
    # The voice path (and its tests) must not pay for torch: YOLO loads with the first frame.
    code = """
import asyncio, sys
from ai_server.app import start_server
from ai_server.fakes import FakeLLM, FakeSTT, FakeTTS
from shared.config import AIServerSettings, load

async def main():
    s = load(AIServerSettings, ai_mqtt=False)
    server = await start_server(s, stt=FakeSTT(), llm=FakeLLM(), tts=FakeTTS(), host="127.0.0.1", port=0,
                                warm=False)
    assert server.vision is not None
    await server.stop(grace=0)
    print(sorted(m for m in ("torch", "ultralytics") if m in sys.modules))

asyncio.run(main())
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"


async def test_a_walker_alerts_once_on_mqtt_with_a_stored_snapshot_and_the_event_is_recorded(
    control_server: ControlFactory, watch: Watch, yolo: YoloDetector
) -> None:
    cam, zone = uid("cam"), uid("zone")
    server, plane = await control_server(
        detector=yolo, settings={"vision_alert_labels": ["person", "fallen_person"], "vision_alert_dedup_s": 60.0})
    # The camera has no zone polygons: its zone is the one its device status gives.
    await announce_device(watch, cam, room="hall", zone=zone)
    await until(lambda: plane.registry.get(cam) is not None)
    zone_topic = topics.alert(zone, "person_detected")
    await watch.subscribe(zone_topic, topics.ALERTS_ALL)
    t0 = int(time.time() * 1000)  # capture times within 5 s of the server's clock are kept as sent
    frames = [pb.VisionFrame(device_id=cam, frame_id=i, jpeg=jpeg, timestamp_ms=t0 + 200 * i)
              for i, jpeg in enumerate(walker_frames(range(40, 440, 40)))]
    results = await analyze_paced(server.address, frames)
    assert all(r.error == "" and r.detections for r in results)
    assert all(d.zone == zone for r in results[2:] for d in r.detections if d.track_id > 0)

    msg = await watch.next(zone_topic, within_s=10)
    assert msg.qos == 1
    assert isinstance(msg.payload, bytes)
    alert = json.loads(msg.payload)
    assert (alert["alert_type"], alert["zone"], alert["source_device"], alert["snapshot_available"]) == (
        "person_detected", zone, cam, True)
    assert 0.25 <= alert["confidence"] <= 1.0
    assert await watch.nothing_on(zone_topic, within_s=1.0)  # one person walking by: one alert

    assert server.vision is not None
    await server.vision.drain()
    events = plane.media.store.events.query(device_id=cam)
    assert [(e.zone, e.alert_type, e.outcome) for e in events] == [(zone, "person_detected", "alerted")]
    event = events[0]
    assert event.media_id is not None and event.snapshot is not None
    record = plane.media.store.get(event.media_id)
    assert record is not None and (record.source, record.device_id, record.zone) == ("alert_snapshot", cam, zone)
    assert event.snapshot.read_bytes() == frames[event_frame(results, event.track_id)].jpeg
    assert event.time.timestamp() * 1000 == pytest.approx(frames[event_frame(results, event.track_id)].timestamp_ms)
    views = server.vision.cameras()
    assert [(c.device_id, c.room, c.zone, c.online) for c in views] == [(cam, "hall", zone, True)]


def event_frame(results: Sequence[pb.VisionResult], track_id: int) -> int:
    """Index of the frame where ``track_id`` first had a zone: the frame the alert's snapshot is."""
    for i, r in enumerate(results):
        if any(d.track_id == track_id and d.zone for d in r.detections):
            return i
    raise AssertionError(f"track {track_id} never entered a zone")


async def test_alerts_are_only_recorded_while_the_broker_is_down(make_server: Any) -> None:
    # No control plane (AI_MQTT off): alerts go to the history with their snapshot, nowhere else.
    server = await make_server(detector=ShapeDetector(), settings={"ai_mqtt": False})
    frames = [pb.VisionFrame(device_id="yard", frame_id=i, jpeg=scene(person(20 + 6 * i, 120))) for i in range(5)]
    await analyze_paced(server.address, frames)
    assert server.vision is not None
    await server.vision.drain()
    events = await server.vision.events()
    assert [(e.device_id, e.zone, e.alert_type, e.outcome) for e in events] == [
        ("yard", "default", "person_detected", "recorded")]
    assert events[0].snapshot is not None and events[0].snapshot.is_file()


async def test_a_burst_of_one_cameras_frames_is_answered_in_order_with_the_stale_ones_superseded(
    make_server: Any
) -> None:
    detector = ShapeDetector()
    server = await make_server(detector=detector)
    frames = [pb.VisionFrame(device_id="door", frame_id=i, jpeg=scene(person(10 + 4 * i, 100))) for i in range(20)]
    results = await analyze(server.address, frames)
    assert [r.frame_id for r in results] == list(range(20))
    assert results[-1].error == "" and len(results[-1].detections) == 1  # the newest is always analysed
    superseded = [r for r in results if r.error]
    assert superseded and all(r.error.startswith("superseded") for r in superseded)
    assert detector.images == 20 - len(superseded) < 20
    st = await status(server.address)
    assert st.counters["vision_frames_superseded"] == len(superseded)


async def test_with_the_broker_unreachable_an_alert_is_kept_in_the_outbox_with_its_snapshot(
    make_server: Any
) -> None:
    from tests.conftest import free_port

    nowhere = load(MqttSettings, mqtt_host="127.0.0.1", mqtt_port=free_port())
    server = await make_server(detector=ShapeDetector(), mqtt=nowhere, media=load(MediaSettings))
    assert server.control is not None and not server.control.connected
    frames = [pb.VisionFrame(device_id="gate", frame_id=i, jpeg=scene(person(20 + 6 * i, 120))) for i in range(5)]
    await analyze_paced(server.address, frames)
    assert server.vision is not None
    await server.vision.drain()
    events = server.control.media.store.events.query()
    # Not final (finding H5): owed, and sent when the broker is back (tests/security/test_alert_durability_*).
    assert [(e.device_id, e.outcome) for e in events] == [("gate", "queued")]
    assert events[0].media_id is not None and len(server.control.media.store.recent(source="alert_snapshot")) == 1
    owed = server.control.alerts.outbox.pending()
    assert [(o.alert.source_device, o.alert.snapshot_available) for o in owed] == [("gate", True)]
    assert owed[0].alert.timestamp == events[0].time  # the frame's time, not the time it is sent
