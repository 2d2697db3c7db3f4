"""The grpc.aio Household servicer: what the hub's dashboard reads from the AI server (issue 24).

Alert snapshots, the vision event history, and the timers and reminders (listed, watched, cancelled)
travel on the hub's existing mTLS gRPC channel: the images are too big for MQTT retained state, and
a server stream tells the dashboard of every timer change without a poll. Bad requests end with
INVALID_ARGUMENT and a one-line message (counted as ``household_refused``); the server keeps serving.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any, Final, NoReturn

import grpc

from ai_server.assist.alarms import Alarms, AlarmView
from ai_server.metrics import Metrics
from ai_server.store.media import MediaRecord, MediaStore
from shared.contract import TIMER_LABEL_MAX, pb, pb_grpc
from shared.ids import ID_RULE, is_safe_id

log = logging.getLogger(__name__)

#: The largest snapshot sent: grpc's default receive limit on the hub's side (the frames are
#: at most 1280x720 JPEGs, far below it).
MAX_SNAPSHOT_BYTES: Final = 4 * 1024 * 1024
DEFAULT_EVENTS: Final = 100
MAX_EVENTS: Final = 500
SNAPSHOT_SOURCE: Final = "alert_snapshot"
MAX_LABEL: Final = TIMER_LABEL_MAX  # a timer's name or room from the dashboard's form


def _ms(t: datetime) -> int:
    return int(t.timestamp() * 1000)


def _time(ms: int) -> datetime | None:
    return datetime.fromtimestamp(ms / 1000, UTC) if ms else None


def _timer(a: AlarmView) -> pb.HouseholdTimer:
    return pb.HouseholdTimer(
        id=a.id,
        kind=a.kind,
        label=a.label,
        device_id=a.asker,
        room=a.room,
        ends_at_ms=_ms(a.ends_at) if a.ends_at is not None else 0,
        left_ms=round((a.left_s or 0.0) * 1000),
        duration_ms=round(a.duration_s * 1000),
        paused=a.paused,
        ringing=a.ringing,
    )


def _detections(analysis: dict[str, object] | None) -> tuple[int, int, list[pb.Detection]]:
    """Width, height and the boxes kept with an alert snapshot (ai_server/vision/alerting.py)."""
    alert = (analysis or {}).get("alert")
    if not isinstance(alert, dict):
        return 0, 0, []
    found: list[pb.Detection] = []
    for d in alert.get("detections") or []:
        try:
            x, y, w, h = (float(v) for v in d["box"])
            found.append(
                pb.Detection(
                    label=str(d["label"]),
                    confidence=float(d["confidence"]),
                    bbox=pb.BoundingBox(x=x, y=y, w=w, h=h),
                    track_id=int(d.get("track_id", -1)),
                    zone=str(d.get("zone") or ""),
                )
            )
        except (KeyError, TypeError, ValueError):
            continue  # a row written by other code: show the image without that box
    return int(alert.get("width") or 0), int(alert.get("height") or 0), found


class HouseholdService(pb_grpc.HouseholdServicer):
    """``store``: the media/event store; ``alarms``: the timers and reminders (None: the timer store
    could not be opened, the lists are empty)."""

    def __init__(
        self,
        store: MediaStore,
        alarms: Alarms | None,
        metrics: Metrics,
        *,
        max_snapshot_bytes: int = MAX_SNAPSHOT_BYTES,
    ) -> None:
        self.store = store
        self.alarms = alarms
        self.metrics = metrics
        self.max_snapshot_bytes = max_snapshot_bytes

    async def _refuse(self, context: Any, code: grpc.StatusCode, message: str) -> NoReturn:
        self.metrics.count("household_refused")
        log.info("household: %s refused: %s", code.name, message)
        await context.abort(code, message)
        raise AssertionError("abort returns only by raising")  # pragma: no cover

    async def GetSnapshot(self, request: pb.SnapshotRequest, context: Any) -> pb.Snapshot:
        if not is_safe_id(request.id):
            await self._refuse(context, grpc.StatusCode.INVALID_ARGUMENT, f"snapshot id must be {ID_RULE}")
        record: MediaRecord | None = await asyncio.to_thread(self.store.get, request.id)
        # Alert snapshots only: uploads and recordings are not the dashboard's to show.
        if record is None or record.source != SNAPSHOT_SOURCE or not record.stored:
            await self._refuse(context, grpc.StatusCode.NOT_FOUND, f"no alert snapshot {request.id}")
        if record.size > self.max_snapshot_bytes:
            await self._refuse(
                context,
                grpc.StatusCode.FAILED_PRECONDITION,
                f"snapshot {request.id} is {record.size} bytes, over {self.max_snapshot_bytes}",
            )
        data = b""
        if not request.without_image:
            try:
                data = await asyncio.to_thread(self.store.read, request.id)
            except (KeyError, OSError):  # retention deleted it between the two reads
                await self._refuse(context, grpc.StatusCode.NOT_FOUND, f"no alert snapshot {request.id}")
        width, height, detections = _detections(record.analysis)
        self.metrics.count("household_snapshots")
        return pb.Snapshot(
            id=record.id,
            jpeg=data,
            width=width,
            height=height,
            detections=detections,
            device_id=record.device_id or "",
            zone=record.zone or "",
            timestamp_ms=_ms(record.time),
            format=record.format,
        )

    async def QueryEvents(self, request: pb.EventQuery, context: Any) -> pb.EventList:
        for value, what in ((request.device_id, "device_id"), (request.zone, "zone")):
            if value and not is_safe_id(value):
                await self._refuse(context, grpc.StatusCode.INVALID_ARGUMENT, f"{what} must be {ID_RULE}")
        if request.since_ms and request.until_ms and request.since_ms >= request.until_ms:
            await self._refuse(context, grpc.StatusCode.INVALID_ARGUMENT, "since must be before until")
        limit = min(request.limit or DEFAULT_EVENTS, MAX_EVENTS)
        rows = await asyncio.to_thread(
            self.store.events.query,
            since=_time(request.since_ms),
            until=_time(request.until_ms),
            device_id=request.device_id or None,
            zone=request.zone or None,
            limit=limit,
        )
        return pb.EventList(
            events=[
                pb.HistoryEvent(
                    id=r.id,
                    timestamp_ms=_ms(r.time),
                    device_id=r.device_id,
                    zone=r.zone,
                    alert_type=r.alert_type,
                    label=r.label,
                    confidence=r.confidence,
                    track_id=r.track_id,
                    outcome=r.outcome,
                    media_id=r.media_id or "",
                )
                for r in rows
            ]
        )

    def _timers(self) -> pb.TimerList:
        board = self.alarms.board() if self.alarms is not None else []
        return pb.TimerList(timers=[_timer(a) for a in board], server_time_ms=_ms(datetime.now(UTC)))

    async def ListTimers(self, request: pb.TimersRequest, context: Any) -> pb.TimerList:
        return self._timers()

    async def WatchTimers(self, request: pb.TimersRequest, context: Any) -> AsyncIterator[pb.TimerList]:
        """The list now, then after every change. Changes that come while one list is being written
        are folded into the next (a version number, not a queue: a slow hub never piles them up)."""
        alarms = self.alarms
        seen = alarms.changes.version if alarms is not None else 0  # before the first list: no change is missed
        yield self._timers()
        if alarms is None:
            await asyncio.Event().wait()  # nothing will change: hold the stream until the hub leaves
            return
        while True:
            seen = await alarms.changes.wait(seen)
            yield self._timers()

    async def CancelTimer(self, request: pb.CancelTimerRequest, context: Any) -> pb.CancelTimerResponse:
        if not is_safe_id(request.id):
            await self._refuse(context, grpc.StatusCode.INVALID_ARGUMENT, f"timer id must be {ID_RULE}")
        if self.alarms is None:
            return pb.CancelTimerResponse(found=False)
        done = self.alarms.cancel(request.id)
        log.info(
            "household: cancel %s from the dashboard: %s",
            request.id,
            f"{done.kind}{' (stopped ringing)' if done.stopped_ringing else ''}" if done.found else "not found",
        )
        return pb.CancelTimerResponse(found=done.found, kind=done.kind or "", stopped_ringing=done.stopped_ringing)

    async def SetTimer(self, request: pb.SetTimerRequest, context: Any) -> pb.HouseholdTimer:
        """The dashboard's form: the same timer as "set a pasta timer for 5 minutes" said on the device."""
        if not is_safe_id(request.device_id):
            await self._refuse(context, grpc.StatusCode.INVALID_ARGUMENT, f"device_id must be {ID_RULE}")
        for text, what in ((request.label, "label"), (request.room, "room")):
            if len(text) > MAX_LABEL or not text.isprintable():
                message = f"{what} must be 0-{MAX_LABEL} printable characters"
                await self._refuse(context, grpc.StatusCode.INVALID_ARGUMENT, message)
        if self.alarms is None:
            await self._refuse(context, grpc.StatusCode.FAILED_PRECONDITION, "timers are off on this AI server")
        try:
            timer = self.alarms.timers.set_timer(request.device_id, request.room, request.label, request.duration_s)
        except ValueError as exc:
            await self._refuse(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        log.info("household: timer %s (%s) set from the dashboard to ring on %s", timer.id, timer.label, timer.asker)
        views = [a for a in self.alarms.board() if a.id == timer.id]
        return _timer(views[0]) if views else pb.HouseholdTimer(id=timer.id, kind="timer", label=timer.label)
