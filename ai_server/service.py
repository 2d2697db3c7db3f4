"""The grpc.aio NailaAI servicer: StreamConversation, GetStatus, AnalyzeFrames."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections.abc import AsyncIterable, AsyncIterator
from importlib import metadata
from typing import TYPE_CHECKING, Any, Final, Protocol

from ai_server.pipeline import Pipeline
from ai_server.session import ConversationSession
from shared.contract import pb, pb_grpc

if TYPE_CHECKING:  # the vision pipeline (OpenCV, ...) is only imported when vision is on
    from ai_server.vision.pipeline import FrameResult, VisionPipeline

log = logging.getLogger(__name__)

#: Frames of one AnalyzeFrames stream read ahead of the answers: enough for the frames of several
#: cameras to meet in one YOLO batch, few enough that a client that stops reading is not buffered.
_READ_AHEAD: Final = 32


def _version() -> str:
    try:
        return metadata.version("naila")
    except metadata.PackageNotFoundError:
        return "0.0.0"


class StatusSource(Protocol):
    """What GetStatus reads from the MQTT control plane (ai_server/control): devices and counters."""

    def device_infos(self) -> list[pb.DeviceInfo]: ...

    def counters(self) -> dict[str, int]: ...


class NailaAIService(pb_grpc.NailaAIServicer):
    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.sessions: weakref.WeakSet[ConversationSession] = weakref.WeakSet()
        self.started = time.monotonic()
        self.control: StatusSource | None = None  # set when the MQTT control plane runs
        self.vision: VisionPipeline | None = None  # set when vision runs
        self.vision_off = "vision not enabled"  # why AnalyzeFrames refuses frames when ``vision`` is None

    async def StreamConversation(
        self, request_iterator: AsyncIterable[pb.AudioInput], context: Any
    ) -> AsyncIterator[pb.AudioOutput]:
        session = ConversationSession(self.pipeline)
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
        if self.control is not None:
            counters.update(self.control.counters())
            devices = self.control.device_infos()
        if self.vision is not None:
            counters.update(self.vision.metrics.snapshot())
        return pb.StatusResponse(
            status="degraded" if p.degraded else "ok",
            uptime_secs=time.monotonic() - self.started,
            stt_model=p.stt.model,
            stt_backend=p.stt.name,
            llm_model=p.llm.model,
            llm_backend=p.llm.name,
            tts_model=p.tts.model,
            tts_backend=p.tts.name,
            vision_model=self.vision.detector.name if self.vision is not None else f"({self.vision_off})",
            active_conversations=active,
            counters=counters,
            latencies=[
                pb.StageLatency(stage=stage, p50_ms=p50, p95_ms=p95, count=n)
                for stage, p50, p95, n in p.metrics.latencies()
            ],
            devices=devices,
            version=_version(),
        )

    async def AnalyzeFrames(
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
                        f.device_id, f.jpeg, f.timestamp_ms, f.frame_id, f.motion_score, f.refresh)))
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
