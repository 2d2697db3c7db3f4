"""The dashboard's household panels (issue 24): alert snapshots, the event timeline, timers and reminders.

The data lives on the AI server and comes over gRPC (the ``Household`` service, proto/naila/v1) on
a channel of its own with the same HUB_AI_TLS_* credentials as the AI link (mTLS). Routes, all
behind the web login (401 without it); POST needs a same-origin request, like the other POSTs:

* ``GET /api/alerts/{id}/snapshot``: the alert's JPEG (``id``: the alert's ``snapshot_id``, or a
  timeline event's ``media_id``); ``GET /api/alerts/{id}/boxes``: its size and boxes as JSON;
* ``GET /api/history?camera=&zone=&since=&until=&limit=``: the event timeline, newest first
  (``since``/``until``: ISO 8601 times);
* ``GET /api/timers``: running timers, reminders and what rings now;
* ``POST /api/timers/{id}/cancel``: cancel one (a ringing one stops ringing).

Bad ids or parameters answer 400 with a one-line error; an AI server that cannot be reached (or
does not answer within :data:`CALL_TIMEOUT_S`) answers 503, counted in ``web_refused`` as
``ai_unreachable``. Live updates: :class:`TimerWatch` keeps one ``WatchTimers`` stream open and
sends each new list to the dashboards as the SSE event ``timers``; the page counts down by itself
from ``ends_at_ms`` (no event per second).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Final

import grpc
from aiohttp import web

from hub.web.events import EventBus
from shared.backoff import Backoff
from shared.contract import pb, pb_grpc
from shared.errors import one_line
from shared.grpc_security import ClientSecurity
from shared.ids import ID_RULE, is_safe_id

log = logging.getLogger("naila.hub.web")

CALL_TIMEOUT_S: Final = 5.0
MAX_HISTORY: Final = 500


class HouseholdError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def timer_json(t: pb.HouseholdTimer) -> dict[str, object]:
    return {
        "id": t.id,
        "kind": t.kind,
        "label": t.label,
        "device_id": t.device_id,
        "room": t.room or None,
        "ends_at_ms": t.ends_at_ms or None,
        "left_ms": t.left_ms,
        "duration_ms": t.duration_ms,
        "paused": t.paused,
        "ringing": t.ringing,
    }


def timers_json(r: pb.TimerList) -> dict[str, object]:
    return {"timers": [timer_json(t) for t in r.timers], "server_time_ms": r.server_time_ms, "reachable": True}


def event_json(e: pb.HistoryEvent) -> dict[str, object]:
    return {
        "id": e.id,
        "timestamp": datetime.fromtimestamp(e.timestamp_ms / 1000, UTC).isoformat(timespec="seconds"),
        "camera": e.device_id,
        "zone": e.zone,
        "alert_type": e.alert_type,
        "label": e.label,
        "confidence": round(e.confidence, 3),
        "track_id": e.track_id,
        "outcome": e.outcome,
        "snapshot_id": e.media_id or None,
    }


def boxes_json(s: pb.Snapshot) -> dict[str, object]:
    return {
        "id": s.id,
        "width": s.width,
        "height": s.height,
        "camera": s.device_id,
        "zone": s.zone,
        "timestamp": datetime.fromtimestamp(s.timestamp_ms / 1000, UTC).isoformat(timespec="seconds"),
        "boxes": [
            {
                "label": d.label,
                "confidence": round(d.confidence, 3),
                "zone": d.zone,
                "x": d.bbox.x,
                "y": d.bbox.y,
                "w": d.bbox.w,
                "h": d.bbox.h,
            }
            for d in s.detections
        ],
    }


def _time_param(query: Any, name: str) -> int:
    """Unix ms of an ISO 8601 query parameter (a time without a zone is UTC); 0 when absent."""
    text = query.get(name) or ""
    if not text:
        return 0
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise HouseholdError(400, f"{name} must be an ISO 8601 time, e.g. 2026-03-10T14:00:00Z") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0, int(when.timestamp() * 1000))


def _id_param(value: str, what: str) -> str:
    if not is_safe_id(value):
        raise HouseholdError(400, f"{what} must be {ID_RULE}")
    return value


class HouseholdClient:
    """The Household stub on a grpc.aio channel made on first use; gRPC errors become HouseholdError."""

    def __init__(self, security: ClientSecurity, timeout_s: float = CALL_TIMEOUT_S) -> None:
        self.security = security
        self.timeout_s = timeout_s
        self._channel: grpc.aio.Channel | None = None

    @property
    def stub(self) -> pb_grpc.HouseholdStub:
        if self._channel is None:
            self._channel = self.security.aio_channel()
        return pb_grpc.HouseholdStub(self._channel)

    async def call(self, method: str, request: Any) -> Any:
        try:
            return await getattr(self.stub, method)(request, timeout=self.timeout_s)
        except grpc.aio.AioRpcError as err:
            raise _translate(err) from None

    async def close(self) -> None:
        channel, self._channel = self._channel, None
        if channel is not None:
            await channel.close()


def _translate(err: grpc.aio.AioRpcError) -> HouseholdError:
    code, details = err.code(), " ".join(str(err.details() or "").split())[:200]  # one line
    if code == grpc.StatusCode.NOT_FOUND:
        return HouseholdError(404, details or "not found")
    if code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION):
        return HouseholdError(400, details or "refused by the AI server")
    return HouseholdError(503, f"the AI server is unreachable ({code.name})")


class TimerWatch:
    """One WatchTimers stream, redialled with backoff; each list goes to the dashboards as ``timers``."""

    def __init__(
        self,
        client: HouseholdClient,
        bus: EventBus,
        *,
        backoff: Backoff | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.client = client
        self.bus = bus
        self.backoff = backoff or Backoff(0.5, 15.0)
        self.sleep = sleep
        self.latest: dict[str, object] | None = None  # the last list (None: never reached)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="web-timer-watch")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def _publish(self, data: dict[str, object]) -> None:
        self.latest = data
        self.bus.publish("timers", data, dashboard_only=True)

    async def _run(self) -> None:
        while True:
            try:
                async for update in self.client.stub.WatchTimers(pb.TimersRequest()):
                    self.backoff.connected()
                    self._publish(timers_json(update))
                log.info("dashboard: the AI server ended the timer stream")
            except grpc.aio.AioRpcError as err:
                log.debug("dashboard: timer stream lost: %s", err.code().name)
            except Exception as exc:  # the dashboard must not take the hub down
                log.warning("dashboard: timer stream failed: %s", one_line(exc))
            self.backoff.disconnected()
            if self.latest is not None and self.latest.get("reachable"):
                self._publish({"timers": [], "server_time_ms": 0, "reachable": False})
            await self.sleep(self.backoff.next_delay())


class HouseholdRoutes:
    """The routes of the module doc. ``require`` raises 401 without a login; ``same_origin`` checks POSTs."""

    def __init__(
        self,
        client: HouseholdClient,
        bus: EventBus,
        refused: Counter[str],
        *,
        require: Callable[[web.Request], None],
        same_origin: Callable[[web.Request], bool],
    ) -> None:
        self.client = client
        self.refused = refused
        self.require = require
        self.same_origin = same_origin
        self.watch = TimerWatch(client, bus)

    def add_routes(self, app: web.Application) -> None:
        r = app.router
        r.add_get("/api/alerts/{id}/snapshot", self.snapshot)
        r.add_get("/api/alerts/{id}/boxes", self.boxes)
        r.add_get("/api/history", self.history)
        r.add_get("/api/timers", self.timers)
        r.add_post("/api/timers/{id}/cancel", self.cancel)

    def start(self) -> None:
        self.watch.start()

    async def stop(self) -> None:
        await self.watch.stop()
        await self.client.close()

    async def _answer(
        self, request: web.Request, make: Callable[[], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        self.require(request)
        try:
            return await make()
        except HouseholdError as err:
            reason = "ai_unreachable" if err.status == 503 else f"household_{err.status}"
            self.refused[reason] += 1
            log.info("dashboard %s %s: %d %s", request.method, request.path[:200], err.status, err.message)
            return web.json_response({"error": err.message}, status=err.status)

    async def snapshot(self, request: web.Request) -> web.StreamResponse:
        async def make() -> web.StreamResponse:
            snap = await self.client.call(
                "GetSnapshot", pb.SnapshotRequest(id=_id_param(request.match_info["id"], "snapshot id"))
            )
            # private, not no-store: the browser may keep it for this page, no shared cache may.
            return web.Response(
                body=snap.jpeg, content_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"}
            )

        return await self._answer(request, make)

    async def boxes(self, request: web.Request) -> web.StreamResponse:
        async def make() -> web.StreamResponse:
            snap = await self.client.call(
                "GetSnapshot",
                pb.SnapshotRequest(id=_id_param(request.match_info["id"], "snapshot id"), without_image=True),
            )
            return web.json_response(boxes_json(snap))

        return await self._answer(request, make)

    async def history(self, request: web.Request) -> web.StreamResponse:
        async def make() -> web.StreamResponse:
            q = request.query
            camera = _id_param(q["camera"], "camera") if q.get("camera") else ""
            zone = _id_param(q["zone"], "zone") if q.get("zone") else ""
            since, until = _time_param(q, "since"), _time_param(q, "until")
            if since and until and since >= until:
                raise HouseholdError(400, "since must be before until")
            try:
                limit = int(q.get("limit") or 100)
            except ValueError:
                raise HouseholdError(400, "limit must be a whole number") from None
            if not 1 <= limit <= MAX_HISTORY:
                raise HouseholdError(400, f"limit must be 1 to {MAX_HISTORY}")
            found = await self.client.call(
                "QueryEvents", pb.EventQuery(device_id=camera, zone=zone, since_ms=since, until_ms=until, limit=limit)
            )
            return web.json_response({"events": [event_json(e) for e in found.events]})

        return await self._answer(request, make)

    async def timers(self, request: web.Request) -> web.StreamResponse:
        async def make() -> web.StreamResponse:
            return web.json_response(timers_json(await self.client.call("ListTimers", pb.TimersRequest())))

        return await self._answer(request, make)

    async def cancel(self, request: web.Request) -> web.StreamResponse:
        async def make() -> web.StreamResponse:
            if not self.same_origin(request):
                raise HouseholdError(403, "cross-site request refused")
            timer_id = _id_param(request.match_info["id"], "timer id")
            done = await self.client.call("CancelTimer", pb.CancelTimerRequest(id=timer_id))
            if not done.found:
                raise HouseholdError(404, f"no timer or reminder {timer_id}")
            log.info(
                "dashboard: %s %s cancelled%s", done.kind, timer_id, " (it was ringing)" if done.stopped_ringing else ""
            )
            return web.json_response({"id": timer_id, "kind": done.kind, "stopped_ringing": done.stopped_ringing})

        return await self._answer(request, make)
