"""The hub's one long-lived AnalyzeFrames stream to the AI server, shared by every camera.

Cameras hand VisionFrames to :meth:`VisionUplink.submit`, which never blocks. Each camera has ONE
waiting slot: a newer frame of the same camera replaces its waiting one (dropped as
``superseded`` and counted), because for detection a newer frame is always worth more than an
older one. Waiting cameras are written round-robin (in the order their slots were taken; a camera
just served queues behind the others), so one busy or rogue camera cannot push another camera's
frames out (issue 18, M5); the old single drop-oldest queue let it. At most
HUB_VISION_QUEUE_FRAMES cameras wait at once (a camera beyond that has its frame dropped as
``queue_full``). At most HUB_VISION_MAX_INFLIGHT frames are on the wire unanswered (the AI server
answers each frame, in order); the rest wait in their slots, so a detector slower than the cameras
turns into newest-wins here instead of seconds of backlog in gRPC's buffers.

While the stream is down, submitted frames are dropped and counted at once (nothing piles up);
the stream is redialled with the hub's shared backoff (shared.backoff, HUB_GRPC_BACKOFF_*).
A stream whose oldest frame stays unanswered for ``result_timeout_s`` is torn down and
redialled (a hung AI server). An AI server without AnalyzeFrames (UNIMPLEMENTED) is retried
only every ``unimplemented_retry_s``.

Why grpc.aio on the event loop, when hub.ai_link runs its stream in a thread: ai_link moves
~50 audio messages per second per device, and grpc.aio completes one write per loop iteration,
which collapsed under load there. Here at most a few frames per second per camera go out, with
at most HUB_VISION_MAX_INFLIGHT in flight, so one write per iteration is plenty, and keeping
the queue, counters and callbacks on the loop needs no cross-thread hand-off. The channel is
separate from ai_link's (a sync channel cannot carry an aio call) but goes to the same
HUB_AI_SERVER with the same options (hub.ai_link.channel_options) and the same transport security
(:class:`shared.grpc_security.ClientSecurity`: mutual TLS with HUB_AI_TLS_*).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass

import grpc
import grpc.aio

from hub.ai_link import CONNECT_TIMEOUT_S, channel_options
from hub.metrics import HubMetrics
from shared.backoff import Backoff
from shared.contract import pb, pb_grpc
from shared.grpc_security import ClientSecurity

log = logging.getLogger("naila.hub.vision.uplink")

# A frame unanswered this long means the AI server hung (YOLO on a CPU answers in well under 1 s).
RESULT_TIMEOUT_S = 30.0
# An AI server that does not implement AnalyzeFrames is asked again this often, s.
UNIMPLEMENTED_RETRY_S = 30.0
# With several AI servers: how often the open stream checks it still goes where frames should go, s.
CHOICE_CHECK_S = 1.0

# vision_frames_dropped reasons.
DROP_QUEUE_FULL = "queue_full"  # HUB_VISION_QUEUE_FRAMES cameras were already waiting
DROP_SUPERSEDED = "superseded"  # a newer frame of the same camera took its waiting slot
DROP_DISCONNECTED = "ai_disconnected"  # no stream: dropped at submit, or still queued when it went down
DROP_UNANSWERED = "unanswered"  # written, but the stream ended before its VisionResult


@dataclass(slots=True)
class _InFlight:
    device_id: str
    frame_id: int
    sent_at: float


class _StreamEnded(Exception):
    """The AI server closed the stream cleanly."""


class _Moved(Exception):
    """Frames should go to another AI server now (the first of HUB_AI_SERVER is back up)."""


class _ResultTimeout(Exception):
    """The oldest frame in flight waited longer than the result timeout."""


class VisionUplink:
    """Owns the bounded frame queue, the AnalyzeFrames call and its reconnect loop (all on the event loop)."""

    def __init__(
        self,
        target: str,
        metrics: HubMetrics,
        *,
        backoff: Backoff,
        queue_frames: int,
        max_inflight: int,
        on_result: Callable[[pb.VisionResult, float], None],
        on_drop: Callable[[pb.VisionFrame, str], None] | None = None,
        on_connection_change: Callable[[bool], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
        result_timeout_s: float = RESULT_TIMEOUT_S,
        unimplemented_retry_s: float = UNIMPLEMENTED_RETRY_S,
        security: ClientSecurity | None = None,
        choose: Callable[[], str] | None = None,
    ) -> None:
        if queue_frames < 1 or max_inflight < 1:
            raise ValueError("queue_frames and max_inflight must be >= 1")
        self.target = target
        self._security = security or ClientSecurity(target)  # None: plaintext (a loopback AI server in tests)
        # Several AI servers (issue 21): where frames should go now, asked at every dial and every
        # CHOICE_CHECK_S while a stream is open; None: always ``target``.
        self._choose = choose
        self.metrics = metrics
        self._backoff = backoff
        self.queue_frames = queue_frames
        self.max_inflight = max_inflight
        self._on_result = on_result
        self._on_drop = on_drop
        self._on_change = on_connection_change
        self._clock = clock
        self._connect_timeout_s = connect_timeout_s
        self._result_timeout_s = result_timeout_s
        self._unimplemented_retry_s = unimplemented_retry_s
        # Camera -> its one waiting frame; the order is the round-robin order (oldest waiter first).
        self._queue: OrderedDict[str, pb.VisionFrame] = OrderedDict()
        self._inflight: deque[_InFlight] = deque()
        self._wake = asyncio.Event()  # a frame was queued or a result freed a slot
        self._task: asyncio.Task[None] | None = None
        self._connected = False
        self._ever_connected = False
        self._outage_logged = False  # one warning per outage, not one per retry
        self._mismatch_logged = False

    # ----- state -----

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def running(self) -> bool:
        return self._task is not None

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    # ----- cameras -----

    def submit(self, frame: pb.VisionFrame) -> bool:
        """Queue a frame without blocking; False if it was dropped (stream down)."""
        if not self._connected:
            self._drop(frame, DROP_DISCONNECTED)
            return False
        waiting = self._queue.get(frame.device_id)
        if waiting is not None:
            self._drop(waiting, DROP_SUPERSEDED)  # the camera keeps its place in the round
        elif len(self._queue) >= self.queue_frames:
            self._drop(frame, DROP_QUEUE_FULL)
            return False
        self._queue[frame.device_id] = frame
        self._wake.set()
        return True

    def _drop(self, frame: pb.VisionFrame, reason: str) -> None:
        self.metrics.vision_frames_dropped[reason] += 1
        if self._on_drop is not None:
            self._on_drop(frame, reason)

    # ----- lifecycle -----

    def start(self) -> None:
        """Start dialling (idempotent); the stream then stays up, redialled whenever it is lost."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="hub-vision-uplink")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._set_connected(False)

    # ----- the stream -----

    async def _run(self) -> None:
        while True:
            delay: float | None = None
            try:
                delay = await self._attempt()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("vision uplink attempt failed")
            if delay is None:
                delay = self._backoff.next_delay()
            log.debug("vision: redialling %s in %.2fs", self.target, delay)
            await asyncio.sleep(delay)

    async def _attempt(self) -> float | None:
        """One connection: open the stream and pump it until it fails. Returns a retry delay or None (backoff)."""
        if self._choose is not None and (target := self._choose()) != self.target:
            log.info("vision: camera frames go to AI server %s now (was %s)", target, self.target)
            self.target = target
            self._security = dataclasses.replace(self._security, target=target)  # same credentials
        channel = self._security.aio_channel(channel_options(self._connect_timeout_s))
        try:
            try:
                async with asyncio.timeout(self._connect_timeout_s):  # not wait_for: see shared/aio.py
                    await channel.channel_ready()
            except TimeoutError:
                self.metrics.vision_connect_failures += 1
                self._outage(f"AI server {self.target} unreachable for vision; camera frames are dropped until it is")
                return None
            call = pb_grpc.NailaAIStub(channel).AnalyzeFrames()
            self._set_connected(True)
            log.info("vision: AnalyzeFrames stream open to %s", self.target)
            try:
                await self._pump(call)
            except grpc.aio.AioRpcError as err:
                if err.code() is grpc.StatusCode.UNIMPLEMENTED:
                    self._outage(f"AI server {self.target} does not implement AnalyzeFrames; camera frames are "
                                 f"dropped, asking again every {self._unimplemented_retry_s:.0f}s")
                    return self._unimplemented_retry_s
                self._outage(f"vision stream to {self.target} lost: {err.code().name} {err.details()}")
            except _StreamEnded:
                self._outage(f"AI server {self.target} ended the vision stream")
            except _ResultTimeout as exc:
                self._outage(f"vision stream to {self.target} torn down: {exc}")
            except _Moved:
                return 0.0  # redial at once, to the server now chosen
            except asyncio.InvalidStateError as exc:  # a write on a call that had just finished
                self._outage(f"vision stream to {self.target} lost: {exc}")
            finally:
                call.cancel()
                self._set_connected(False)
            return None
        finally:
            await channel.close()

    async def _pump(self, call: grpc.aio.StreamStreamCall) -> None:
        """Write queued frames, read results, watch for a hung server; returns/raises when any of them ends."""
        tasks = [
            asyncio.create_task(self._write(call), name="hub-vision-write"),
            asyncio.create_task(self._read(call), name="hub-vision-read"),
            asyncio.create_task(self._watch(), name="hub-vision-watch"),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        # The first finisher's exception says why the stream ended (the reader's is the informative one).
        errors = [t.exception() for t in sorted(done, key=lambda t: t is not tasks[1])]
        for exc in errors:
            if exc is not None:
                raise exc

    async def _write(self, call: grpc.aio.StreamStreamCall) -> None:
        while True:
            while not self._queue or len(self._inflight) >= self.max_inflight:
                self._wake.clear()
                await self._wake.wait()
            _, frame = self._queue.popitem(last=False)  # the camera that has waited longest
            self._inflight.append(_InFlight(frame.device_id, frame.frame_id, self._clock()))
            await call.write(frame)
            self.metrics.vision_frames_sent += 1

    async def _read(self, call: grpc.aio.StreamStreamCall) -> None:
        while True:
            result = await call.read()
            if result is grpc.aio.EOF:
                raise _StreamEnded
            assert isinstance(result, pb.VisionResult)
            self._received(result)

    def _received(self, result: pb.VisionResult) -> None:
        now = self._clock()
        m = self.metrics
        m.vision_results += 1
        m.vision_detections += len(result.detections)
        if result.error:
            m.vision_result_errors += 1
        rtt = 0.0
        if self._inflight:
            sent = self._inflight.popleft()
            rtt = max(0.0, now - sent.sent_at)
            m.vision_result_latency.observe(rtt)
            if (sent.device_id, sent.frame_id) != (result.device_id, result.frame_id) and not self._mismatch_logged:
                # The contract is one result per frame, in order: say so once, keep counting.
                self._mismatch_logged = True
                log.warning("vision: result for %s/%d arrived where %s/%d was expected (logged once)",
                            result.device_id, result.frame_id, sent.device_id, sent.frame_id)
        self._wake.set()  # a slot is free
        try:
            self._on_result(result, rtt)
        except Exception:
            log.exception("vision result callback failed")

    async def _watch(self) -> None:
        period = max(0.05, self._result_timeout_s / 4)
        if self._choose is not None:
            period = min(period, CHOICE_CHECK_S)
        while True:
            await asyncio.sleep(period)
            if self._inflight:
                waited = self._clock() - self._inflight[0].sent_at
                if waited > self._result_timeout_s:
                    raise _ResultTimeout(f"frame {self._inflight[0].frame_id} unanswered for {waited:.1f}s")
            if self._choose is not None and self._choose() != self.target:
                raise _Moved

    def _set_connected(self, up: bool) -> None:
        if up == self._connected:
            return
        self._connected = up
        if up:
            if self._ever_connected:
                self.metrics.vision_stream_reconnects += 1
            self._ever_connected = True
            self._backoff.connected()
        else:
            self._backoff.disconnected()
            # Nothing is carried over to the next stream: answers for these will never come, and
            # queued frames are stale by the time it is up (cameras send a refresh then).
            while self._inflight:
                f = self._inflight.popleft()
                self._drop(pb.VisionFrame(device_id=f.device_id, frame_id=f.frame_id), DROP_UNANSWERED)
            while self._queue:
                self._drop(self._queue.popitem(last=False)[1], DROP_DISCONNECTED)
        if up:
            self._outage_logged = False
        if self._on_change is not None:
            try:
                self._on_change(up)
            except Exception:
                log.exception("vision connection-change callback failed")

    def _outage(self, message: str) -> None:
        if self._outage_logged:
            log.debug("%s", message)
        else:
            self._outage_logged = True
            log.warning("%s", message)
