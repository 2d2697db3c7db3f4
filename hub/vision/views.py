"""Each camera's latest view for the dashboard: the frame the motion gate last chose, and its boxes.

The hub already sees every camera frame and chooses some for the AI server (motion frames and
refreshes, hub.vision.camera). The dashboard shows the last of those, so a camera tile costs no
new stream and changes exactly when the AI server's view does. The decoded frame is kept (one
per camera) and JPEG-encoded only when a page asks for it, at most once per chosen frame: the
encoded bytes are cached with the view's version and reused until a newer frame is chosen.

Detections come from the AI server's VisionResult in pixels of the analysed (scaled) frame; they
are kept as fractions of the frame, so a page draws them over an image of any size.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from av import VideoFrame

from hub.vision.frames import FrameError, encode_jpeg, fit
from shared.contract import pb

VIEW_BOX = (640, 480)  # the dashboard's view: larger than the AI server's 320x240, still small
VIEW_QUALITY = 80
MAX_BOXES = 32  # a tile with more boxes than this is unreadable; a flood of detections is cut here
REFRESH_IDS = 64  # refresh frames remembered per camera (a few are in flight at most)


@dataclass(frozen=True, slots=True)
class Box:
    """One detection, its box as fractions (0..1) of the frame."""

    label: str
    confidence: float
    x: float
    y: float
    w: float
    h: float

    def to_json(self) -> dict[str, object]:
        return {
            "label": self.label,
            "confidence": round(self.confidence, 3),
            "box": [round(v, 4) for v in (self.x, self.y, self.w, self.h)],
        }


def boxes_of(result: pb.VisionResult, analysed: tuple[int, int]) -> tuple[Box, ...]:
    """The result's detections as fractions of the analysed frame (``analysed``: its width, height)."""
    w, h = max(1, analysed[0]), max(1, analysed[1])

    def clamp(v: float) -> float:
        return min(1.0, max(0.0, v))

    out = []
    for d in list(result.detections)[:MAX_BOXES]:
        b = d.bbox
        x, y = clamp(b.x / w), clamp(b.y / h)
        out.append(Box(d.label, d.confidence, x, y, min(clamp(b.w / w), 1.0 - x), min(clamp(b.h / h), 1.0 - y)))
    return tuple(out)


class CameraView:
    """The latest chosen frame of one camera, its JPEG on demand, its last detections."""

    def __init__(self, frame_box: tuple[int, int]) -> None:
        self.frame_box = frame_box  # the size the AI server analyses (detections are in its pixels)
        self.version = 0  # +1 per chosen frame: the page refetches the image when it changes
        self.frame: VideoFrame | None = None
        self.at_ms: int | None = None  # wall clock of the chosen frame's arrival
        self.motion_at_ms: int | None = None  # wall clock of the last frame with motion
        self.boxes: tuple[Box, ...] = ()
        self.boxes_frame_id = 0
        # Wall clock of the frame the boxes are of (the AI server echoes it); None: no frame of
        # this camera analysed yet. A tile then says "not analysed yet", never "nothing detected".
        self.analysed_at_ms: int | None = None
        self._refreshes: deque[int] = deque(maxlen=REFRESH_IDS)  # frame ids sent as refreshes
        self._jpeg: tuple[int, bytes] | None = None  # (version, bytes)

    def update(self, frame: VideoFrame, at_ms: int) -> None:
        self.frame = frame
        self.at_ms = at_ms
        self.version += 1

    def motion(self, at_ms: int) -> None:
        self.motion_at_ms = at_ms

    def refresh_sent(self, frame_id: int) -> None:
        """Frame ``frame_id`` went to the AI server as a refresh (a still scene)."""
        self._refreshes.append(frame_id)

    def detections(self, result: pb.VisionResult) -> None:
        """The AI server's answer for one of this camera's frames (the newest answer wins).

        A refresh is answered with no detections without being analysed (ai_server/vision/pipeline.py
        FrameResult), so an empty answer to one says nothing about the scene: the last boxes stay.
        """
        if result.error or result.frame_id < self.boxes_frame_id:
            return
        if not result.detections and result.frame_id in self._refreshes:
            return
        frame = self.frame
        analysed = fit(frame.width, frame.height, self.frame_box) if frame is not None else self.frame_box
        self.boxes = boxes_of(result, analysed)
        self.boxes_frame_id = result.frame_id
        self.analysed_at_ms = int(result.timestamp_ms) or self.at_ms

    def cached_jpeg(self) -> bytes | None:
        """The view's JPEG if it was encoded since the last chosen frame, else None (encode it)."""
        if self._jpeg is not None and self._jpeg[0] == self.version:
            return self._jpeg[1]
        return None

    def encode(self) -> tuple[int, bytes] | None:
        """Encode the current frame (CPU work: the vision worker thread runs it); None without one."""
        frame, version = self.frame, self.version
        if frame is None:
            return None
        try:
            jpeg = encode_jpeg(frame, VIEW_BOX, VIEW_QUALITY)
        except FrameError:
            return None
        return version, jpeg.data

    def keep(self, encoded: tuple[int, bytes]) -> None:
        """Cache an encode's result unless a newer frame arrived while it ran."""
        if encoded[0] == self.version:
            self._jpeg = encoded

    def size(self) -> tuple[int, int] | None:
        frame = self.frame
        return fit(frame.width, frame.height, VIEW_BOX) if frame is not None else None
