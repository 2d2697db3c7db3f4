"""Zones: named polygons per camera, and which zone a tracked object is in (Frigate's rules).

* Polygons are in normalised coordinates (0..1 of width and height), so a camera that changes
  resolution keeps its zones.
* An object's position is the bottom-centre of its box: where it stands on the ground, not where
  its head is. A person walking along a porch whose head crosses into the driveway polygon is
  still on the porch.
* Inertia: an object enters a zone only after its position has been in it for ``k`` consecutive
  analysed frames (default 3), so one jittery or misplaced box does not count as an entry; it
  leaves at the first frame outside.
* A camera without polygons has one zone covering the whole frame, named by the caller (the
  device's zone or room from the registry, or ``default``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

import cv2
import numpy as np
import numpy.typing as npt

DEFAULT_ZONE: Final = "default"

Point = tuple[float, float]


def safe_name(text: str, fallback: str = DEFAULT_ZONE) -> str:
    """``text`` as a topic segment: lower case, runs of anything but ``[a-z0-9_.-]`` become ``_``.

    Zone names come from device status (free text like "Front Door") and become MQTT topic levels.
    """
    name = re.sub(r"[^a-z0-9_.\-]+", "_", text.strip().lower()).strip("_")[:64]
    return name if name not in ("", ".", "..") else fallback


def bottom_centre(bbox: tuple[float, float, float, float], width: int, height: int) -> Point:
    """The normalised ground point of an ``(x, y, w, h)`` pixel box."""
    x, y, w, h = bbox
    return (x + w / 2) / max(width, 1), (y + h) / max(height, 1)


@dataclass(frozen=True, slots=True)
class Zone:
    name: str
    contour: npt.NDArray[np.float32]  # N x 1 x 2, normalised, the shape OpenCV's contour functions take

    def contains(self, point: Point) -> bool:
        # >= 0: inside or on the edge (a box standing exactly on the boundary line counts as in).
        return bool(cv2.pointPolygonTest(self.contour, (float(point[0]), float(point[1])), False) >= 0)


class CameraZones:
    """The zones of one camera; see the module doc."""

    def __init__(self, polygons: Mapping[str, Sequence[Point]] | None = None) -> None:
        self.zones = [
            Zone(name, np.asarray(points, np.float32).reshape(-1, 1, 2)) for name, points in (polygons or {}).items()
        ]

    @property
    def has_polygons(self) -> bool:
        return bool(self.zones)

    def zones_at(self, point: Point, default: str = DEFAULT_ZONE) -> list[str]:
        """The zones containing ``point`` in configuration order; ``[default]`` for a camera without polygons."""
        if not self.zones:
            return [default]
        return [z.name for z in self.zones if z.contains(point)]


@dataclass(slots=True)
class _Presence:
    streak: dict[str, int] = field(default_factory=dict)  # zone -> consecutive frames inside
    current: list[str] = field(default_factory=list)  # zones entered (streak >= k), in entry order


class ZoneInertia:
    """Per camera: which zones each track is in, after ``k`` consecutive frames of inertia."""

    def __init__(self, k: int = 3) -> None:
        if k < 1:
            raise ValueError("zone inertia must be at least 1 frame")
        self.k = k
        self._tracks: dict[int, _Presence] = {}

    def observe(self, track_id: int, inside: Sequence[str]) -> list[str]:
        """One analysed frame of a track whose position is in ``inside``; returns its current zones."""
        presence = self._tracks.setdefault(track_id, _Presence())
        presence.streak = {z: presence.streak.get(z, 0) + 1 for z in inside}
        presence.current = [z for z in presence.current if z in presence.streak]
        presence.current += [z for z in inside if presence.streak[z] >= self.k and z not in presence.current]
        return list(presence.current)

    def current(self, track_id: int) -> list[str]:
        presence = self._tracks.get(track_id)
        return [] if presence is None else list(presence.current)

    def forget(self, track_id: int) -> None:
        self._tracks.pop(track_id, None)
