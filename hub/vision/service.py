"""The hub's vision pipeline: each device's camera track -> motion gate -> the AI server.

A :class:`DeviceSession` hands the first video track of its device to :meth:`VisionService.consume`,
which reads decoded frames, runs them through that camera's :class:`CameraFeed` (motion gate,
refresh timing) and submits the chosen frames, JPEG-encoded, to the shared :class:`VisionUplink`.
When the track ends (the camera or its peer went away) or the session closes, the camera's state
is dropped; other cameras are unaffected.

Ingress cap (issue 18, M5): a decoded frame larger than 1280x720, or beyond 15 fps for its camera
(a token bucket, so capture jitter is tolerated), or one that finds aiortc's decoded-frame queue
already ``MAX_TRACK_BACKLOG`` deep (the loop is behind), is dropped before the motion gate, counted
in ``vision_frames_dropped`` (``too_large``, ``too_fast``, ``backlog``): a camera sending 4K at
60 fps costs a comparison per frame, not a gate and an encode.

The gate (a 1280x720 frame reduced to 160x120 grey + blur + diff) and the JPEG encode of a chosen
frame (scale to 320x240 + JPEG) run in one worker thread per hub (issue 18, M5), not on the event
loop that also runs VAD and audio for every device. bench/vision_loop_stall.py (four 15 fps 720p
cameras, motion in every frame): the longest loop callback went from ~2.8 ms to ~0.8 ms (p99 1.7 ms
to 0.08 ms), the worst lateness of a 1 ms timer from ~10 ms to ~1-4 ms (an idle loop here: ~1-4 ms).
One thread is enough (the gate costs ~0.2 ms, an encode ~0.4 ms; both release the GIL) and keeps
a camera's frames in order; each camera has at most one frame in it, since ``consume`` awaits a
frame's work before reading the next, and the ingress drops above stay in front, so a flood never
queues work: it backs up aiortc's queue and is dropped as ``backlog``. Only the CPU parts run
there; counters, refresh timing and frame ids stay on the loop (hub.vision.camera). Decoding
happens in aiortc's own decoder thread.

Frame ids come from one counter for the whole hub: every camera's ids keep increasing, also
across its reconnects, with no per-device state to prune (issue 18, H6).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from aiortc.mediastreams import MediaStreamError
from av import VideoFrame

from hub.metrics import HubMetrics
from hub.vision.camera import CameraFeed, ResultSummary
from hub.vision.motion import MotionGate
from hub.vision.uplink import DROP_DISCONNECTED, VisionUplink
from shared.backoff import Backoff
from shared.config import HubSettings, VideoSettings
from shared.contract import pb
from shared.grpc_security import ClientSecurity, hub_client
from shared.rate_limit import RateLimiter

log = logging.getLogger("naila.hub.vision")

T = TypeVar("T")

MAX_PIXELS = 1280 * 720  # decoded frames above this are dropped before the gate
MAX_FPS = 15.0  # per camera, on average
FPS_BURST = 3.0  # frames a camera may send early (capture jitter)
MAX_TRACK_BACKLOG = 8  # decoded frames waiting in aiortc's queue: more and the loop is behind

DROP_TOO_LARGE = "too_large"
DROP_TOO_FAST = "too_fast"
DROP_BACKLOG = "backlog"


class VisionService:
    """The cameras streaming into this hub and the one uplink their frames share."""

    def __init__(
        self,
        settings: HubSettings,
        video: VideoSettings,
        metrics: HubMetrics,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        uplink_options: dict[str, Any] | None = None,
        security: ClientSecurity | None = None,
        choose_server: Callable[[], str] | None = None,
    ) -> None:
        self.settings = settings
        self.video = video
        self.metrics = metrics
        self._clock = clock
        self._wall = wall
        self.cameras: dict[str, CameraFeed] = {}
        self._view_listeners: list[Callable[[], None]] = []
        self._stopping = False
        # One counter for all cameras (see the module doc): ids keep increasing across a camera's
        # reconnects, and nothing is kept per device id once its camera is gone.
        self._frame_ids = itertools.count(1)
        # The gate and the JPEG encode, off the event loop (see the module doc); started on first use.
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="naila-vision")
        self._fps = RateLimiter(MAX_FPS, FPS_BURST, clock=clock, max_keys=4096)
        self._log_budget = RateLimiter(1.0 / 30.0, 3, clock=clock)  # ingress drops: a few lines a minute
        self.uplink = VisionUplink(
            # Several AI servers: camera frames go to the first that is up (``choose_server``, the
            # hub's AI pool), and back to the first when it returns (docs/scale.md).
            settings.ai_servers[0],
            metrics,
            backoff=Backoff(settings.hub_grpc_backoff_initial_s, settings.hub_grpc_backoff_max_s),
            queue_frames=settings.hub_vision_queue_frames,
            max_inflight=settings.hub_vision_max_inflight,
            on_result=self._on_result,
            on_drop=self._on_drop,
            on_connection_change=self._on_connection,
            clock=clock,
            security=security or hub_client(settings),  # HUB_AI_TLS_*: the same link as the audio's
            choose=choose_server,
            **(uplink_options or {}),
        )
        metrics.vision_cameras = lambda: len(self.cameras)
        metrics.vision_connected = lambda: self.uplink.connected
        metrics.vision_queue_depth = lambda: self.uplink.queue_depth

    # ----- cameras -----

    def open_camera(self, device_id: str) -> CameraFeed:
        """Register a camera whose stream starts now (replacing an older stream of the same device)."""
        s, v = self.settings, self.video
        feed = CameraFeed(
            device_id,
            MotionGate(v.video_motion_threshold, s.hub_vision_min_motion_area, v.video_process_every_n_frames),
            self._frame_ids,
            self.metrics,
            refresh_s=s.hub_vision_refresh_s,
            frame_box=s.vision_frame_size,
            jpeg_quality=s.hub_vision_jpeg_quality,
            started_at=self._clock(),
        )
        self.cameras[device_id] = feed
        self._views_changed()
        # The stream is opened with the first camera (a hub without cameras never dials it) and then stays up.
        self.uplink.start()
        return feed

    def close_camera(self, feed: CameraFeed, why: str) -> None:
        """Forget a camera whose stream ended; a newer stream of the same device is left alone."""
        if self.cameras.get(feed.device_id) is feed:
            del self.cameras[feed.device_id]
            self._views_changed()
        st = feed.stats
        log.info(
            "%s: camera stream %s after %.1fs: %d frames, %d with motion, %d forwarded, %d refreshes, "
            "%d dropped, %d bad", feed.device_id, why, self._clock() - feed.started_at, st.frames_in,
            st.motion_frames, st.forwarded, st.refreshes, st.dropped, st.decode_errors + st.encode_errors,
        )

    def admit(self, feed: CameraFeed, width: int, height: int, backlog: int = 0) -> bool:
        """The cheap ingress check before the gate (see the module doc); False = dropped and counted."""
        reason = None
        if width * height > MAX_PIXELS:
            reason = DROP_TOO_LARGE
        elif backlog > MAX_TRACK_BACKLOG:
            reason = DROP_BACKLOG
        elif not self._fps.allow(feed.device_id):
            reason = DROP_TOO_FAST
        if reason is None:
            return True
        self.metrics.vision_frames_dropped[reason] += 1
        feed.dropped()
        if self._log_budget.allow(reason):
            log.warning("%r: camera frame dropped before the motion gate: %s (%dx%d; limits %d pixels, %.0f fps)",
                        feed.device_id, reason, width, height, MAX_PIXELS, MAX_FPS)
        return False

    async def handle(self, feed: CameraFeed, frame: VideoFrame, backlog: int = 0) -> None:
        """One decoded frame of a camera: gate it and, if chosen, encode and submit it.

        The admission check runs here, on the loop; the gate and the encode in the worker thread.
        """
        if self._stopping or not self.admit(feed, frame.width, frame.height, backlog):
            return
        now, wall_ms = self._clock(), int(self._wall() * 1000)  # the frame's arrival
        send = feed.judge(frame, await self._off_loop(feed.look, frame), now)
        if feed.last_motion_at == now:
            feed.view.motion(wall_ms)
        if send is None:
            return
        # The dashboard's view is the frame the AI server is sent (hub.vision.views), kept even
        # while the uplink is down, so a camera tile still shows the room.
        feed.view.update(frame, wall_ms)
        self._views_changed()
        if not self.uplink.connected:
            # Counted as dropped without spending an encode on a frame that cannot go anywhere.
            self.metrics.vision_frames_dropped[DROP_DISCONNECTED] += 1
            feed.dropped()
            return
        msg = feed.pack(await self._off_loop(feed.encode, frame), send, wall_ms)
        if msg is not None and msg.refresh:
            feed.view.refresh_sent(msg.frame_id)  # its empty answer is not "nothing there"
        if msg is not None:
            self.uplink.submit(msg)  # drops it (counted) if the stream went down meanwhile

    def _off_loop(self, work: Callable[[VideoFrame], T], frame: VideoFrame) -> asyncio.Future[T]:
        return asyncio.get_running_loop().run_in_executor(self._worker, work, frame)

    async def consume(self, device_id: str, track: Any, on_frame: Callable[[], None] | None = None) -> None:
        """Read a camera track until it ends; ``on_frame`` is called per frame (the session's liveness)."""
        feed = self.open_camera(device_id)
        log.info("%s: camera stream started", device_id)
        try:
            while True:
                frame = await track.recv()
                if on_frame is not None:
                    on_frame()
                await self.handle(feed, frame, _backlog(track))
        except MediaStreamError:
            self.close_camera(feed, "ended")
        except asyncio.CancelledError:
            self.close_camera(feed, "stopped (session closed)")
            raise
        except Exception:
            # A bug here must cost the camera, not the device's session (its audio goes on).
            log.exception("%s: camera pipeline failed; the rest of the stream is discarded", device_id)
            self.close_camera(feed, "failed")
            await _drain(track, on_frame)

    # ----- uplink events -----

    def _on_result(self, result: pb.VisionResult, rtt: float) -> None:
        feed = self.cameras.get(result.device_id)
        if feed is None:
            return  # the camera left while its frame was being analysed
        if result.error and result.error != feed.last_error_logged:
            # Each distinct error once per camera stream (the counters have the rest): under load the
            # AI server answers some frames with an error by design (e.g. superseded by a newer one).
            feed.last_error_logged = result.error
            log.info("%s: AI server did not analyse frame %d: %s", result.device_id, result.frame_id, result.error)
        feed.last_result = ResultSummary(
            frame_id=result.frame_id,
            detections=len(result.detections),
            labels=tuple(sorted({d.label for d in result.detections})),
            inference_ms=result.inference_ms,
            error=result.error,
            round_trip_ms=round(rtt * 1000),
            at=self._clock(),
        )
        feed.view.detections(result)
        self._views_changed()

    def _on_drop(self, frame: pb.VisionFrame, reason: str) -> None:
        feed = self.cameras.get(frame.device_id)
        if feed is not None:
            feed.dropped()

    def _on_connection(self, up: bool) -> None:
        if not up and not self._stopping:
            log.warning("vision stream down: camera frames are dropped (counted) until it is back")
        if up:
            # The AI server may be new (restarted): give it every camera's view at once.
            for feed in self.cameras.values():
                feed.request_refresh()

    # ----- the dashboard's camera views -----

    def add_view_listener(self, listener: Callable[[], None]) -> None:
        """Be told (no arguments: ask :meth:`views`) when a camera comes, goes, or has a new view or boxes."""
        self._view_listeners.append(listener)

    def _views_changed(self) -> None:
        for listener in self._view_listeners:
            try:
                listener()
            except Exception:  # the dashboard must never cost a camera its frames
                log.exception("camera view listener failed")

    def views(self) -> list[dict[str, object]]:
        """Every streaming camera's view as the dashboard shows it (times: wall clock, ms)."""
        out: list[dict[str, object]] = []
        for device_id in sorted(self.cameras):
            v = self.cameras[device_id].view
            out.append({
                "device_id": device_id,
                "version": v.version,
                "view_at_ms": v.at_ms,
                "motion_at_ms": v.motion_at_ms,
                "size": list(size) if (size := v.size()) else None,
                "detections": [b.to_json() for b in v.boxes],
                "analysed_at_ms": v.analysed_at_ms,
            })
        return out

    async def view_jpeg(self, device_id: str) -> bytes | None:
        """The camera's latest view as JPEG (encoded off the loop, once per chosen frame); None if none."""
        feed = self.cameras.get(device_id)
        if feed is None:
            return None
        view = feed.view
        cached = view.cached_jpeg()
        if cached is not None:
            return cached
        try:
            encoded = await asyncio.get_running_loop().run_in_executor(self._worker, view.encode)
        except RuntimeError:  # the hub is stopping: its worker is shut down
            return None
        if encoded is None:
            return None
        view.keep(encoded)
        return encoded[1]

    # ----- reporting, lifecycle -----

    def details(self) -> dict[str, object]:
        """Vision for /health?detail=1: the uplink and each camera."""
        now = self._clock()
        up = self.uplink
        return {
            "enabled": True,
            "connected": up.connected,
            "queue_frames": up.queue_depth,
            "inflight": up.inflight,
            "frames_sent": self.metrics.vision_frames_sent,
            "frames_dropped": dict(self.metrics.vision_frames_dropped),
            "results": self.metrics.vision_results,
            "cameras": [self.cameras[d].details(now) for d in sorted(self.cameras)],
        }

    async def stop(self) -> None:
        self._stopping = True
        await self.uplink.stop()
        # A frame in the worker finishes there (a few ms); its camera's consume sees the stop and drops it.
        self._worker.shutdown(wait=False)


def _backlog(track: Any) -> int:
    """Decoded frames aiortc holds for this track (its RemoteStreamTrack queue is unbounded)."""
    queue = getattr(track, "_queue", None)
    return queue.qsize() if isinstance(queue, asyncio.Queue) else 0


async def _drain(track: Any, on_frame: Callable[[], None] | None) -> None:
    """Keep reading a track the pipeline gave up on, so aiortc's frame queue does not grow."""
    try:
        while True:
            await track.recv()
            if on_frame is not None:
                on_frame()
    except MediaStreamError:
        return
