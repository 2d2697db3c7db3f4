"""GET /health (?detail=1 adds devices, rooms and cameras), /metrics and /turns: for people, Prometheus and tests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from hub.metrics import HubMetrics
from hub.turns import TurnLog


def add_status_routes(
    app: web.Application,
    metrics: HubMetrics,
    turns: TurnLog,
    devices: Callable[[], list[dict[str, Any]]] = list,
    vision: Callable[[], dict[str, Any]] | None = None,
) -> None:
    async def health(request: web.Request) -> web.Response:
        body: dict[str, Any] = dict(metrics.health())
        # The spec's nine fields exactly; ?detail=1 adds the connected devices with their rooms,
        # and the vision pipeline (its AI stream, each camera's gate counters and last result).
        if request.query.get("detail") in ("1", "true", "yes"):
            body["devices"] = devices()
            if vision is not None:
                body["vision"] = vision()
        # 503 while the AI server is unreachable: the hub is up but cannot answer anyone.
        return web.json_response(body, status=200 if body["status"] == "ok" else 503)

    async def prometheus(request: web.Request) -> web.Response:
        return web.Response(body=metrics.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def recent_turns(request: web.Request) -> web.Response:
        device = request.query.get("device_id") or None
        return web.json_response([t.to_json() for t in turns.recent(device)])

    app.router.add_get("/health", health)
    app.router.add_get("/metrics", prometheus)
    app.router.add_get("/turns", recent_turns)
