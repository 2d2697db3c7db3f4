"""GET /health, /metrics and /turns: what the hub is doing, for people, Prometheus and tests."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from hub.metrics import HubMetrics
from hub.turns import TurnLog


def add_status_routes(app: web.Application, metrics: HubMetrics, turns: TurnLog) -> None:
    async def health(request: web.Request) -> web.Response:
        body = metrics.health()
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
