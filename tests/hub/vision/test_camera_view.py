"""A camera tile's detections (hub/vision/views.py, issue 24): before any answer the view is "not
analysed"; a refresh frame's empty answer (the AI server does not analyse refreshes) keeps the last
boxes and their time; an analysed frame with nothing in it clears them."""

from __future__ import annotations

import numpy as np
import pytest
from av import VideoFrame

from hub.vision.views import CameraView
from shared.contract import pb

pytestmark = pytest.mark.unit


def result(frame_id: int, at_ms: int, *labels: str) -> pb.VisionResult:
    r = pb.VisionResult(device_id="hall-pi", frame_id=frame_id, timestamp_ms=at_ms)
    for label in labels:
        d = r.detections.add(label=label, confidence=0.8)
        d.bbox.x, d.bbox.y, d.bbox.w, d.bbox.h = 10, 10, 50, 100
    return r


def test_a_refresh_answer_is_not_a_false_nothing() -> None:
    view = CameraView((320, 240))
    view.update(VideoFrame.from_ndarray(np.zeros((240, 320, 3), np.uint8), format="rgb24"), 1000)
    assert view.analysed_at_ms is None and view.boxes == ()  # the page says "not analysed yet"
    view.detections(result(1, 1000, "person"))
    assert [b.label for b in view.boxes] == ["person"] and view.analysed_at_ms == 1000
    view.refresh_sent(2)
    view.detections(result(2, 11_000))  # the refresh: answered empty, never analysed
    assert [b.label for b in view.boxes] == ["person"] and view.analysed_at_ms == 1000
    view.detections(pb.VisionResult(device_id="hall-pi", frame_id=3, timestamp_ms=12_000, error="superseded"))
    assert view.analysed_at_ms == 1000
    view.detections(result(4, 13_000))  # an analysed motion frame with nobody in it
    assert view.boxes == () and view.analysed_at_ms == 13_000
    view.detections(result(1, 1000, "car"))  # an answer older than the newest is ignored
    assert view.boxes == ()
