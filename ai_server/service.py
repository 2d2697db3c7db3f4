"""The grpc.aio NailaAI servicer: StreamConversation, GetStatus, AnalyzeFrames.

At most ``StreamLimits.max_streams`` StreamConversation and AnalyzeFrames streams are open at once
(one pair per hub, with room for a reconnect overlapping the old stream): one more is refused with
RESOURCE_EXHAUSTED and counted (``streams_refused``) before it costs anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections.abc import AsyncIterable, AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, Final, Protocol

import grpc

from ai_server.pipeline import Pipeline
from ai_server.session import ConversationSession
from ai_server.stream_input import LogBudget, StreamLimits
from shared.contract import pb, pb_grpc
from shared.version import naila_version

if TYPE_CHECKING:  # the vision pipeline (OpenCV, ...) is only imported when vision is on
    from ai_server.vision.pipeline import FrameResult, VisionPipeline

log = logging.getLogger(__name__)

#: Frames of one AnalyzeFrames stream read ahead of the answers: enough for the frames of several
#: cameras to meet in one YOLO batch, few enough that a client that stops reading is not buffered.
_READ_AHEAD: Final = 32


class StatusSource(Protocol):
    """What GetStatus reads from the MQTT control plane (ai_server/control): devices and counters."""

    def device_infos(self) -> list[pb.DeviceInfo]: ...

    def counters(self) -> dict[str, int]: ...


class NailaAIService(pb_grpc.NailaAIServicer):
    def __init__(
        self,
        pipeline: Pipeline,
        limits: StreamLimits | None = None,
        *,
        sessions: weakref.WeakSet[ConversationSession] | None = None,
        control: StatusSource | None = None,
        vision: VisionPipeline | None = None,
        vision_off: str = "vision not enabled",
        counters: Callable[[], dict[str, int]] | None = None,
    ) -> None:
        """``sessions``: the open conversations (shared with what speaks on them: control/speech.py, timers).
        ``control``: the MQTT control plane when it runs; ``vision`` when vision runs, else ``vision_off`` says
        why AnalyzeFrames refuses frames; ``counters``: more GetStatus counters (the store's retention)."""
        self.pipeline = pipeline
        self.limits = limits or StreamLimits()
        self.open_streams = 0
        self._log_budget = LogBudget(log)
        self.sessions: weakref.WeakSet[ConversationSession] = weakref.WeakSet() if sessions is None else sessions
        self.started = time.monotonic()
        self.control = control
        self.vision = vision
        self.vision_off = vision_off
        self._counters = counters

    async def _admit(self, context: Any, kind: str) -> None:
        """Take one of the ``max_streams`` slots, or end the call with RESOURCE_EXHAUSTED."""
        if self.open_streams >= self.limits.max_streams:
            self.pipeline.metrics.count("streams_refused")
            peer = context.peer() if context is not None else "?"
            self._log_budget.warn("streams_refused", "refused a %s stream from %r: %d streams are open "
                                  "(AI_MAX_STREAMS)", kind, peer, self.open_streams)
            if context is not None:
                await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                    f"too many streams: {self.open_streams} open (AI_MAX_STREAMS="
                                    f"{self.limits.max_streams})")
            raise RuntimeError("too many streams")
        self.open_streams += 1

    async def StreamConversation(
        self, request_iterator: AsyncIterable[pb.AudioInput], context: Any
    ) -> AsyncIterator[pb.AudioOutput]:
        await self._admit(context, "conversation")
        try:
            async for msg in self._conversation(request_iterator, context):
                yield msg
        finally:
            self.open_streams -= 1

    async def _conversation(
        self, request_iterator: AsyncIterable[pb.AudioInput], context: Any
    ) -> AsyncIterator[pb.AudioOutput]:
        session = ConversationSession(self.pipeline, self.limits, self._log_budget)
        self.sessions.add(session)
        peer = context.peer() if context is not None else "?"
        log.info("conversation stream opened by %s", peer)
        self.pipeline.metrics.count("streams")
        reader = asyncio.create_task(session.read(request_iterator), name="stream-reader")
        try:
            async for msg in session.outgoing():
                yield msg
            await reader  # surfaces a read error in the log below
        except asyncio.CancelledError:
            log.info("conversation stream from %s cancelled", peer)
            raise
        except Exception:
            log.exception("conversation stream from %s failed", peer)
            raise
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
            await session.close()
            self.sessions.discard(session)
            self._update_active()
            log.info("conversation stream from %s closed", peer)

    def active_conversations(self) -> int:
        return sum(s.active_conversations for s in list(self.sessions))

    def _update_active(self) -> None:
        self.pipeline.metrics.active.set(self.active_conversations())

    async def GetStatus(self, request: pb.StatusRequest, context: Any) -> pb.StatusResponse:
        p = self.pipeline
        active = self.active_conversations()
        p.metrics.active.set(active)
        counters = dict(p.metrics.counters)
        devices: list[pb.DeviceInfo] = []
        if self._counters is not None:
            counters.update(self._counters())
        if self.control is not None:
            counters.update(self.control.counters())
            devices = self.control.device_infos()
        if self.vision is not None:
            counters.update(self.vision.metrics.snapshot())
        vision_problem = self.vision.model_error if self.vision is not None else None
        return pb.StatusResponse(
            # Degraded: a fallback voice, or vision is on but its model cannot load (no camera can alert).
            status="degraded" if p.degraded or vision_problem else "ok",
            uptime_secs=time.monotonic() - self.started,
            stt_model=p.stt.model,
            stt_backend=p.stt.name,
            llm_model=p.llm.model,
            llm_backend=p.llm.name,
            tts_model=p.tts.model,
            tts_backend=p.tts.name,
            vision_model=(f"{self.vision.detector.name} (failed: {vision_problem})" if vision_problem
                          else self.vision.detector.name) if self.vision is not None else f"({self.vision_off})",
            active_conversations=active,
            counters=counters,
            latencies=[
                pb.StageLatency(stage=stage, p50_ms=p50, p95_ms=p95, count=n)
                for stage, p50, p95, n in p.metrics.latencies()
            ],
            devices=devices,
            version=naila_version(),
        )

    async def AnalyzeFrames(
        self, request_iterator: AsyncIterable[pb.VisionFrame], context: Any
    ) -> AsyncIterator[pb.VisionResult]:
        await self._admit(context, "vision")
        try:
            async for result in self._frames(request_iterator, context):
                yield result
        finally:
            self.open_streams -= 1

    async def _frames(
        self, request_iterator: AsyncIterable[pb.VisionFrame], context: Any
    ) -> AsyncIterator[pb.VisionResult]:
        """One VisionResult per VisionFrame, in order (see :mod:`ai_server.vision.pipeline`).

        Frames are read ahead of the answers (up to ``_READ_AHEAD``), so frames the hub sends back to
        back share a YOLO batch; a frame that is refused or superseded is answered with ``error`` and
        the stream goes on.
        """
        vision = self.vision
        if vision is None:
            async for frame in request_iterator:
                yield pb.VisionResult(device_id=frame.device_id, frame_id=frame.frame_id,
                                      timestamp_ms=frame.timestamp_ms, error=self.vision_off)
            return
        from ai_server.vision.pipeline import Frame

        peer = context.peer() if context is not None else "?"
        pending: asyncio.Queue[asyncio.Future[FrameResult] | None] = asyncio.Queue(_READ_AHEAD)
        failed: list[BaseException] = []

        async def read() -> None:
            try:
                async for f in request_iterator:
                    await pending.put(vision.submit(Frame(
                        f.device_id, f.jpeg, f.timestamp_ms, f.frame_id, f.motion_score, f.refresh,
                        width=f.width, height=f.height)))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the client's stream broke: answer what was read, then fail
                failed.append(exc)
            await pending.put(None)

        log.info("vision stream opened by %s", peer)
        reader = asyncio.create_task(read(), name="vision-reader")
        try:
            while (future := await pending.get()) is not None:
                r = await future
                yield pb.VisionResult(
                    device_id=r.device_id, frame_id=r.frame_id, timestamp_ms=r.timestamp_ms,
                    detections=[
                        pb.Detection(label=d.label, confidence=d.confidence,
                                     bbox=pb.BoundingBox(x=d.bbox[0], y=d.bbox[1], w=d.bbox[2], h=d.bbox[3]),
                                     track_id=d.track_id, zone=d.zone)
                        for d in r.detections
                    ],
                    inference_ms=r.inference_ms, error=r.error,
                )
            if failed:
                raise failed[0]
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
            log.info("vision stream from %s closed", peer)
