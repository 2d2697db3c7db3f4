"""The dashboard's household panels (issue 24): alert snapshots, the event timeline, timers and reminders.

The data lives on the AI servers and comes over gRPC (the ``Household`` service, proto/naila/v1) on
channels of its own with the same HUB_AI_TLS_* credentials as the AI link (mTLS), one per server of
HUB_AI_SERVER. Routes, all behind the web login (401 without it); POSTs need a same-origin request:

* ``GET /api/alerts/{id}/snapshot``: the alert's JPEG (``id``: the alert's ``snapshot_id``, or a
  timeline event's ``media_id``); ``GET /api/alerts/{id}/boxes``: its size and boxes as JSON;
* ``GET /api/history?camera=&zone=&since=&until=&limit=``: the event timeline, newest first
  (``since``/``until``: ISO 8601 times);
* ``GET /api/timers``: running timers, reminders and what rings now;
* ``POST /api/timers``: set a timer (``{minutes, seconds, label, device_id}``) on the device's AI
  server: the same timer as a voice request, ringing on that device;
* ``POST /api/timers/{id}/cancel``: cancel one (a ringing one stops ringing).

Several AI servers: lists are asked of all and merged (a server that does not answer is left out);
a snapshot or a timer to cancel is looked for on each in turn. Bad ids or parameters answer 400
with a one-line error; no AI server reachable (or answering within :data:`CALL_TIMEOUT_S`) answers
503, counted in ``web_refused`` as ``ai_unreachable``. Live updates: :class:`TimerWatch` keeps one
``WatchTimers`` stream open per server and sends each merged list to the dashboards as the SSE
event ``timers``; the page counts down by itself from ``ends_at_ms`` (no event per second).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import grpc
from aiohttp import web

from hub.web.events import EventBus
from shared.backoff import Backoff
from shared.contract import TIMER_LABEL_MAX, TIMER_MAX_S, pb, pb_grpc
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
    """The Household service of every AI server in HUB_AI_SERVER (one grpc.aio channel each, made on
    first use); gRPC errors become HouseholdError.

    Lists (timers, events) are asked of every server at once and merged: the servers that do not
    answer are left out, and only when none answers is the request refused. An item (a snapshot, a
    timer to cancel) lives on one server: each is tried in turn until one has it.
    """

    def __init__(self, servers: Sequence[ClientSecurity], timeout_s: float = CALL_TIMEOUT_S) -> None:
        if not servers:
            raise ValueError("at least one AI server")
        self.servers = list(servers)
        self.timeout_s = timeout_s
        self._channels: dict[int, grpc.aio.Channel] = {}

    @property
    def targets(self) -> list[str]:
        return [s.target for s in self.servers]

    def stub(self, server: int = 0) -> pb_grpc.HouseholdStub:
        channel = self._channels.get(server)
        if channel is None:
            channel = self._channels[server] = self.servers[server].aio_channel()
        return pb_grpc.HouseholdStub(channel)

    async def call(self, method: str, request: Any, server: int = 0) -> Any:
        try:
            return await getattr(self.stub(server), method)(request, timeout=self.timeout_s)
        except grpc.aio.AioRpcError as err:
            raise _translate(err) from None

    async def each(self, method: str, request: Any) -> list[tuple[int, Any]]:
        """(server index, answer) of every server that answered; the first error when none did
        (a refusal before unreachability: a bad request is bad on every server)."""
        answers = await asyncio.gather(
            *(self.call(method, request, i) for i in range(len(self.servers))), return_exceptions=True
        )
        ok = [(i, a) for i, a in enumerate(answers) if not isinstance(a, BaseException)]
        if ok:
            return ok
        errors = [a for a in answers if isinstance(a, HouseholdError)]
        for a in answers:
            if not isinstance(a, HouseholdError) and isinstance(a, BaseException):
                raise a
        raise min(errors, key=lambda e: e.status == 503)

    async def first(
        self, method: str, request: Any, *, has: Callable[[Any], bool] = lambda _answer: True,
        order: Sequence[int] | None = None,
    ) -> tuple[int, Any]:
        """The first server (in ``order``, by default HUB_AI_SERVER's) whose answer ``has`` the item.
        None has it: 503 if a server did not answer (it may hold the item), else the last answer
        without it (e.g. ``found=False``) or 404."""
        last: tuple[int, Any] | None = None  # an answer without the item
        not_found: HouseholdError | None = None
        unreachable: HouseholdError | None = None
        for i in order if order is not None else range(len(self.servers)):
            try:
                answer = await self.call(method, request, i)
            except HouseholdError as err:
                if err.status == 404:
                    not_found = err
                elif err.status == 503:
                    unreachable = err
                else:
                    raise
                continue
            if has(answer):
                return i, answer
            last = (i, answer)
        if unreachable is not None:  # the item may be on the server that did not answer
            raise unreachable
        if last is not None:
            return last
        raise not_found or HouseholdError(404, "not found")

    async def close(self) -> None:
        channels, self._channels = list(self._channels.values()), {}
        for channel in channels:
            await channel.close()


def _translate(err: grpc.aio.AioRpcError) -> HouseholdError:
    code, details = err.code(), " ".join(str(err.details() or "").split())[:200]  # one line
    if code == grpc.StatusCode.NOT_FOUND:
        return HouseholdError(404, details or "not found")
    if code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION):
        return HouseholdError(400, details or "refused by the AI server")
    return HouseholdError(503, f"the AI server is unreachable ({code.name})")


def merge_timers(lists: Sequence[tuple[int, pb.TimerList, float]], now_ms: float) -> dict[str, object]:
    """One timer list from several servers' (index, list, hub wall ms when it arrived).

    Each server counts down on its own clock: its ``ends_at_ms`` are moved onto the hub's by that
    server's offset when its list arrived, and ``server_time_ms`` is the hub's, so the page corrects
    for one clock only. Ringing first, then soonest.
    """
    timers: list[dict[str, object]] = []
    for server, answer, received_ms in lists:
        offset = received_ms - answer.server_time_ms if answer.server_time_ms else 0.0
        for t in answer.timers:
            row = timer_json(t)
            if t.ends_at_ms:
                row["ends_at_ms"] = round(t.ends_at_ms + offset)
            row["server"] = server
            timers.append(row)
    timers.sort(key=lambda r: (not r["ringing"], r["ends_at_ms"] or float("inf"), str(r["id"])))
    # A server lists only the alarms it owns, but while a server is cut off from the broker its
    # alarms are adopted by another (docs/scale.md): then both list one alarm. Show it once, the
    # ringing copy first (the sort put it there), so a Cancel reaches the one that rings.
    unique: list[dict[str, object]] = []
    seen: set[object] = set()
    for row in timers:
        if row["id"] not in seen:
            seen.add(row["id"])
            unique.append(row)
    return {"timers": unique, "server_time_ms": round(now_ms), "reachable": bool(lists)}


class TimerWatch:
    """One WatchTimers stream per AI server, each redialled with backoff; after every list from any
    of them the merged list (:func:`merge_timers`) goes to the dashboards as ``timers``."""

    def __init__(
        self,
        client: HouseholdClient,
        bus: EventBus,
        *,
        backoff: Callable[[], Backoff] = lambda: Backoff(0.5, 15.0),
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        wall_ms: Callable[[], float] = lambda: time.time() * 1000,
    ) -> None:
        self.client = client
        self.bus = bus
        self.make_backoff = backoff
        self.sleep = sleep
        self.wall_ms = wall_ms
        self.latest: dict[str, object] | None = None  # the last merged list (None: never reached)
        self._lists: dict[int, tuple[int, pb.TimerList, float]] = {}  # server -> its last list
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._run(i), name=f"web-timer-watch-{i}") for i in range(len(self.client.servers))
        ]

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _publish(self) -> None:
        self.latest = merge_timers([self._lists[i] for i in sorted(self._lists)], self.wall_ms())
        self.bus.publish("timers", self.latest, dashboard_only=True)

    async def _run(self, server: int) -> None:
        backoff = self.make_backoff()
        while True:
            try:
                async for update in self.client.stub(server).WatchTimers(pb.TimersRequest()):
                    backoff.connected()
                    self._lists[server] = (server, update, self.wall_ms())
                    self._publish()
                log.info("dashboard: AI server %s ended the timer stream", self.client.targets[server])
            except grpc.aio.AioRpcError as err:
                log.debug("dashboard: timer stream of %s lost: %s", self.client.targets[server], err.code().name)
            except Exception as exc:  # the dashboard must not take the hub down
                log.warning("dashboard: timer stream of %s failed: %s", self.client.targets[server], one_line(exc))
            backoff.disconnected()
            if self._lists.pop(server, None) is not None:
                self._publish()  # its timers are gone from the page (the others stay)
            await self.sleep(backoff.next_delay())


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
        room_of: Callable[[str], str | None] = lambda _device: None,
        server_of: Callable[[str], str | None] = lambda _device: None,
    ) -> None:
        """``room_of``: a device's room (hub.rooms); ``server_of``: the AI server its turns go to
        (hub.ai_pool.AiPool.server_of), where a timer set for it must run to ring on it."""
        self.client = client
        self.refused = refused
        self.require = require
        self.same_origin = same_origin
        self.room_of = room_of
        self.server_of = server_of
        self.watch = TimerWatch(client, bus)

    def add_routes(self, app: web.Application) -> None:
        r = app.router
        r.add_get("/api/alerts/{id}/snapshot", self.snapshot)
        r.add_get("/api/alerts/{id}/boxes", self.boxes)
        r.add_get("/api/history", self.history)
        r.add_get("/api/timers", self.timers)
        r.add_post("/api/timers", self.set_timer)
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
            _, snap = await self.client.first(
                "GetSnapshot", pb.SnapshotRequest(id=_id_param(request.match_info["id"], "snapshot id"))
            )
            # private, not no-store: the browser may keep it for this page, no shared cache may.
            return web.Response(
                body=snap.jpeg, content_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"}
            )

        return await self._answer(request, make)

    async def boxes(self, request: web.Request) -> web.StreamResponse:
        async def make() -> web.StreamResponse:
            _, snap = await self.client.first(
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
            answers = await self.client.each(
                "QueryEvents", pb.EventQuery(device_id=camera, zone=zone, since_ms=since, until_ms=until, limit=limit)
            )
            # Every server's newest ``limit``, merged: the newest ``limit`` of them all.
            events = [{**event_json(e), "server": i} for i, found in answers for e in found.events]
            events.sort(key=lambda e: str(e["timestamp"]), reverse=True)
            return web.json_response({"events": events[:limit]})

        return await self._answer(request, make)

    async def timers(self, request: web.Request) -> web.StreamResponse:
        async def make() -> web.StreamResponse:
            answers = await self.client.each("ListTimers", pb.TimersRequest())
            now = time.time() * 1000
            return web.json_response(merge_timers([(i, a, now) for i, a in answers], now))

        return await self._answer(request, make)

    async def cancel(self, request: web.Request) -> web.StreamResponse:
        async def make() -> web.StreamResponse:
            if not self.same_origin(request):
                raise HouseholdError(403, "cross-site request refused")
            timer_id = _id_param(request.match_info["id"], "timer id")
            _, done = await self.client.first(
                "CancelTimer", pb.CancelTimerRequest(id=timer_id), has=lambda answer: bool(answer.found)
            )
            if not done.found:
                raise HouseholdError(404, f"no timer or reminder {timer_id}")
            log.info(
                "dashboard: %s %s cancelled%s", done.kind, timer_id, " (it was ringing)" if done.stopped_ringing else ""
            )
            return web.json_response({"id": timer_id, "kind": done.kind, "stopped_ringing": done.stopped_ringing})

        return await self._answer(request, make)

    async def set_timer(self, request: web.Request) -> web.StreamResponse:
        async def make() -> web.StreamResponse:
            if not self.same_origin(request):
                raise HouseholdError(403, "cross-site request refused")
            form = _timer_form(await _json_object(request))
            device_id = form.device_id
            room = self.room_of(device_id) or ""
            # The device's own AI server first (its ring goes out on that server's stream), then
            # the others in HUB_AI_SERVER's order if it does not answer.
            targets = self.client.targets
            owner = self.server_of(device_id)
            mine = targets.index(owner) if owner in targets else 0
            order = [mine, *(i for i in range(len(targets)) if i != mine)]
            request_pb = pb.SetTimerRequest(duration_s=form.seconds, label=form.label, device_id=device_id, room=room)
            server, timer = await self.client.first("SetTimer", request_pb, order=order)
            log.info("dashboard: timer %s (%d s) set to ring on %s", timer.id, form.seconds, device_id)
            return web.json_response({**timer_json(timer), "server": server}, status=201)

        return await self._answer(request, make)


MAX_TIMER_S: Final = TIMER_MAX_S
MAX_LABEL: Final = TIMER_LABEL_MAX


@dataclass(frozen=True, slots=True)
class TimerForm:
    seconds: int
    label: str
    device_id: str


async def _json_object(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise HouseholdError(400, "body must be JSON") from None
    if not isinstance(body, dict):
        raise HouseholdError(400, "body must be a JSON object")
    return body


def _whole(body: dict[str, Any], name: str) -> int:
    value = body.get(name, 0)
    if value in (None, ""):
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise HouseholdError(400, f"{name} must be a whole number, 0 or more")
    return value


def _timer_form(body: dict[str, Any]) -> TimerForm:
    """The page's ``{minutes, seconds, label, device_id}``, checked (a one-line error when bad)."""
    seconds = _whole(body, "minutes") * 60 + _whole(body, "seconds")
    if not 1 <= seconds <= MAX_TIMER_S:
        raise HouseholdError(400, "a timer is 1 second to 24 hours long")
    label = body.get("label") or ""
    if not isinstance(label, str) or len(label) > MAX_LABEL or not label.isprintable():
        raise HouseholdError(400, f"label must be 0-{MAX_LABEL} printable characters")
    device_id = body.get("device_id")
    if not isinstance(device_id, str) or not is_safe_id(device_id):
        raise HouseholdError(400, f"device_id (the device the timer rings on) must be {ID_RULE}")
    return TimerForm(seconds, " ".join(label.split()), device_id)
