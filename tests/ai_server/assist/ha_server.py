"""A local server that speaks Home Assistant's documented REST API, for tests.

A real Home Assistant core does not install here (current releases need Python >= 3.14), so
this serves the endpoints NAILA uses, over real HTTP, with their documented shapes
(https://developers.home-assistant.io/docs/api/rest/): bearer-token auth (401 without it),
GET /api/states and /api/states/<entity_id> (404 unknown), POST /api/services/<domain>/<service>
that really changes the states and answers the changed ones, POST /api/template rendered with
Jinja2 and HA's areas()/area_entities()/area_name() functions, and POST /api/conversation/process.
"""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from jinja2.sandbox import ImmutableSandboxedEnvironment

TOKEN = "test-long-lived-token"
_COLORS = {"red": [255, 0, 0], "green": [0, 128, 0], "blue": [0, 0, 255], "white": [255, 255, 255]}
_ON_OFF_DOMAINS = {"light", "switch", "fan", "input_boolean", "media_player", "climate"}


@dataclass
class Area:
    name: str
    entities: list[str] = field(default_factory=list)


class FakeHomeAssistant:
    """States, areas and the service calls received; ``hang`` makes every request wait (timeouts)."""

    def __init__(self, token: str = TOKEN) -> None:
        self.token = token
        self.states: dict[str, dict[str, Any]] = {}
        self.areas: dict[str, Area] = {}
        self.calls: list[tuple[str, str, dict[str, Any]]] = []
        self.conversations: list[dict[str, Any]] = []
        self.requests = 0
        self.hang = asyncio.Event()  # set: requests never answer
        self.url = ""

    def add(self, entity_id: str, state: str, name: str, area: str | None = None, **attributes: Any) -> None:
        now = dt.datetime.now(dt.UTC).isoformat()
        self.states[entity_id] = {
            "entity_id": entity_id, "state": state, "attributes": {"friendly_name": name, **attributes},
            "last_changed": now, "last_updated": now, "context": {"id": "x", "parent_id": None, "user_id": None},
        }
        if area is not None:
            self.areas.setdefault(area, Area(area.replace("_", " ").title())).entities.append(entity_id)

    def state(self, entity_id: str) -> str:
        return str(self.states[entity_id]["state"])

    def attr(self, entity_id: str, name: str) -> Any:
        return self.states[entity_id]["attributes"].get(name)

    # --- HTTP ----------------------------------------------------------------------------------

    @web.middleware
    async def _auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.requests += 1
        if self.hang.is_set():
            await asyncio.Event().wait()  # until the client gives up
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return web.Response(status=401, text="401: Unauthorized")
        response: web.StreamResponse = await handler(request)
        return response

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._auth])
        app.router.add_get("/api/", self._api)
        app.router.add_get("/api/states", self._all_states)
        app.router.add_get("/api/states/{entity_id}", self._one_state)
        app.router.add_post("/api/services/{domain}/{service}", self._service)
        app.router.add_post("/api/template", self._template)
        app.router.add_post("/api/conversation/process", self._conversation)
        return app

    async def _api(self, request: web.Request) -> web.Response:
        return web.json_response({"message": "API running."})

    async def _all_states(self, request: web.Request) -> web.Response:
        return web.json_response(list(self.states.values()))

    async def _one_state(self, request: web.Request) -> web.Response:
        obj = self.states.get(request.match_info["entity_id"])
        if obj is None:
            return web.json_response({"message": "Entity not found."}, status=404)
        return web.json_response(obj)

    async def _template(self, request: web.Request) -> web.Response:
        body = await request.json()
        env = ImmutableSandboxedEnvironment()

        def area_id(spoken: str) -> str | None:
            for aid, area in self.areas.items():
                if spoken in (aid, area.name):
                    return aid
            return None

        env.globals.update(
            areas=lambda: list(self.areas),
            area_name=lambda a: self.areas[aid].name if (aid := area_id(a)) else None,
            area_entities=lambda a: list(self.areas[aid].entities) if (aid := area_id(a)) else [],
        )
        try:
            text = env.from_string(body["template"]).render()
        except Exception as exc:  # HA answers a template error with 400 and the message
            return web.json_response({"message": f"Error rendering template: {exc}"}, status=400)
        return web.Response(text=text, content_type="text/plain")

    async def _service(self, request: web.Request) -> web.Response:
        domain, service = request.match_info["domain"], request.match_info["service"]
        data = await request.json() if request.can_read_body else {}
        ids = data.get("entity_id", [])
        ids = [ids] if isinstance(ids, str) else list(ids)
        self.calls.append((domain, service, data))
        changed = []
        for entity_id in ids:
            obj = self.states.get(entity_id)
            if obj is None or not entity_id.startswith(domain + ".") or obj["state"] == "unavailable":
                continue  # HA logs and skips unknown or unavailable entities
            before = copy.deepcopy(obj)
            if not self._apply(domain, service, obj, data):
                return web.json_response({"message": f"Service {domain}.{service} not found."}, status=400)
            if obj != before:
                obj["last_updated"] = dt.datetime.now(dt.UTC).isoformat()
                changed.append(obj)
        return web.json_response(changed)

    @staticmethod
    def _apply(domain: str, service: str, obj: dict[str, Any], data: dict[str, Any]) -> bool:
        attrs = obj["attributes"]
        if domain in _ON_OFF_DOMAINS and service in ("turn_on", "turn_off"):
            obj["state"] = "on" if service == "turn_on" else "off"
            if domain == "media_player":
                obj["state"] = "idle" if service == "turn_on" else "off"
            if domain == "light" and service == "turn_on":
                if "brightness_pct" in data:
                    attrs["brightness"] = round(float(data["brightness_pct"]) * 255 / 100)
                if "color_name" in data:
                    attrs["rgb_color"] = _COLORS.get(data["color_name"], [1, 2, 3])
                if "color_temp_kelvin" in data:
                    attrs["color_temp_kelvin"] = data["color_temp_kelvin"]
            return True
        cover = {"open_cover": "open", "close_cover": "closed", "open_valve": "open", "close_valve": "closed"}
        if domain in ("cover", "valve") and service in cover:
            obj["state"] = cover[service]
            attrs["current_position"] = 100 if obj["state"] == "open" else 0
            return True
        if domain in ("cover", "valve") and service == f"set_{domain}_position":
            attrs["current_position"] = int(data["position"])
            obj["state"] = "open" if attrs["current_position"] > 0 else "closed"
            return True
        if domain == "lock" and service in ("lock", "unlock"):
            obj["state"] = "locked" if service == "lock" else "unlocked"
            return True
        if domain == "climate" and service == "set_temperature":
            attrs["temperature"] = float(data["temperature"])
            return True
        media = {"media_pause": "paused", "media_play": "playing"}
        if domain == "media_player" and service in media:
            obj["state"] = media[service]
            return True
        if domain == "media_player" and service == "volume_set":
            attrs["volume_level"] = float(data["volume_level"])
            return True
        if domain == "media_player" and service == "volume_mute":
            attrs["is_volume_muted"] = bool(data["is_volume_muted"])
            return True
        return domain == "media_player" and service in ("media_next_track", "media_previous_track",
                                                        "volume_up", "volume_down")

    async def _conversation(self, request: web.Request) -> web.Response:
        body = await request.json()
        if "conversation_id" in body and not isinstance(body["conversation_id"], str):
            return web.json_response({"message": "Message format incorrect: conversation_id"}, status=400)
        self.conversations.append(body)
        if "weather" in str(body.get("text", "")):
            response = {"response_type": "query_answer", "language": body.get("language", "en"),
                        "speech": {"plain": {"speech": "It is sunny and 18 degrees.", "extra_data": None}},
                        "data": {"targets": [], "success": [], "failed": []}}
        else:
            response = {"response_type": "error", "language": body.get("language", "en"),
                        "speech": {"plain": {"speech": "Sorry, I couldn't understand that", "extra_data": None}},
                        "data": {"code": "no_intent_match"}}
        return web.json_response({"response": response, "conversation_id": "01J0000000000000000000000",
                                  "continue_conversation": False})


@asynccontextmanager
async def serve(ha: FakeHomeAssistant) -> AsyncIterator[FakeHomeAssistant]:
    """Serve ``ha`` on a free loopback port; ``ha.url`` is its base URL."""
    runner = web.AppRunner(ha.app(), shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    ha.url = f"http://127.0.0.1:{port}"
    try:
        yield ha
    finally:
        ha.hang.clear()
        await runner.cleanup()


def household() -> FakeHomeAssistant:
    """A small home: two kitchen lights, a living room with a lamp, TV and thermostat, a front door
    lock, a garage door, an unavailable hall light and a kitchen temperature sensor."""
    ha = FakeHomeAssistant()
    ha.add("light.kitchen_ceiling", "off", "Kitchen Ceiling", "kitchen", brightness=None)
    ha.add("light.kitchen_counter", "off", "Kitchen Counter", "kitchen")
    ha.add("sensor.kitchen_temperature", "21.5", "Kitchen Temperature", "kitchen",
           unit_of_measurement="°C", device_class="temperature")
    ha.add("light.living_room_lamp", "on", "Living Room Lamp", "living_room")
    ha.add("media_player.living_room_tv", "playing", "Living Room TV", "living_room", volume_level=0.5)
    ha.add("climate.thermostat", "heat", "Thermostat", "living_room", current_temperature=20.0, temperature=21.0)
    ha.add("lock.front_door", "locked", "Front Door", "hallway")
    ha.add("light.hall", "unavailable", "Hall Light", "hallway")
    ha.add("cover.garage_door", "closed", "Garage Door", "garage", device_class="garage", current_position=0)
    ha.add("sun.sun", "above_horizon", "Sun")  # not a spoken domain: never in the name list
    ha.areas.setdefault("office", Area("Office"))  # an area with nothing in it
    return ha
