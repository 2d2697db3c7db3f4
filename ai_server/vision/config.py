"""The vision pipeline's settings as one plain value, built from VISION_* (or directly in tests)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from ai_server.vision.alerting import CameraRank
from ai_server.vision.zones import Point
from shared.config import AIServerSettings

#: Decoded frames larger than this are refused before decoding (a JPEG header can claim anything).
MAX_FRAME_PIXELS: Final = 4096 * 4096


@dataclass(frozen=True, slots=True)
class VisionConfig:
    alert_labels: tuple[str, ...] = ("person", "fallen_person")
    zones: Mapping[str, Mapping[str, Sequence[Point]]] = field(default_factory=dict)
    cameras: Mapping[str, CameraRank] = field(default_factory=dict)
    dedup_s: float = 60.0
    max_batch: int = 8
    batch_window_s: float = 0.005
    zone_inertia: int = 3
    track_lost_s: float = 5.0
    offline_after_s: float = 30.0
    overlap_hold_s: float = 2.0
    max_frame_bytes: int = 4_000_000
    max_frame_pixels: int = MAX_FRAME_PIXELS
    housekeeping_s: float = 1.0  # how often offline cameras, lost tracks and held alerts are looked at
    max_cameras: int = 256  # VISION_MAX_CAMERAS

    @classmethod
    def from_settings(cls, s: AIServerSettings) -> VisionConfig:
        return cls(
            alert_labels=tuple(s.vision_alert_labels),
            zones={d: {z: list(p) for z, p in zones.items()} for d, zones in s.vision_zones.items()},
            cameras={d: CameraRank(c.priority, c.overlap) for d, c in s.vision_cameras.items()},
            dedup_s=s.vision_alert_dedup_s,
            max_batch=s.vision_max_batch,
            batch_window_s=s.vision_batch_window_ms / 1000.0,
            zone_inertia=s.vision_zone_inertia,
            track_lost_s=s.vision_track_lost_s,
            offline_after_s=s.vision_offline_after_s,
            overlap_hold_s=s.vision_overlap_hold_s,
            max_frame_bytes=s.vision_max_frame_bytes,
            max_cameras=s.vision_max_cameras,
        )
