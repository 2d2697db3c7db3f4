"""What the rest of the AI server may ask of vision: the cameras, and each camera's latest view.

One small interface so that visual questions (``ai_server.vision.ask``) and the media paths do
not depend on how frames arrive or how detection is scheduled (``ai_server.vision.pipeline``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Detection:
    """One object in one analysed frame; ``bbox`` is ``(x, y, w, h)`` in pixels of that frame."""

    label: str
    confidence: float
    bbox: tuple[float, float, float, float]
    track_id: int = -1  # -1: not (yet) tracked
    zone: str = ""  # "" when the camera has zones and the object is in none of them


@dataclass(frozen=True, slots=True)
class CameraView:
    """The freshest frame of one camera as the AI server holds it."""

    device_id: str
    jpeg: bytes
    width: int
    height: int
    seen_at: float  # the vision pipeline's monotonic clock when the frame arrived
    wall_time: datetime  # UTC capture time (the hub's timestamp), for spec §8.11 media.timestamp
    detections: tuple[Detection, ...] | None  # None: not analysed (a no-motion refresh frame)


@dataclass(frozen=True, slots=True)
class CameraInfo:
    """A camera the AI server has had frames from, with where it is and how much it counts."""

    device_id: str
    room: str
    zone: str
    priority: int  # higher first (spec §7.3: front door > backyard)
    online: bool  # its stream is live at the hub (frames or refreshes keep arriving)


class Views(Protocol):
    """Implemented by the vision pipeline."""

    def now(self) -> float:
        """The clock ``CameraView.seen_at`` is on."""
        ...

    def cameras(self) -> list[CameraInfo]:
        """Every known camera, best first (priority, then online)."""
        ...

    def latest(self, device_id: str) -> CameraView | None:
        """The camera's freshest frame, analysed or not; None for an unknown camera."""
        ...

    async def analysed(self, device_id: str) -> CameraView | None:
        """The freshest frame with detections, running the detector on it now if it was not analysed."""
        ...
