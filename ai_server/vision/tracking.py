"""Per-camera object tracking: ultralytics' ByteTrack gives ids, this module gives each object a lifecycle.

ByteTrack (``ultralytics.trackers.byte_tracker.BYTETracker``, the default of ``model.track``)
associates the boxes of consecutive analysed frames by Kalman-predicted IoU; we feed it the boxes
of our own batched predict call instead of letting ultralytics run one model call per camera.

On top of it, the lifecycle Frigate uses so that a parked car does not alert again and again:

* ``new``     an id ByteTrack confirmed for the first time
* ``update``  the id matched again in a later analysed frame
* ``end``     the object has been missing from the analysed frames for ``lost_s`` on the clock,
              or its camera went offline

Time, not frame count, ends a track, and only *analysed* frames can make a track go missing: the
hub sends frames for detection only while something moves, so a camera that sends nothing (or
only no-motion refreshes) means the scene is unchanged and every object in it is still there.
A car that parks stays one track for as long as it stays in view, however long the street is
quiet. ByteTrack's own frame-count expiry (``track_buffer``) is set out of reach for the same
reason; ending a track here also removes it from ByteTrack, so its id is never reused.
"""

from __future__ import annotations

import logging
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final, Literal

import numpy as np

from ai_server.vision.detector import Box, ultralytics_module

log = logging.getLogger(__name__)

#: Frames ByteTrack would keep a lost track: far beyond any ``lost_s`` (we end tracks ourselves).
_NEVER_FRAMES: Final = 1_000_000
#: Recent labels a track's label is the majority of: one misclassified frame does not relabel it.
_LABEL_VOTES: Final = 5

TrackPhase = Literal["new", "update", "end"]


@dataclass(slots=True)
class Track:
    """One physical object seen by one camera."""

    track_id: int
    label: str
    confidence: float
    bbox: tuple[float, float, float, float]  # (x, y, w, h) pixels, last matched box
    first_seen: float
    last_seen: float  # last analysed frame it matched (pipeline clock)
    missing_since: float | None = None  # first analysed frame it did not match since then
    hits: int = 1
    labels: deque[str] = field(default_factory=lambda: deque(maxlen=_LABEL_VOTES))

    def observe(self, box: Box, now: float) -> None:
        self.labels.append(box.label)
        votes = Counter(self.labels).most_common()
        best = votes[0][1]
        # Ties go to the latest label among the leaders.
        self.label = next(lb for lb in reversed(self.labels) if dict(votes)[lb] == best)
        self.confidence = box.confidence
        self.bbox = box.xywh
        self.last_seen = now
        self.missing_since = None


@dataclass(frozen=True, slots=True)
class TrackEvent:
    phase: TrackPhase
    device_id: str
    track: Track  # a copy taken when the event happened


def tracker_config(path: str | None = None, **overrides: Any) -> Any:
    """ByteTrack's settings: ultralytics' ``bytetrack.yaml`` (or ``path``) with ``overrides`` applied."""
    utils = ultralytics_module("ultralytics.utils")
    checks = ultralytics_module("ultralytics.utils.checks")
    cfg = utils.IterableSimpleNamespace(**utils.YAML.load(checks.check_yaml(path or "bytetrack.yaml")))
    for key, value in overrides.items():
        setattr(cfg, key, value)
    return cfg


class CameraTracker:
    """ByteTrack for one camera plus the new/update/end lifecycle; see the module doc."""

    def __init__(self, device_id: str, *, lost_s: float, config: Any = None) -> None:
        byte_tracker = ultralytics_module("ultralytics.trackers.byte_tracker")
        self._boxes = ultralytics_module("ultralytics.engine.results").Boxes
        self.device_id = device_id
        self.lost_s = lost_s
        if config is None:
            config = tracker_config(track_buffer=_NEVER_FRAMES)
        self._byte: Any = byte_tracker.BYTETracker(config)
        self.tracks: dict[int, Track] = {}

    def update(self, boxes: Sequence[Box], shape: tuple[int, int], now: float) -> tuple[list[int], list[TrackEvent]]:
        """Feed one analysed frame (``shape`` = (height, width)); returns each box's track id (-1: not
        tracked, e.g. a first sighting ByteTrack has not confirmed yet) and the lifecycle events."""
        data = np.array([[b.x1, b.y1, b.x2, b.y2, b.confidence, b.class_id] for b in boxes], np.float32)
        rows = self._byte.update(self._boxes(data.reshape(-1, 6), shape))
        ids = [-1] * len(boxes)
        events: list[TrackEvent] = []
        seen: set[int] = set()
        for row in rows:
            # [x1, y1, x2, y2, track_id, score, cls, idx]: idx is the box's index in our input.
            track_id, idx = int(row[4]), int(row[7])
            box = boxes[idx]
            ids[idx] = track_id
            seen.add(track_id)
            track = self.tracks.get(track_id)
            if track is None:
                track = Track(track_id, box.label, box.confidence, box.xywh, first_seen=now, last_seen=now)
                track.labels.append(box.label)
                self.tracks[track_id] = track
                events.append(self._event("new", track))
            else:
                track.observe(box, now)
                track.hits += 1
                events.append(self._event("update", track))
        for track_id, track in self.tracks.items():
            if track_id not in seen and track.missing_since is None:
                track.missing_since = now
        events += self.expire(now)
        return ids, events

    def expire(self, now: float) -> list[TrackEvent]:
        """End the tracks missing for ``lost_s`` or more."""
        gone = [t for t in self.tracks.values()
                if t.missing_since is not None and now - t.missing_since >= self.lost_s]
        return [self._end(t) for t in gone]

    def end_all(self) -> list[TrackEvent]:
        """The camera stopped: every object it tracked ends now."""
        return [self._end(t) for t in list(self.tracks.values())]

    def _end(self, track: Track) -> TrackEvent:
        del self.tracks[track.track_id]
        # Out of ByteTrack too, or a later detection near its last box would revive the ended id.
        byte = self._byte
        for pool in ("tracked_stracks", "lost_stracks"):
            kept = []
            for strack in getattr(byte, pool):
                if strack.track_id == track.track_id:
                    strack.mark_removed()
                else:
                    kept.append(strack)
            setattr(byte, pool, kept)
        return self._event("end", track)

    def _event(self, phase: TrackPhase, track: Track) -> TrackEvent:
        return TrackEvent(phase, self.device_id, replace(track, labels=deque(track.labels, maxlen=_LABEL_VOTES)))
