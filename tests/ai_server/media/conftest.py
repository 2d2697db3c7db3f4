"""Media fixtures: the session's real YOLO model (tests/ai_server/vision) and the control plane on mosquitto."""

from __future__ import annotations

import cv2
import numpy as np

from tests.ai_server.control.conftest import control_server, mqtt_settings, watch  # noqa: F401  (fixtures)
from tests.ai_server.vision.conftest import ASSETS, yolo  # noqa: F401  (fixtures)


def bus_jpeg() -> bytes:
    """ultralytics' bus.jpg (810x1080): four people and a bus."""
    return (ASSETS / "bus.jpg").read_bytes()


def text_png(lines: tuple[str, ...] = ("NAILA", "Meeting at 3pm")) -> bytes:
    """Black text rendered with OpenCV on a white 320x240 image."""
    img = np.full((240, 320, 3), 255, np.uint8)
    for i, line in enumerate(lines):
        cv2.putText(img, line, (20, 80 + 80 * i), cv2.FONT_HERSHEY_SIMPLEX, 1.5 if i == 0 else 0.9, (0, 0, 0),
                    3 if i == 0 else 2)
    ok, buf = cv2.imencode(".png", img)
    assert ok
    return buf.tobytes()
