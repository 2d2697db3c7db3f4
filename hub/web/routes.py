"""The hub's web app: a browser device at ``/``, the dashboard at ``/dashboard``, their API.

Routes (all but /login and /static need a login, see hub.web.auth):

* ``GET /`` device page, ``GET /dashboard``; ``GET|POST /login``, ``POST /logout``;
* ``POST /api/device-token`` {device_id?, room?} -> {device_id, token}: a browser device's
  id and its bearer token for ``POST /connect``;
* ``GET /api/events`` (dashboard) and ``GET /api/events?device_id=web-..`` (device page):
  server-sent events (hub.web.events, hub.web.state);
* ``GET /api/state``, ``GET /api/alerts?zone=&type=``: the same data as JSON;
* ``POST /api/upload`` (multipart: image, question, session_id): an image question through
  MQTT (hub.web.upload);
* ``GET /api/cameras``: each streaming camera's tile (view version, zone, last motion, boxes);
  ``GET /api/cameras/{device_id}/view``: its latest view as JPEG (hub.vision.views);
* ``POST /api/devices/{device_id}/control`` {command: camera|microphone|mute, enabled|muted}:
  the same MQTT command as voice (hub.web.controls).
* ``GET /api/alerts/{id}/snapshot|boxes``, ``GET /api/history``, ``GET /api/timers``,
  ``POST /api/timers/{id}/cancel``: alert snapshots, the event timeline, timers and reminders
  from the AI server over gRPC (hub.web.household).

Without ``HUB_WEB_TOKEN`` none of this is served: the pages answer 503 with how to turn it on.
Every web response carries a strict Content-Security-Policy (``default-src 'self'``, no inline
script); the pages build their DOM with textContent only.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, Protocol, cast, runtime_checkable
from urllib.parse import urlsplit

from aiohttp import BodyPartReader, web

from hub.device_status import DeviceStatusFeed
from hub.metrics import HubMetrics
from hub.rooms import RoomDirectory
from hub.turns import TurnLog
from hub.web.auth import BROWSER_ID_RE, COOKIE_NAME, DeviceTokenTable, ReadAccess, WebAuth, new_browser_id
from hub.web.controls import ControlError, parse_control, send_control
from hub.web.events import EventBus, stream_events
from hub.web.household import HouseholdClient, HouseholdRoutes
from hub.web.proxy import ProxyView, limit_key
from hub.web.state import MQTT_FILTERS, AiStatusClient, CameraSource, DashboardState, SessionView
from hub.web.upload import IMAGE_FORMATS, Publisher, UploadBridge, UploadError
from shared.config import HubSettings, MediaSettings, load
from shared.grpc_security import hub_client
from shared.mqtt import is_safe_segment, topics
from shared.mqtt.limits import MAX_TEXT_LEN
from shared.rate_limit import RateLimiter

log = logging.getLogger("naila.hub.web")

STATIC_DIR = Path(__file__).parent / "static"
PAGES = {"/": "device.html", "/dashboard": "dashboard.html"}
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Permissions-Policy": "microphone=(self), camera=(), geolocation=()",
}
WEB_PATHS = ("/", "/dashboard", "/login", "/logout")
WEB_PREFIXES = ("/api/", "/static/")
DISABLED_TEXT = "The hub's web app is off: set HUB_WEB_TOKEN (16+ characters) and restart the hub.\n"
UPLOAD_FORM_SLACK = 64 * 1024  # multipart headers and the text fields around the image
MAX_FORM_PARTS = 16  # image, question, session_id and a few a browser may add; more is not a form
KNOWN_CLIENTS = 256  # addresses that logged in successfully, exempt from the global login limit


class WebHost(Protocol):
    """What the web app needs from the hub (hub.server.Hub)."""

    settings: HubSettings
    metrics: HubMetrics
    turns: TurnLog
    rooms: RoomDirectory  # the one room registry: the dashboard reads it, browser pages write it
    device_status: DeviceStatusFeed  # device statuses, decoded once

    @property
    def sessions(self) -> Mapping[str, SessionView]: ...


@runtime_checkable
class ViewSource(Protocol):
    """The camera views' JPEGs (hub.vision.VisionService.view_jpeg)."""

    async def view_jpeg(self, device_id: str) -> bytes | None: ...


class MqttPort(Publisher, Protocol):
    """The hub's MQTT component (hub.mqtt_control.HubMqtt) as the web app uses it."""

    def add_listener(
        self, topic_filter: str, handler: Callable[[str, bytes], Awaitable[None]]
    ) -> Callable[[], None]: ...


def device_tokens(settings: HubSettings) -> dict[str, str]:
    """The token table for POST /connect: HUB_DEVICE_TOKENS, plus browser devices' tokens when the web app is on."""
    if settings.hub_web_token is None:
        return settings.hub_device_tokens
    auth = WebAuth(settings.hub_web_token.get_secret_value(), settings.hub_web_session_hours * 3600)
    return DeviceTokenTable(settings.hub_device_tokens, auth)


def _is_web_path(path: str) -> bool:
    return path in WEB_PATHS or path.startswith(WEB_PREFIXES)


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    if _is_web_path(request.path):
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        if request.path.startswith("/api/") or request.path in PAGES:
            response.headers.setdefault("Cache-Control", "no-store")


def _same_origin(request: web.Request) -> bool:
    """A cross-site POST is refused even before the SameSite cookie rule (defence in depth).
    Browsers always send Origin on POST; a script without one must use the bearer token."""
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    return urlsplit(origin).netloc == request.host


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


class WebApp:
    """Handlers and state of the web app for one hub."""

    def __init__(self, host: WebHost, token: str, mqtt: MqttPort | None) -> None:
        s = host.settings
        self.host = host
        self.auth = WebAuth(token, s.hub_web_session_hours * 3600)
        self.bus = EventBus()
        self.mqtt = mqtt
        self._ai_status = AiStatusClient(hub_client(s))  # HUB_AI_TLS_*, like the AI link
        self.state = DashboardState(
            self.bus,
            host.metrics,
            host.turns,
            host.sessions,
            hub_instance=secrets.token_hex(6),
            ai_status=self._ai_status,
            mqtt_connected=(lambda: mqtt.connected) if mqtt is not None else (lambda: None),
            rooms=host.rooms,
            statuses=host.device_status,
            # hub.vision.VisionService when HUB_VISION is on (test hosts may have none).
            cameras=cast(CameraSource | None, getattr(host, "vision", None)),
        )
        # The same limits as uploads arriving over MQTT (MEDIA_MAX_UPLOAD_SIZE, the image formats),
        # narrowed to the still-image formats a browser question needs.
        media = load(MediaSettings)
        self.uploads = UploadBridge(
            mqtt,
            timeout_s=s.hub_web_upload_timeout_s,
            max_bytes=media.media_max_upload_size,
            formats=tuple(f for f in IMAGE_FORMATS if f in media.media_supported_image_formats),
        )
        # The client address and scheme as a trusted reverse proxy saw them (HUB_TRUSTED_PROXIES).
        self.proxy = ProxyView(s.hub_trusted_proxies)
        self._tls = bool(s.hub_tls_cert)
        # Password guessing: 5 tries at once, then one every 12 s, per client address (IPv6: per /64).
        self.login_limiter = RateLimiter(rate_per_s=1 / 12, burst=5)
        # And for everybody together, so many addresses cannot multiply the guessing rate. It
        # would let a flood lock the owner out, so addresses that have logged in before skip it:
        # their own per-address budget is all that applies to them.
        self.global_login_limiter = RateLimiter(rate_per_s=1 / 3, burst=20)
        self._known_clients: dict[str, None] = {}  # insertion-ordered: the oldest is forgotten first
        self.upload_limiter = RateLimiter(rate_per_s=1 / 6, burst=5)
        # Alert snapshots, the event timeline, timers and reminders: from every AI server over gRPC (issue 24).
        pool = getattr(host, "link", None)  # hub.ai_pool.AiPool (test hosts may have none)
        self.household = HouseholdRoutes(
            HouseholdClient([hub_client(s, t) for t in s.ai_servers]),
            self.bus,
            host.metrics.web_refused,
            require=self._require,
            same_origin=_same_origin,
            room_of=host.rooms.room_of,
            server_of=getattr(pool, "server_of", lambda _device: None),
        )
        self.control_limiter = RateLimiter(rate_per_s=2, burst=10)  # per client: clicks, not a script
        if mqtt is not None:
            for topic_filter in MQTT_FILTERS:
                mqtt.add_listener(topic_filter, self.state.on_mqtt)
            mqtt.add_listener(topics.ALL_CHAT_REPLIES, self.uploads.on_mqtt)

    # ----- wiring -----

    def add_routes(self, app: web.Application) -> None:
        r = app.router
        r.add_get("/", self.page)
        r.add_get("/dashboard", self.page)
        r.add_get("/login", self.login_page)
        r.add_post("/login", self.login)
        r.add_post("/logout", self.logout)
        r.add_get("/api/me", self.me)
        r.add_post("/api/device-token", self.device_token)
        r.add_get("/api/events", self.events)
        r.add_get("/api/state", self.api_state)
        r.add_get("/api/alerts", self.api_alerts)
        r.add_post("/api/upload", self.upload)
        self.household.add_routes(app)
        r.add_get("/api/cameras", self.api_cameras)
        r.add_get("/api/cameras/{device_id}/view", self.camera_view)
        r.add_post("/api/devices/{device_id}/control", self.control)
        r.add_static("/static/", STATIC_DIR, follow_symlinks=False, show_index=False)
        app.on_startup.append(self._on_startup)
        app.on_shutdown.append(self._on_shutdown)

    async def _on_startup(self, app: web.Application) -> None:
        self.state.start()
        self.household.start()

    async def _on_shutdown(self, app: web.Application) -> None:
        # Before aiohttp waits for open handlers: end the event streams and the waiting uploads.
        self.bus.close_all()
        self.uploads.close()
        await self.state.stop()
        self._ai_status.close()
        await self.household.stop()

    def _authorized(self, request: web.Request) -> bool:
        return self.auth.authenticated(request)

    def _require(self, request: web.Request) -> None:
        if not self._authorized(request):
            raise web.HTTPUnauthorized(
                text=json.dumps({"error": "log in at /login (or send the web token as a bearer token)"}),
                content_type="application/json",
            )

    # ----- pages and login -----

    async def page(self, request: web.Request) -> web.StreamResponse:
        if not self._authorized(request):
            raise web.HTTPSeeOther(f"/login?next={request.path}")
        return web.FileResponse(STATIC_DIR / PAGES[request.path])

    async def login_page(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC_DIR / "login.html")

    async def login(self, request: web.Request) -> web.StreamResponse:
        if not _same_origin(request):
            return _error(403, "cross-site login refused")
        client = self.proxy.client(request)
        key = limit_key(client)
        if not self.login_limiter.allow(key):
            self.host.metrics.web_refused["login_limited"] += 1
            log.warning("web login from %s: too many tries", client)
            return _error(429, "too many login attempts; wait a minute")
        if key not in self._known_clients and not self.global_login_limiter.allow("*"):
            self.host.metrics.web_refused["login_limited_global"] += 1
            log.warning("web login from %s: too many tries from everyone together", client)
            return _error(429, "too many login attempts on this hub; wait a minute")
        form = await request.post()
        token = form.get("token")
        target = form.get("next")
        target = target if isinstance(target, str) and target in PAGES else "/"
        if not isinstance(token, str) or not self.auth.check_web_token(token):
            log.warning("web login from %s refused: wrong token", client)
            raise web.HTTPSeeOther(f"/login?failed=1&next={target}")
        log.info("web login from %s", client)
        self._known_clients.pop(key, None)
        self._known_clients[key] = None
        if len(self._known_clients) > KNOWN_CLIENTS:
            del self._known_clients[next(iter(self._known_clients))]
        resp = web.HTTPSeeOther(target)
        resp.set_cookie(
            COOKIE_NAME,
            self.auth.mint_cookie(),
            max_age=int(self.auth.session_s),
            httponly=True,
            samesite="Strict",
            # The browser's scheme, not ours: behind a TLS proxy the hub itself speaks plain HTTP.
            secure=self._tls or self.proxy.secure(request),
            path="/",
        )
        raise resp

    async def logout(self, request: web.Request) -> web.StreamResponse:
        if not _same_origin(request):
            return _error(403, "cross-site request refused")
        # Revoked on the server too: a copy of this cookie taken earlier stops working now.
        if self.auth.revoke_cookie(request.cookies.get(COOKIE_NAME)):
            log.info("web logout from %s", self.proxy.client(request))
        resp = web.HTTPSeeOther("/login")
        resp.del_cookie(COOKIE_NAME, path="/")
        raise resp

    # ----- API -----

    async def me(self, request: web.Request) -> web.Response:
        self._require(request)
        return web.json_response({"authenticated": True, "hub_instance": self.state.hub_instance})

    async def device_token(self, request: web.Request) -> web.Response:
        self._require(request)
        if not _same_origin(request):
            return _error(403, "cross-site request refused")
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return _error(400, "body must be JSON")
        if not isinstance(body, dict):
            return _error(400, "body must be a JSON object")
        device_id = body.get("device_id")
        if device_id is None or device_id == "":
            device_id = new_browser_id()
        if not isinstance(device_id, str) or not BROWSER_ID_RE.fullmatch(device_id):
            return _error(400, "device_id must be 'web-' and 1-60 of A-Z a-z 0-9 _ . -")
        room = body.get("room") or None
        if room is not None and not is_safe_segment(room):
            return _error(400, "room must be 1-64 of A-Z a-z 0-9 _ . -")
        self.state.set_browser_room(device_id, cast(str | None, room))
        return web.json_response({"device_id": device_id, "token": self.auth.device_token(device_id), "room": room})

    async def events(self, request: web.Request) -> web.StreamResponse:
        self._require(request)
        device_id = request.query.get("device_id") or None
        if device_id is not None and not BROWSER_ID_RE.fullmatch(device_id) and not is_safe_segment(device_id):
            return _error(400, "bad device_id")
        return await stream_events(
            request,
            self.bus,
            device_id,
            lambda: self.state.initial_events(device_id),
            still_allowed=lambda: self._authorized(request),
        )

    async def api_state(self, request: web.Request) -> web.Response:
        self._require(request)
        return web.json_response(self.state.snapshot())

    async def api_alerts(self, request: web.Request) -> web.Response:
        self._require(request)
        zone = request.query.get("zone") or None
        alert_type = request.query.get("type") or None
        return web.json_response(list(self.state.alerts_matching(zone, alert_type)))

    async def api_cameras(self, request: web.Request) -> web.Response:
        self._require(request)
        return web.json_response(self.state.camera_list())

    async def camera_view(self, request: web.Request) -> web.Response:
        """A camera's latest view: only with the login (no-store, like every /api/ answer)."""
        self._require(request)
        device_id = request.match_info["device_id"]
        cameras = self.state.cameras
        jpeg = await cameras.view_jpeg(device_id) if isinstance(cameras, ViewSource) else None
        if jpeg is None:
            return _error(404, "no view of that camera (it is not streaming, or has sent no frame yet)")
        return web.Response(body=jpeg, content_type="image/jpeg")

    async def control(self, request: web.Request) -> web.Response:
        self._require(request)
        if not _same_origin(request):
            return _error(403, "cross-site request refused")
        device_id = request.match_info["device_id"]
        client = self.proxy.client(request)
        try:
            if device_id not in self.state.devices or not is_safe_segment(device_id):
                raise ControlError(404, "no such device")
            if not self.control_limiter.allow(limit_key(client)):
                raise ControlError(429, "too many device controls; wait a moment")
            try:
                body = await request.json()
            except (json.JSONDecodeError, UnicodeDecodeError):
                raise ControlError(400, "body must be JSON") from None
            command, params = parse_control(body)
            request_id = await send_control(self.mqtt, device_id, command, params)
        except ControlError as err:
            self.host.metrics.web_refused[f"control_{err.status}"] += 1
            log.info("web control from %s for %r refused: %s", client, device_id[:80], err.message)
            return _error(err.status, err.message)
        # 202: sent; the page shows the change when the device's status confirms it.
        return web.json_response({"request_id": request_id, "command": command, **params}, status=202)

    async def upload(self, request: web.Request) -> web.Response:
        self._require(request)
        if not _same_origin(request):
            return _error(403, "cross-site request refused")
        limit = self.uploads.max_bytes
        if request.content_length is not None and request.content_length > limit + UPLOAD_FORM_SLACK:
            return _error(413, f"image over {limit} bytes")
        try:
            fields = await _read_upload_form(request, limit)
            session_id = fields.get("session_id") or "web-dashboard"
            if not isinstance(session_id, str) or not BROWSER_ID_RE.fullmatch(session_id):
                raise UploadError(400, "session_id must be a browser device id (web-...)")
            image = fields.get("image")
            if not isinstance(image, bytes) or not image:
                raise UploadError(400, "no image in the form (field 'image')")
            question = str(fields.get("question") or "").strip() or "What is in this picture?"
            self.uploads.check(image)
            # Counted only for uploads that would reach the AI server: each costs it a vision run.
            if not self.upload_limiter.allow(limit_key(self.proxy.client(request))):
                raise UploadError(429, "too many image questions; wait a little")
            result = await self.uploads.ask(session_id, image, question, cast(str | None, fields.get("filename")))
        except UploadError as err:
            self.host.metrics.web_refused[f"upload_{err.status}"] += 1
            log.info("web upload from %s refused: %s", self.proxy.client(request), err.message)
            return _error(err.status, err.message)
        if result["error"] and not result["answer"]:
            # The AI server refused or failed (its ChatReply has an error and no text): not an answer.
            return web.json_response(result, status=502)
        return web.json_response(result)


async def _read_upload_form(request: web.Request, max_image_bytes: int) -> dict[str, Any]:
    """Stream the multipart form, stopping as soon as the image passes the limit."""
    if not request.content_type.startswith("multipart/"):
        raise UploadError(400, "send the image as multipart/form-data")
    fields: dict[str, Any] = {}
    reader = await request.multipart()
    parts = 0
    while (part := await reader.next()) is not None:
        parts += 1
        if parts > MAX_FORM_PARTS:
            raise UploadError(400, f"more than {MAX_FORM_PARTS} form fields")
        if not isinstance(part, BodyPartReader):
            raise UploadError(400, "nested multipart is not accepted")
        if part.name == "image":
            data = bytearray()
            while chunk := await part.read_chunk(65536):
                data += chunk
                if len(data) > max_image_bytes:
                    raise UploadError(413, f"image over {max_image_bytes} bytes")
            fields["image"] = bytes(data)
            fields["filename"] = part.filename
        elif part.name in ("question", "session_id"):
            # Chunk by chunk with a limit: a chunked request has no Content-Length to check first,
            # and part.read() would hold whatever the client sends.
            limit = MAX_TEXT_LEN * 4  # UTF-8: up to 4 bytes a character
            text = bytearray()
            while chunk := await part.read_chunk(8192):
                text += chunk
                if len(text) > limit:
                    raise UploadError(400, f"{part.name} over {limit} bytes")
            # Raw, like the image: RFC 7578 deprecates Content-Transfer-Encoding and browsers never send it.
            fields[part.name] = text.decode("utf-8", errors="replace")[:MAX_TEXT_LEN]
        else:
            await part.release()
    return fields


def read_access(settings: HubSettings, web_app: WebApp | None) -> ReadAccess:
    """Who may read /turns, /health?detail=1 and /metrics: the web app's login (the same cookies,
    so a logout revokes those reads too) or HUB_METRICS_TOKEN."""
    token = settings.hub_metrics_token
    return ReadAccess(
        web_app.auth if web_app is not None else None, token.get_secret_value() if token is not None else None
    )


def add_web_app(app: web.Application, host: WebHost) -> WebApp | None:
    """Add the web app's routes to the hub's application (or the 'it is off' pages). Returns it, or None."""
    app.on_response_prepare.append(_security_headers)
    token = host.settings.hub_web_token
    if token is None:
        log.warning("web app off: HUB_WEB_TOKEN is not set (/, /dashboard and /api/ answer 503)")

        async def disabled(request: web.Request) -> web.Response:
            return web.Response(status=503, text=DISABLED_TEXT)

        for path in ("/", "/dashboard", "/login"):
            app.router.add_get(path, disabled)
        return None
    # The hub's MQTT component (hub.mqtt_control), when it has one (HUB_MQTT).
    mqtt = cast(MqttPort | None, getattr(host, "mqtt", None))
    web_app = WebApp(host, token.get_secret_value(), mqtt)
    web_app.add_routes(app)
    log.info(
        "web app on: device page /, dashboard /dashboard (login with HUB_WEB_TOKEN)%s",
        "" if mqtt is not None else "; no MQTT: device statuses, alerts and image questions unavailable",
    )
    return web_app
