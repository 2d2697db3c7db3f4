"""The vision pipeline: the hub's motion-gated frames in, detections, tracks, zones and alerts out.

Per frame (``submit``):

* refused at once if it is not a readable JPEG, is too large, or names no usable camera
  (an error result, counted, the stream goes on);
* a *refresh* (the hub's periodic no-motion frame) only becomes the camera's latest view: no
  detection, so a static scene costs no YOLO call at all;
* a motion frame waits for the next batch. Frames of different cameras that arrive within
  ``batch_window_s`` of each other share one YOLO call (up to ``max_batch``); while a batch runs,
  the next one fills up. Each camera has at most one frame waiting: a newer frame *supersedes* the
  waiting one (answered at once with an error saying so, counted), so a slow detector analyses the
  freshest frames and the backlog can never grow beyond one frame per camera.

After the YOLO call, on the event loop and in arrival order, each frame's boxes go through its
camera's tracker (:mod:`~ai_server.vision.tracking`), zones with inertia
(:mod:`~ai_server.vision.zones`) and the alert rules (:mod:`~ai_server.vision.alerting`); alerts
are published and recorded in the background, never holding up the answer.

A housekeeping task (every ``housekeeping_s``) marks cameras offline when their frames stop (their
tracks end), ends tracks lost too long, and releases held alerts. Cameras offline for
``FORGET_AFTER_OFFLINE`` x ``offline_after_s`` are forgotten, and at most ``max_cameras`` are known
at once (a new one beyond is refused): made-up camera ids cannot pin memory (issue 18, C1). A
sender's capture time more than ``MAX_CLOCK_SKEW_S`` from the server's clock is replaced by the
server's (no backdated or future events). Everything time-based reads the injected ``clock``; tests
call :meth:`VisionPipeline.tick` after moving it.

The model loads once; a failed load is remembered with a back-off by the detector itself
(:class:`~ai_server.vision.detector.LoadBackoff`, shared with uploads and on-demand analysis) so
frames in between are answered at once instead of retrying a multi-second torch load per batch,
and :attr:`VisionPipeline.model_error` tells GetStatus (M6).

The pipeline implements :class:`~ai_server.vision.view.Views` for the rest of the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final

import cv2
import numpy as np

from ai_server.media.sniff import detect as sniff_format
from ai_server.media.sniff import image_info
from ai_server.store import EventRecord, MediaStore
from ai_server.vision.alerting import AlertDispatcher, AlertPolicy, AlertSink
from ai_server.vision.config import VisionConfig
from ai_server.vision.detector import BGRImage, Box, Detector, ModelUnavailable, ultralytics_module
from ai_server.vision.metrics import VisionMetrics
from ai_server.vision.tracking import CameraTracker, TrackEvent
from ai_server.vision.view import CameraInfo, CameraView, Detection
from ai_server.vision.zones import DEFAULT_ZONE, CameraZones, ZoneInertia, bottom_centre, safe_name
from shared.ids import ID_RULE
from shared.mqtt import is_safe_segment, utc_now
from shared.rate_limit import RateLimiter

log = logging.getLogger(__name__)

#: A camera offline this many times ``offline_after_s`` is forgotten (its view, zones state, counters).
FORGET_AFTER_OFFLINE: Final = 10
#: A capture time further than this from the server's clock is replaced by the server's, s.
MAX_CLOCK_SKEW_S: Final = 5.0

#: The device's (room, zone) as the control plane's registry knows them; (None, None) when unknown.
Places = Callable[[str], tuple[str | None, str | None]]


def _nowhere(_device_id: str) -> tuple[str | None, str | None]:
    return None, None


@dataclass(frozen=True, slots=True)
class Frame:
    """One frame from the hub (``pb.VisionFrame`` without the protobuf)."""

    device_id: str
    jpeg: bytes
    timestamp_ms: int = 0  # wall clock of capture at the hub, ms; 0 = unknown (now)
    frame_id: int = 0
    motion_score: float = 0.0
    refresh: bool = False
    width: int = 0  # as the sender says; 0 = not said. Must match the JPEG's header.
    height: int = 0


@dataclass(frozen=True, slots=True)
class FrameResult:
    """The answer to one frame: its detections (empty for a refresh) or why there are none."""

    device_id: str
    frame_id: int
    timestamp_ms: int
    detections: tuple[Detection, ...] = ()
    inference_ms: int = 0  # the YOLO call this frame was part of
    error: str = ""


class FrameRefused(ValueError):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(eq=False, slots=True)
class _Job:
    """A frame waiting for (or in) a YOLO call. ``look``: an on-demand analysis for a question."""

    camera: _Camera
    seq: int  # the camera's frame counter when it arrived: is it still the latest view?
    frame: Frame
    width: int
    height: int
    arrived: float
    wall: datetime
    look: bool
    future: asyncio.Future[FrameResult]


@dataclass(eq=False, slots=True)
class _Camera:
    device_id: str
    zones: CameraZones
    inertia: ZoneInertia
    last_frame_at: float
    online: bool = True
    seq: int = 0
    latest: CameraView | None = None
    waiting: _Job | None = None  # the motion frame waiting for the next batch
    analysing: dict[int, _Job] = field(default_factory=dict)  # seq -> job, waiting or in a batch
    tracker: CameraTracker | None = None


class VisionPipeline:
    """See the module doc.

    ``detector``: any :class:`Detector` (``YoloDetector`` in production, a scripted one in tests).
    ``alerts``: where alerts are published (the control plane), None to only record them.
    ``store``: the media store holding snapshots and the event history: the server's one store
    (:class:`ai_server.store.storage.Storage`, built by ai_server/assembly.py, which also runs its
    retention); the pipeline neither opens nor closes it.
    ``places``: each device's (room, zone) from the registry: a camera without zone polygons is one
    zone named by it.
    """

    def __init__(
        self,
        detector: Detector,
        config: VisionConfig | None = None,
        *,
        alerts: AlertSink | None = None,
        store: MediaStore,
        places: Places = _nowhere,
        metrics: VisionMetrics | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = utc_now,
    ) -> None:
        self.detector = detector
        self.config = config = config or VisionConfig()
        self.metrics = metrics or VisionMetrics()
        self.places = places
        self._clock = clock
        self._wall = wall
        self._store = store
        self.policy = AlertPolicy(
            labels=config.alert_labels, dedup_s=config.dedup_s, hold_s=config.overlap_hold_s,
            cameras=config.cameras, online=self.is_online,
        )
        self.dispatcher = AlertDispatcher(self.store, self.metrics, alerts, rearm=self.policy.rearm)
        self._cameras: dict[str, _Camera] = {}
        self._waiting: dict[str, _Job] = {}  # device -> its waiting motion frame, oldest camera first
        self._looks: list[_Job] = []
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._stopped = False
        self._tracker_ready = False
        # Bad input is counted always and logged within a budget per reason: a broken camera sending
        # garbage at 15 fps must not bury the log.
        self._log_budget = RateLimiter(1.0 / 30.0, 3, clock=clock)
        self.logs_suppressed = 0

    # -- Views ------------------------------------------------------------------------------------
    def now(self) -> float:
        return self._clock()

    def cameras(self) -> list[CameraInfo]:
        infos = [self._info(c) for c in self._cameras.values()]
        return sorted(infos, key=lambda c: (-c.priority, not c.online, c.device_id))

    def latest(self, device_id: str) -> CameraView | None:
        camera = self._cameras.get(device_id)
        return None if camera is None else camera.latest

    async def analysed(self, device_id: str) -> CameraView | None:
        """The latest frame with detections: waits for its batch, or analyses a refresh frame now.

        Raises ``RuntimeError`` when the detector fails (the caller can still use :meth:`latest`).
        """
        camera = self._cameras.get(device_id)
        if camera is None or camera.latest is None:
            return None
        for _ in range(3):  # a newer frame may supersede the one waited for: then analyse that one
            view, seq = camera.latest, camera.seq
            if view.detections is not None:
                return view
            job = camera.analysing.get(seq) or self._enqueue_look(camera, seq, view)
            result = await asyncio.shield(job.future)
            if result.error and camera.seq != seq:
                continue
            if result.error:
                raise RuntimeError(f"analysing {device_id}'s frame failed: {result.error}")
            analysed = CameraView(view.device_id, view.jpeg, view.width, view.height, view.seen_at,
                                  view.wall_time, result.detections)
            if camera.seq == seq:
                camera.latest = analysed
            return analysed
        raise RuntimeError(f"{device_id}'s frames keep changing faster than they can be analysed")

    # -- frames in --------------------------------------------------------------------------------
    def submit(self, frame: Frame) -> asyncio.Future[FrameResult]:
        """Take one frame; the future resolves with its result (refusals and refreshes at once).

        Call from the event loop; frames of one stream are answered in the order they were submitted
        only if the caller awaits the futures in that order (they may resolve out of order).
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[FrameResult] = loop.create_future()
        if self._stopped:
            future.set_result(self._result(frame, error="vision is stopped"))
            return future
        self._start_tasks()
        try:
            width, height = self._check(frame)
        except FrameRefused as exc:
            self.metrics.event(f"frames_refused_{exc.reason}")
            self._warn(exc.reason, "vision: frame %d from %r refused: %s", frame.frame_id, frame.device_id[:80], exc)
            future.set_result(self._result(frame, error=f"refused ({exc.reason}): {exc.detail}"))
            return future
        now = self._clock()
        camera = self._camera(frame.device_id, now)
        wall = self._capture_time(frame)
        camera.seq += 1
        camera.latest = CameraView(frame.device_id, frame.jpeg, width, height, now, wall, None)
        if frame.refresh:
            self.metrics.event("refreshes")
            future.set_result(self._result(frame))
            return future
        self.metrics.event("frames")
        job = _Job(camera, camera.seq, frame, width, height, now, wall, False, future)
        old = camera.waiting
        if old is not None:
            self.metrics.event("frames_superseded")
            camera.analysing.pop(old.seq, None)
            old.future.set_result(self._result(old.frame, error="superseded: a newer frame of this camera "
                                                                  "arrived before this one was analysed"))
        camera.waiting = job
        camera.analysing[job.seq] = job
        self._waiting[frame.device_id] = job  # an existing key keeps its place: the camera keeps its turn
        self._wake.set()
        return future

    async def analyse(self, frame: Frame) -> FrameResult:
        """``submit`` and wait: one frame, one result."""
        return await self.submit(frame)

    def _check(self, frame: Frame) -> tuple[int, int]:
        cfg = self.config
        if not is_safe_segment(frame.device_id):
            # It becomes an alert's source_device and a file name: the same rule as MQTT ids.
            raise FrameRefused("bad_device_id", f"device id {frame.device_id[:80]!r} is not {ID_RULE}")
        if not (math.isfinite(frame.motion_score) and 0.0 <= frame.motion_score <= 1.0):
            raise FrameRefused("bad_field", f"motion_score {frame.motion_score!r} is not within 0..1")
        if frame.device_id not in self._cameras and len(self._cameras) >= cfg.max_cameras:
            self._forget_stale(self._clock())
            if len(self._cameras) >= cfg.max_cameras:
                raise FrameRefused("too_many_cameras", f"{len(self._cameras)} cameras are known "
                                                       f"(VISION_MAX_CAMERAS={cfg.max_cameras})")
        if len(frame.jpeg) > cfg.max_frame_bytes:
            raise FrameRefused("oversized", f"{len(frame.jpeg)} bytes, over VISION_MAX_FRAME_BYTES "
                                            f"({cfg.max_frame_bytes})")
        kind = sniff_format(frame.jpeg)
        if kind != "jpeg":
            what = f"a {kind.upper()}" if kind else "no image format we know"
            raise FrameRefused("not_jpeg", f"the frame is {what}, not a JPEG")
        try:
            info = image_info(frame.jpeg)  # the header only: cheap, and tells a bomb before decoding it
        except ValueError as exc:
            raise FrameRefused("bad_jpeg", str(exc)) from None
        if info.width * info.height > cfg.max_frame_pixels:
            raise FrameRefused("oversized", f"{info.width}x{info.height} pixels, over {cfg.max_frame_pixels}")
        if (frame.width or frame.height) and (frame.width, frame.height) != (info.width, info.height):
            raise FrameRefused("bad_field", f"the frame says {frame.width}x{frame.height}, its JPEG is "
                                            f"{info.width}x{info.height}")
        return info.width, info.height

    def _capture_time(self, frame: Frame) -> datetime:
        now = self._wall()
        if frame.timestamp_ms:
            try:
                said = datetime.fromtimestamp(frame.timestamp_ms / 1000.0, UTC)
            except (OverflowError, OSError, ValueError):  # a timestamp no clock can mean: now will do
                self.metrics.event("bad_timestamps")
                return now
            if abs((said - now).total_seconds()) <= MAX_CLOCK_SKEW_S:
                return said
            # A hub's clock this far off, or a forged time: events must not be backdated (or postdated).
            self.metrics.event("timestamps_replaced")
        return now

    def _camera(self, device_id: str, now: float) -> _Camera:
        camera = self._cameras.get(device_id)
        if camera is None:
            camera = _Camera(device_id, CameraZones(self.config.zones.get(device_id)),
                             ZoneInertia(self.config.zone_inertia), now)
            self._cameras[device_id] = camera
            log.info("vision: first frame from camera %r", device_id)
        elif not camera.online:
            log.info("vision: camera %r is back online", device_id)
            self.metrics.event("camera_online")
        camera.last_frame_at = now
        camera.online = True
        return camera

    def _enqueue_look(self, camera: _Camera, seq: int, view: CameraView) -> _Job:
        loop = asyncio.get_running_loop()
        frame = Frame(camera.device_id, view.jpeg, int(view.wall_time.timestamp() * 1000), refresh=True)
        job = _Job(camera, seq, frame, view.width, view.height, view.seen_at, view.wall_time, True,
                   loop.create_future())
        if self._stopped:
            job.future.set_result(self._result(frame, error="vision is stopped"))
            return job
        camera.analysing[seq] = job
        self._looks.append(job)
        self.metrics.event("looks")
        self._start_tasks()
        self._wake.set()
        return job

    # -- batching ---------------------------------------------------------------------------------
    def _start_tasks(self) -> None:
        if self._tasks or self._stopped:
            return
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._batches(), name="vision-batches"),
                       loop.create_task(self._housekeeping(), name="vision-housekeeping")]

    async def _batches(self) -> None:
        cfg = self.config
        while True:
            await self._wake.wait()
            if cfg.batch_window_s > 0 and len(self._waiting) + len(self._looks) < cfg.max_batch:
                await asyncio.sleep(cfg.batch_window_s)  # frames of other cameras arriving now ride along
            self._wake.clear()
            jobs = self._looks[: cfg.max_batch]  # a question is waiting on these: first
            del self._looks[: len(jobs)]
            for device_id in list(self._waiting)[: cfg.max_batch - len(jobs)]:
                job = self._waiting.pop(device_id)
                job.camera.waiting = None
                jobs.append(job)
            if self._waiting or self._looks:
                self._wake.set()
            if jobs:
                try:
                    await self._run_batch(jobs)
                except Exception:  # a bug: answer the frames, keep the loop alive for the next ones
                    log.exception("vision: batch of %d frames failed", len(jobs))
                    self.metrics.event("batch_errors")
                    for job in jobs:
                        self._finish(job, self._result(job.frame, error="internal error analysing the frame"))

    async def _run_batch(self, jobs: list[_Job]) -> None:
        if not self._tracker_ready and any(not j.look for j in jobs):
            # The tracker's first import (ultralytics, torch: seconds) must not block the event loop.
            await asyncio.to_thread(_import_tracker)
            self._tracker_ready = True
        try:
            images, boxes, seconds = await asyncio.to_thread(self._detect, [j.frame.jpeg for j in jobs])
        except ModelUnavailable as exc:
            self.metrics.event("frames_refused_model_unavailable", len(jobs))
            for job in jobs:
                self._finish(job, self._result(job.frame, error=str(exc)))  # "vision model unavailable: ..."
            return
        except Exception as exc:
            self.metrics.event("detector_errors")
            self._warn("detector", "vision: the detector failed on a batch of %d frames: %s", len(jobs), exc,
                       exc_info=True)
            for job in jobs:
                self._finish(job, self._result(job.frame, error=f"detector failed: {exc}"))
            return
        ran = sum(1 for img in images if img is not None)
        if ran:
            self.metrics.event("yolo_calls")
            self.metrics.event("yolo_images", ran)
            self.metrics.batch(seconds)
        inference_ms = round(seconds * 1000)
        found = iter(boxes)
        for job, image in zip(jobs, images, strict=True):
            if image is None:
                self.metrics.event("frames_refused_undecodable")
                self._warn("undecodable", "vision: frame %d from %s could not be decoded", job.frame.frame_id,
                           job.camera.device_id)
                self._finish(job, self._result(job.frame, error="refused (undecodable): the JPEG could not be decoded"))
                continue
            frame_boxes = next(found)
            detections = self._look_detections(job, frame_boxes) if job.look else self._track(job, frame_boxes)
            self._finish(job, self._result(job.frame, detections=tuple(detections), inference_ms=inference_ms))
        decisions = self.policy.decide(self._clock())
        if decisions:
            self.dispatcher.submit(decisions)

    @property
    def model_error(self) -> str | None:
        """Why the detector's model is not loaded (whoever tried it last), or None."""
        return self.detector.load_error

    def load_model(self) -> None:
        """Load the detector's model now (any thread; idempotent). A failure is remembered by the
        detector: until its back-off runs out this raises :class:`ModelUnavailable` at once."""
        try:
            self.detector.load()
        except ModelUnavailable as exc:
            if exc.attempted:
                self.metrics.event("model_load_failures")
            raise

    def _detect(self, jpegs: Sequence[bytes]) -> tuple[list[BGRImage | None], list[list[Box]], float]:
        """Worker thread: decode every frame, then one detector call for those that decoded."""
        self.load_model()  # the first batch loads the model: not part of its inference time
        images = [_decode(jpeg) for jpeg in jpegs]
        ok = [img for img in images if img is not None]
        started = time.perf_counter()
        boxes = self.detector.detect_batch(ok) if ok else []
        return images, boxes, time.perf_counter() - started

    def _finish(self, job: _Job, result: FrameResult) -> None:
        if job.camera.analysing.get(job.seq) is job:
            del job.camera.analysing[job.seq]
        if not job.future.done():
            job.future.set_result(result)
        camera = job.camera
        if not job.look and not result.error and camera.seq == job.seq and camera.latest is not None:
            view = camera.latest
            camera.latest = CameraView(view.device_id, view.jpeg, view.width, view.height, view.seen_at,
                                       view.wall_time, result.detections)

    # -- tracking, zones, alerts ------------------------------------------------------------------
    def _track(self, job: _Job, boxes: list[Box]) -> list[Detection]:
        camera = job.camera
        if camera.tracker is None:
            camera.tracker = CameraTracker(camera.device_id, lost_s=self.config.track_lost_s)
        ids, events = camera.tracker.update(boxes, (job.height, job.width), job.arrived)
        default_zone = self.default_zone(camera.device_id)
        detections: list[Detection] = []
        for box, track_id in zip(boxes, ids, strict=True):
            zone = ""
            if track_id >= 0:
                track = camera.tracker.tracks[track_id]
                inside = camera.zones.zones_at(bottom_centre(box.xywh, job.width, job.height), default_zone)
                current = camera.inertia.observe(track_id, inside)
                zone = current[0] if current else ""
                self.policy.observe(camera.device_id, track_id, track.label, box.confidence, current,
                                    now=job.arrived, time=job.wall, jpeg=job.frame.jpeg, box=box.xywh,
                                    frame_size=(job.width, job.height))
            detections.append(Detection(box.label, box.confidence, box.xywh, track_id, zone))
        self._lifecycle(events)
        return detections

    def _look_detections(self, job: _Job, boxes: list[Box]) -> list[Detection]:
        """An on-demand look: detections with the zone they are in now (no tracking, no alerts)."""
        camera = job.camera
        default_zone = self.default_zone(camera.device_id)
        out: list[Detection] = []
        for box in boxes:
            inside = camera.zones.zones_at(bottom_centre(box.xywh, job.width, job.height), default_zone)
            out.append(Detection(box.label, box.confidence, box.xywh, -1, inside[0] if inside else ""))
        return out

    def _lifecycle(self, events: list[TrackEvent]) -> None:
        for event in events:
            if event.phase == "new":
                self.metrics.event("tracks_new")
                log.debug("vision: %s track %d (%s) new", event.device_id, event.track.track_id, event.track.label)
            elif event.phase == "end":
                self.metrics.event("tracks_ended")
                camera = self._cameras.get(event.device_id)
                if camera is not None:
                    camera.inertia.forget(event.track.track_id)
                self.policy.forget_track(event.device_id, event.track.track_id)
                log.debug("vision: %s track %d (%s) ended after %.1f s", event.device_id, event.track.track_id,
                          event.track.label, event.track.last_seen - event.track.first_seen)

    def default_zone(self, device_id: str) -> str:
        """The one zone of a camera without polygons: its device zone, else room, else ``default``."""
        room, zone = self.places(device_id)
        return safe_name(zone or room or DEFAULT_ZONE)

    # -- time ---------------------------------------------------------------------------------------
    def tick(self) -> None:
        """Offline cameras, lost tracks, held alerts: what time alone changes (the housekeeping task's work)."""
        now = self._clock()
        for camera in self._cameras.values():
            if camera.online and now - camera.last_frame_at >= self.config.offline_after_s:
                camera.online = False
                self.metrics.event("camera_offline")
                ended = camera.tracker.end_all() if camera.tracker is not None else []
                log.info("vision: camera %s offline (no frame for %.0f s); %d tracks ended", camera.device_id,
                         now - camera.last_frame_at, len(ended))
                self._lifecycle(ended)
            elif camera.tracker is not None:
                self._lifecycle(camera.tracker.expire(now))
        self._forget_stale(now)
        decisions = self.policy.decide(now)
        if decisions:
            self.dispatcher.submit(decisions)

    def _forget_stale(self, now: float) -> None:
        """Drop cameras offline for FORGET_AFTER_OFFLINE x offline_after_s (nothing of theirs is pending)."""
        limit = FORGET_AFTER_OFFLINE * self.config.offline_after_s
        stale = [c for c in self._cameras.values()
                 if not c.online and now - c.last_frame_at >= limit and not c.analysing and c.waiting is None]
        for camera in stale:
            del self._cameras[camera.device_id]
            self.metrics.event("cameras_forgotten")
            log.info("vision: camera %r forgotten (no frame for %.0f s)", camera.device_id, now - camera.last_frame_at)

    async def _housekeeping(self) -> None:
        while True:
            await asyncio.sleep(self.config.housekeeping_s)
            try:
                self.tick()
            except Exception:
                log.exception("vision: housekeeping failed")

    def is_online(self, device_id: str) -> bool:
        camera = self._cameras.get(device_id)
        return camera is not None and self._clock() - camera.last_frame_at < self.config.offline_after_s

    # -- history ------------------------------------------------------------------------------------
    def store(self) -> MediaStore:
        """The media store with the event history (the server's, given at construction)."""
        return self._store

    async def events(
        self,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        device_id: str | None = None,
        zone: str | None = None,
        alert_type: str | None = None,
        limit: int = 100,
    ) -> list[EventRecord]:
        """The event history, newest first (see :meth:`EventStore.query`), read off the event loop."""
        events = self.store().events
        return await asyncio.to_thread(
            lambda: events.query(since=since, until=until, device_id=device_id, zone=zone, alert_type=alert_type,
                                 limit=limit)
        )

    async def drain(self) -> None:
        """Wait until every alert decided so far is published and recorded (tests, shutdown)."""
        await self.dispatcher.drain()

    # -- lifecycle ----------------------------------------------------------------------------------
    async def stop(self) -> None:
        """Answer what is waiting, finish the alerts owed (the store stays open: it is not the pipeline's)."""
        self._stopped = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        for camera in self._cameras.values():
            for job in list(camera.analysing.values()):
                self._finish(job, self._result(job.frame, error="vision is stopped"))
        self._waiting.clear()
        self._looks.clear()
        await self.dispatcher.close()

    # -- helpers ------------------------------------------------------------------------------------
    def _info(self, camera: _Camera) -> CameraInfo:
        room, zone = self.places(camera.device_id)
        rank = self.policy.rank(camera.device_id)
        return CameraInfo(camera.device_id, room or "", zone or "", rank.priority, self.is_online(camera.device_id))

    def _warn(self, reason: str, msg: str, *args: object, exc_info: bool = False) -> None:
        if self._log_budget.allow(reason):
            suppressed = f" ({self.logs_suppressed} similar lines suppressed so far)" if self.logs_suppressed else ""
            log.warning(msg + suppressed, *args, exc_info=exc_info)
        else:
            self.logs_suppressed += 1

    @staticmethod
    def _result(frame: Frame, *, detections: tuple[Detection, ...] = (), inference_ms: int = 0,
                error: str = "") -> FrameResult:
        return FrameResult(frame.device_id, frame.frame_id, frame.timestamp_ms, detections, inference_ms, error)


def _decode(jpeg: bytes) -> BGRImage | None:
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    if image is None or image.size == 0:
        return None
    return np.asarray(image, np.uint8)


def _import_tracker() -> None:
    ultralytics_module("ultralytics.trackers.byte_tracker")
