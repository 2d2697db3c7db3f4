"""Real ultralytics inference (the shipped YOLOv8 checkpoint, CPU, imgsz 320) through the whole pipeline.

The model is loaded once per session (``yolo`` fixture); each test counts its own YOLO calls from
the detector's counters.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from ai_server.media.sniff import image_info
from ai_server.store import MediaStore
from ai_server.vision.config import VisionConfig
from ai_server.vision.detector import YoloDetector
from ai_server.vision.pipeline import Frame, VisionPipeline
from tests.ai_server.vision.conftest import Clock, asset_jpeg, walker_frames

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

LEFT = [(0.0, 0.4), (0.5, 0.4), (0.5, 1.0), (0.0, 1.0)]
RIGHT = [(0.5, 0.4), (1.0, 0.4), (1.0, 1.0), (0.5, 1.0)]


async def test_a_person_walking_across_two_zones_is_one_track_with_one_alert_per_zone(
    yolo: YoloDetector, media_store: MediaStore, clock: Clock
) -> None:
    vp = VisionPipeline(
        yolo,
        VisionConfig(alert_labels=("person", "fallen_person"), zones={"porch_cam": {"porch": LEFT, "path": RIGHT}}),
        store=media_store, clock=clock,
    )
    calls = yolo.calls
    try:
        results = []
        for i, jpeg in enumerate(walker_frames(range(20, 520, 25))):  # 20 frames, 25 px apart, at 5 fps
            clock.advance(0.2)
            results.append(await vp.analyse(Frame("porch_cam", jpeg, frame_id=i, motion_score=0.1)))
        assert yolo.calls - calls == 20
        assert all(r.error == "" and r.inference_ms > 0 for r in results)
        # The person is found in every frame and keeps one track id the whole way.
        best = [max(r.detections, key=lambda d: d.confidence) for r in results]
        assert all(d.label in ("person", "fallen_person") for d in best)
        ids = [d.track_id for d in best]
        assert ids[0] > 0 and ids.count(ids[0]) == len(ids), ids
        # Feet (bottom-centre) at x = 20 + 47 .. 495 + 47 of 640: the porch first, then the path.
        zones = [d.zone for d in best]
        assert zones[:2] == ["", ""] and zones[2] == "porch" and zones[-1] == "path", zones
        await vp.drain()
        events = await vp.events(device_id="porch_cam")
        assert sorted((e.zone, e.alert_type, e.track_id, e.outcome) for e in events) == [
            ("path", "person_detected", ids[0], "recorded"), ("porch", "person_detected", ids[0], "recorded")]
        assert all(e.snapshot is not None and e.snapshot.is_file() for e in events)
        view = vp.latest("porch_cam")
        assert view is not None and view.detections is not None and (view.width, view.height) == (640, 480)
    finally:
        await vp.stop()


async def test_frames_of_two_cameras_share_one_predict_and_refreshes_cost_nothing(
    yolo: YoloDetector, media_store: MediaStore
) -> None:
    vp = VisionPipeline(yolo, VisionConfig(), store=media_store)
    try:
        calls, images = yolo.calls, yolo.images
        bus, zidane = asset_jpeg("bus.jpg"), asset_jpeg("zidane.jpg")
        for i in range(5):  # nothing moves: the hub sends refreshes only
            await vp.analyse(Frame("bus_cam", bus, frame_id=i, refresh=True))
            await vp.analyse(Frame("pitch_cam", zidane, frame_id=i, refresh=True))
        assert (yolo.calls, yolo.images) == (calls, images)
        started = time.perf_counter()
        a, b = await asyncio.gather(vp.analyse(Frame("bus_cam", bus, frame_id=9)),
                                    vp.analyse(Frame("pitch_cam", zidane, frame_id=9)))
        elapsed = time.perf_counter() - started
        assert (yolo.calls - calls, yolo.images - images) == (1, 2)
        assert len(a.detections) >= 3 and len(b.detections) >= 2  # bus: 3-4 people; zidane: 2
        assert a.inference_ms == b.inference_ms  # the same call
        print(f"\nYOLO batch of 2 (bus 810x1080 + zidane 1280x720, imgsz 320, CPU): {a.inference_ms} ms, "
              f"round trip {elapsed * 1000:.0f} ms")
        # A question about a camera whose latest frame is a refresh analyses it on demand, once.
        await vp.analyse(Frame("bus_cam", bus, frame_id=10, refresh=True))
        view = await vp.analysed("bus_cam")
        assert view is not None and view.detections is not None and len(view.detections) >= 3
        assert yolo.calls - calls == 2
    finally:
        await vp.stop()


def test_loading_ultralytics_leaves_pillow_alone(yolo: YoloDetector) -> None:
    # ultralytics patches PIL.Image.open to pip-install a HEIF plugin on unknown files; the detector
    # undoes it, so the media checks still refuse garbage with their own error.
    with pytest.raises(ValueError, match="not a readable image"):
        image_info(b"\xff\xd8\xff" + bytes(50))
    assert yolo.names == {0: "person", 1: "fallen_person"}  # VISION_LABELS renamed Normal/Fall
    assert "best.pt" in yolo.name and "cpu" in yolo.name


@pytest.mark.gpu
def test_on_a_gpu_a_batch_runs_in_fp16_on_cuda() -> None:
    from ai_server.vision.detector import shipped_checkpoint

    weights = shipped_checkpoint()
    assert weights is not None
    detector = YoloDetector(weights, device="auto", imgsz=640)
    detector.load()
    assert detector.device == "cuda:0" and "cuda:0" in detector.name
    import cv2
    import numpy as np

    images = [cv2.imdecode(np.frombuffer(asset_jpeg(n), np.uint8), cv2.IMREAD_COLOR) for n in ("bus.jpg", "zidane.jpg")]
    boxes = detector.detect_batch(images * 4)
    assert len(boxes) == 8 and len(boxes[0]) >= 3 and len(boxes[1]) >= 2
    assert (detector.calls, detector.images) == (1, 8)
