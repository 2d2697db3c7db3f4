"""GET /health (?detail=1 adds devices, rooms and cameras), /metrics and /turns: for people, Prometheus and tests.

Plain ``/health`` is public and carries the spec's nine counters only. Everything else here
tells a listener what the household said and whether (and where) someone is home: the last
transcripts, live mic levels, person detections. Those answer only to the web login or
``HUB_METRICS_TOKEN`` (hub.web.auth.ReadAccess), and with neither configured to nobody (H2).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from hub.metrics import HubMetrics
from hub.turns import TurnLog
from hub.web.auth import ReadAccess

log = logging.getLogger("naila.hub.status")

_MAX_WARNED = 256  # peers whose first refused read was logged at WARNING (later ones at DEBUG)


def add_status_routes(
    app: web.Application,
    metrics: HubMetrics,
    turns: TurnLog,
    devices: Callable[[], list[dict[str, Any]]] = list,
    vision: Callable[[], dict[str, Any]] | None = None,
    *,
    access: ReadAccess,
    ai_servers: Callable[[], list[dict[str, Any]]] | None = None,
) -> None:
    warned: set[str] = set()

    def refusal(request: web.Request) -> web.Response | None:
        """None when the request may read; else the 401 to answer with (no data in it)."""
        if access.allowed(request):
            return None
        what = f"GET {request.path}" + ("?detail=1" if request.path == "/health" else "")
        if access.enabled:
            text = (
                f"{what} needs the web login (its cookie, or 'Authorization: Bearer <HUB_WEB_TOKEN>') "
                "or 'Authorization: Bearer <HUB_METRICS_TOKEN>'"
            )
        else:
            text = f"{what} is off: neither HUB_WEB_TOKEN nor HUB_METRICS_TOKEN is set on the hub"
        metrics.web_refused["data_unauthorized"] += 1
        peer = request.remote or "?"
        # A scraper without its token would otherwise fill the journal every 15 s.
        if peer not in warned and len(warned) < _MAX_WARNED:
            warned.add(peer)
            log.warning("%s from %s refused (401): %s", what, peer, text)
        else:
            log.debug("%s from %s refused (401)", what, peer)
        return web.json_response({"error": text}, status=401, headers={"WWW-Authenticate": 'Bearer realm="naila-hub"'})

    async def health(request: web.Request) -> web.Response:
        body: dict[str, Any] = dict(metrics.health())
        # The spec's nine fields exactly; ?detail=1 adds the connected devices with their rooms,
        # and the vision pipeline (its AI stream, each camera's gate counters and last result).
        if request.query.get("detail") in ("1", "true", "yes"):
            if (denied := refusal(request)) is not None:
                return denied
            body["devices"] = devices()
            if vision is not None:
                body["vision"] = vision()
            if ai_servers is not None:  # each AI server of HUB_AI_SERVER: its stream, status, devices on it
                body["ai_servers"] = ai_servers()
        # 503 while the AI server is unreachable: the hub is up but cannot answer anyone.
        return web.json_response(body, status=200 if body["status"] == "ok" else 503)

    async def prometheus(request: web.Request) -> web.Response:
        if (denied := refusal(request)) is not None:
            return denied
        return web.Response(body=metrics.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def recent_turns(request: web.Request) -> web.Response:
        if (denied := refusal(request)) is not None:
            return denied
        device = request.query.get("device_id") or None
        return web.json_response([t.to_json() for t in turns.recent(device)])

    app.router.add_get("/health", health)
    app.router.add_get("/metrics", prometheus)
    app.router.add_get("/turns", recent_turns)
