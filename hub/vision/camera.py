"""One camera's state at the hub: its motion gate, refresh timing, frame ids and counters.

For every decoded frame :meth:`CameraFeed.decide` runs the motion gate and says whether the
frame goes to the AI server: a forwarded motion frame, or a *refresh*. A refresh is sent on the
first frame of a stream (the AI server learns of the camera at once), on the first still frame
after the AI stream (re)connects, and whenever nothing was sent for HUB_VISION_REFRESH_S, so the
AI server always holds a recent view for visual questions without running detection on a static
scene. Refreshes are driven by arriving frames, not a timer: the frame in hand is the latest
frame, and a camera that stopped delivering gets no refresh, so the AI server sees it go stale
instead of being fed an old picture as if it were current.

:meth:`CameraFeed.build` then scales and JPEG-encodes the chosen frame into a VisionFrame.
Each is split in two for the hub's vision worker thread (issue 18, M5): the CPU part
(:meth:`~CameraFeed.look`: reduce + gate; :meth:`~CameraFeed.encode`: scale + JPEG) touches no
state the event loop reads, and the bookkeeping part (:meth:`~CameraFeed.judge`,
:meth:`~CameraFeed.pack`: counters, refresh timing, frame ids) runs on the loop.
Bad input (an empty frame, a pixel format that cannot be converted, a failed encode) is
counted and logged (rate-limited), never raised. The clock is passed in: no timing of its own.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterator
from dataclasses import asdict, dataclass

from av import VideoFrame

from hub.metrics import HubMetrics
from hub.vision.frames import FrameError, Jpeg, encode_jpeg, to_gray
from hub.vision.motion import GateDecision, MotionGate
from hub.vision.views import CameraView
from shared.contract import pb

log = logging.getLogger("naila.hub.vision")

FPS_WINDOW = 31  # frame arrival times kept for the gate's frame rate (about 2-6 s of video)
LOG_EVERY = 1000  # bad frames: the first is logged as a warning, then one line per this many


@dataclass(frozen=True, slots=True)
class Send:
    """A frame the gate chose for the AI server."""

    refresh: bool  # True: no motion, the periodic / first view (VisionFrame.refresh)
    score: float  # the gate's motion score for it


@dataclass(slots=True)
class CameraStats:
    frames_in: int = 0  # decoded frames the gate saw
    motion_frames: int = 0  # of those, with motion
    forwarded: int = 0  # motion frames chosen for detection (first of a run, then every Nth)
    refreshes: int = 0  # no-motion refresh frames chosen
    dropped: int = 0  # chosen frames that did not reach the AI server (queue full, AI down, unanswered)
    decode_errors: int = 0  # frames that could not be reduced for the gate
    encode_errors: int = 0  # chosen frames that could not be scaled / JPEG-encoded


@dataclass(frozen=True, slots=True)
class ResultSummary:
    """The AI server's last VisionResult for a camera, as /health?detail=1 shows it."""

    frame_id: int
    detections: int
    labels: tuple[str, ...]
    inference_ms: int
    error: str
    round_trip_ms: int
    at: float  # hub clock when it arrived


class CameraFeed:
    """Everything the hub holds for one streaming camera (one device's first video track)."""

    def __init__(
        self,
        device_id: str,
        gate: MotionGate,
        frame_ids: Iterator[int],
        metrics: HubMetrics,
        *,
        refresh_s: float,
        frame_box: tuple[int, int],
        jpeg_quality: int,
        started_at: float,
    ) -> None:
        self.device_id = device_id
        self.gate = gate
        self._frame_ids = frame_ids  # per camera, kept across reconnects so ids keep increasing
        self._metrics = metrics
        self.refresh_s = refresh_s
        self.frame_box = frame_box
        self.jpeg_quality = jpeg_quality
        self.started_at = started_at
        self.stats = CameraStats()
        self.last_score = 0.0
        self.last_motion_at: float | None = None
        self.last_result: ResultSummary | None = None
        self.view = CameraView(frame_box)  # the dashboard's latest view (hub.vision.views)
        self.last_error_logged = ""
        self.source_size: tuple[int, int] | None = None
        self._arrivals: deque[float] = deque(maxlen=FPS_WINDOW)
        self._last_sent_at: float | None = None
        self._refresh_due = True  # the stream's first still frame goes out as a refresh

    # ----- per frame -----

    def decide(self, frame: VideoFrame, now: float) -> Send | None:
        """Run the gate on one decoded frame; a :class:`Send` if the AI server should get it."""
        return self.judge(frame, self.look(frame), now)

    def look(self, frame: VideoFrame) -> GateDecision | FrameError:
        """The CPU part of :meth:`decide` (reduce + gate), for the vision worker thread.

        Touches only the gate (one frame of a camera at a time is in the worker), never the
        counters or the refresh timing, which the event loop reads: those are :meth:`judge`'s.
        """
        try:
            gray = to_gray(frame)
        except FrameError as exc:
            return exc
        return self.gate.feed(gray)

    def judge(self, frame: VideoFrame, looked: GateDecision | FrameError, now: float) -> Send | None:
        """The bookkeeping part of :meth:`decide` (counters, refresh timing), on the event loop."""
        st = self.stats
        st.frames_in += 1
        self._metrics.vision_frames_in += 1
        self._arrivals.append(now)
        if isinstance(looked, FrameError):
            st.decode_errors += 1
            self._bad("decode", st.decode_errors, looked)
            return None
        d = looked
        self.source_size = (frame.width, frame.height)
        self.last_score = d.score
        if d.motion:
            st.motion_frames += 1
            self._metrics.vision_motion_frames += 1
            self.last_motion_at = now
        if d.forward:
            st.forwarded += 1
            self._metrics.vision_frames_forwarded += 1
            self._sent(now)
            return Send(False, d.score)
        if d.motion:
            return None  # between every-Nth frames of a run: the AI server has a fresh view already
        if self._refresh_due or self._last_sent_at is None or now - self._last_sent_at >= self.refresh_s:
            st.refreshes += 1
            self._metrics.vision_refreshes += 1
            self._sent(now)
            return Send(True, d.score)
        return None

    def build(self, frame: VideoFrame, send: Send, wall_ms: int) -> pb.VisionFrame | None:
        """The chosen frame as the AI server gets it: scaled into the frame box, JPEG, numbered."""
        return self.pack(self.encode(frame), send, wall_ms)

    def encode(self, frame: VideoFrame) -> Jpeg | FrameError:
        """The CPU part of :meth:`build` (scale + JPEG), for the vision worker thread; touches no state."""
        try:
            return encode_jpeg(frame, self.frame_box, self.jpeg_quality)
        except FrameError as exc:
            return exc

    def pack(self, jpeg: Jpeg | FrameError, send: Send, wall_ms: int) -> pb.VisionFrame | None:
        """The bookkeeping part of :meth:`build`: the VisionFrame, or the encode error counted."""
        if isinstance(jpeg, FrameError):
            self.stats.encode_errors += 1
            self._bad("encode", self.stats.encode_errors, jpeg)
            return None
        return pb.VisionFrame(
            device_id=self.device_id,
            jpeg=jpeg.data,
            timestamp_ms=wall_ms,
            width=jpeg.width,
            height=jpeg.height,
            frame_id=next(self._frame_ids),
            motion_score=send.score,
            refresh=send.refresh,
        )

    def request_refresh(self) -> None:
        """Send the next still frame as a refresh (the AI stream has just (re)connected)."""
        self._refresh_due = True

    def dropped(self) -> None:
        self.stats.dropped += 1

    def _sent(self, now: float) -> None:
        self._last_sent_at = now
        self._refresh_due = False

    def _bad(self, kind: str, count: int, exc: Exception) -> None:
        self._metrics.vision_frame_errors[kind] += 1
        if count == 1 or count % LOG_EVERY == 0:
            log.warning("%s: camera frame %s error #%d (counted, frame skipped): %s", self.device_id, kind, count, exc)
        else:
            log.debug("%s: camera frame %s error: %s", self.device_id, kind, exc)

    # ----- reporting -----

    def gate_fps(self) -> float:
        """Frames per second through the gate, over the last FPS_WINDOW frames."""
        a = self._arrivals
        span = a[-1] - a[0] if len(a) > 1 else 0.0
        return (len(a) - 1) / span if span > 0 else 0.0

    def details(self, now: float) -> dict[str, object]:
        """This camera for /health?detail=1."""
        result = self.last_result
        return {
            "device_id": self.device_id,
            "streaming_s": round(now - self.started_at, 1),
            "source_size": f"{self.source_size[0]}x{self.source_size[1]}" if self.source_size else None,
            **asdict(self.stats),
            "gate_fps": round(self.gate_fps(), 1),
            "motion_score": round(self.last_score, 4),
            "last_motion_s_ago": None if self.last_motion_at is None else round(now - self.last_motion_at, 1),
            "last_result": None if result is None else {
                "frame_id": result.frame_id,
                "detections": result.detections,
                "labels": list(result.labels),
                "inference_ms": result.inference_ms,
                "round_trip_ms": result.round_trip_ms,
                "error": result.error,
                "s_ago": round(now - result.at, 1),
            },
        }
