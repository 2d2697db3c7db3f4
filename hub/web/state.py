"""What the dashboard shows: devices, alerts, turns, hub and AI server health, kept live.

Sources, all read on the hub's event loop:

* the hub's WebRTC sessions (polled every TICK_S: connected devices, their mic level);
* device statuses (online, zone, firmware...) from the hub's one decoding subscription
  (hub.device_status), and each device's room from the hub's one room registry (hub.rooms);
* MQTT through the hub's broker link: ``naila/alerts/all`` and ``naila/server/status``, decoded
  with ``shared.mqtt`` (anything that does not validate is dropped);
* the hub's TurnLog (a listener on every completed turn);
* /health and, while a dashboard is open, the AI server's GetStatus.

Every change goes out on the :class:`~hub.web.events.EventBus`; a new page gets a snapshot.

A status flood (M8) must not cost O(devices) of JSON and fan-out per message on the media
event loop: the device list goes out at most DEVICES_EVERY_S apart (changes in between are
folded into the next one), and hub.device_status rate limits each device's statuses.
Alert snapshots: the hub stores no alert images; an alert with a ``snapshot_id`` links to its
image through the hub (``/api/alerts/{id}/snapshot``, hub.web.household, behind the login).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from hub.device_status import DeviceStatusFeed
from hub.metrics import HubMetrics
from hub.rooms import RoomDirectory
from hub.turns import TurnLog, TurnRecord
from hub.web.auth import BROWSER_ID_RE
from hub.web.events import EventBus, format_event
from shared import timestamps
from shared.grpc_security import ClientSecurity
from shared.mqtt import Alert, DeviceStatus, HubStatus, MessageError, ServerStatus, decode_message, topics

log = logging.getLogger("naila.hub.web")

TICK_S = 0.2  # session poll and level meter rate: 5 updates a second look live and cost nothing
HEALTH_EVERY_S = 2.0
AI_STATUS_EVERY_S = 5.0
MAX_ALERTS = 200
CHART_TURNS = 50  # turns sent to a new dashboard (the chart's bars and the table); the hour's stay here
MAX_DEVICES = 500  # MQTT statuses kept; beyond that the oldest offline ones are forgotten
LEVEL_FLOOR_DBFS = -90.0
DEVICES_EVERY_S = 0.5  # at most 2 device-list updates a second to the dashboards
CAMERAS_EVERY_S = 0.5  # camera views: a motion run chooses several frames a second; tiles need 2

# naila/hubs/+/status (issue 21): which hub serves each device, so every hub's dashboard shows the
# whole household, devices on other hubs included.
MQTT_FILTERS = (topics.ALERTS_ALL, topics.SERVER_STATUS, topics.ALL_HUB_STATUS)


class CameraSource(Protocol):
    """The hub's cameras as the dashboard reads them (hub.vision.VisionService)."""

    def views(self) -> list[dict[str, object]]: ...

    def add_view_listener(self, listener: Callable[[], None]) -> None: ...


def ms_iso(ms: object) -> str | None:
    """A wall-clock time in ms since the epoch as the page's ISO time (None stays None)."""
    if not isinstance(ms, int):
        return None
    return timestamps.utc_iso(dt.datetime.fromtimestamp(ms / 1000, dt.UTC))


class SessionView(Protocol):
    """What the dashboard reads from a hub session (hub.session.DeviceSession)."""

    input_level_dbfs: float
    last_media_at: float


def utc_iso(t: dt.datetime | None = None) -> str:
    """The dashboard's timestamps: shared.timestamps' style, to the second."""
    return timestamps.utc_iso(t, timespec="seconds")


@dataclass
class DeviceView:
    device_id: str
    connected: bool = False  # has a live WebRTC session on this hub
    mqtt_online: bool | None = None  # None: never heard of on MQTT
    zone: str | None = None
    firmware_version: str | None = None
    capabilities: list[str] = field(default_factory=list)
    last_seen: str | None = None
    listening_mode: str | None = None  # issue 19: the live session's mode, else the one its status reports
    # issue 22: the privacy switches from the device's status (None: it has no such switch or did not say).
    camera_enabled: bool | None = None
    microphone_enabled: bool | None = None
    hub: str | None = None  # issue 21: the hub whose presence lists the device (this one or another)

    @property
    def online(self) -> bool:
        return self.connected or bool(self.mqtt_online) or self.hub is not None

    def to_json(self, room: str | None) -> dict[str, object]:
        """``room``: the device's room from hub.rooms, the one place it is kept."""
        return {
            "device_id": self.device_id,
            "kind": "browser" if BROWSER_ID_RE.fullmatch(self.device_id) else "device",
            "online": self.online,
            "connected": self.connected,
            "mqtt_online": self.mqtt_online,
            "room": room or None,
            "zone": self.zone,
            "firmware_version": self.firmware_version,
            "capabilities": list(self.capabilities),
            "last_seen": self.last_seen,
            "listening_mode": self.listening_mode,
            "camera_enabled": self.camera_enabled,
            "microphone_enabled": self.microphone_enabled,
            "hub": self.hub,
        }


def alert_json(alert: Alert, received_at: str) -> dict[str, object]:
    return {
        "alert_type": alert.alert_type,
        "zone": alert.zone,
        "confidence": alert.confidence,
        "source_device": alert.source_device,
        "timestamp": utc_iso(alert.timestamp),
        "received_at": received_at,
        "snapshot_available": alert.snapshot_available,
        # The snapshot's id on the AI server and where the page loads it: through the hub
        # (hub.web.household, behind the login; the hub keeps no alert images).
        "snapshot_id": alert.snapshot_id,
        "snapshot": f"/api/alerts/{alert.snapshot_id}/snapshot" if alert.snapshot_id else None,
    }


def turn_json(turn: TurnRecord) -> dict[str, object]:
    data = turn.to_json()
    data.pop("hub_end_monotonic", None)  # a clock reading of the hub, meaningless to a page
    return data


class DashboardState:
    """The live model behind the dashboard and the device pages' event streams."""

    def __init__(
        self,
        bus: EventBus,
        metrics: HubMetrics,
        turns: TurnLog,
        sessions: Mapping[str, SessionView],
        *,
        hub_instance: str,
        ai_status: Callable[[], dict[str, object]] | None = None,
        mqtt_connected: Callable[[], bool | None] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
        rooms: RoomDirectory | None = None,
        statuses: DeviceStatusFeed | None = None,
        cameras: CameraSource | None = None,
    ) -> None:
        """``rooms`` and ``statuses``: the hub's (hub.server); without them (tests) the dashboard
        makes its own and feeds its room registry from its own status feed."""
        self.bus = bus
        self.metrics = metrics
        self.turns = turns
        self.sessions = sessions
        self.hub_instance = hub_instance
        self._ai_status_fetch = ai_status
        self._mqtt_connected = mqtt_connected
        self._clock = clock
        self.devices: dict[str, DeviceView] = {}
        self.alerts: deque[dict[str, object]] = deque(maxlen=MAX_ALERTS)
        self.server_status: dict[str, object] | None = None  # naila/server/status (retained)
        self.hubs: dict[str, dict[str, object]] = {}  # naila/hubs/+/status: hub id -> online, devices served
        self._hub_devices: dict[str, set[str]] = {}
        self.ai_status: dict[str, object] = {"reachable": None}
        self._levels: dict[str, float] = {}
        self._devices_dirty = False
        self._next_devices_at = float("-inf")
        self.cameras = cameras
        self._cameras_dirty = False
        self._next_cameras_at = float("-inf")
        if cameras is not None:
            cameras.add_view_listener(self._cameras_changed)
        self._task: asyncio.Task[None] | None = None
        self._ai_task: asyncio.Task[None] | None = None
        turns.add_listener(self.on_turn)
        self.statuses = statuses or DeviceStatusFeed(metrics, clock=clock)
        if rooms is None:
            rooms = RoomDirectory()
            self.statuses.add_listener(rooms.on_status)  # before ours: the list shows the new room
        self.rooms = rooms
        self.statuses.add_listener(self.on_device_status, self._cleared)

    # ----- snapshots -----

    def device_list(self) -> list[dict[str, object]]:
        return [self._json(d) for d in sorted(self.devices.values(), key=lambda d: (not d.online, d.device_id))]

    def _json(self, view: DeviceView) -> dict[str, object]:
        return view.to_json(self.rooms.room_of(view.device_id))

    def camera_list(self) -> list[dict[str, object]]:
        """Each streaming camera's tile: its view (hub.vision.views), zone and room from its status."""
        if self.cameras is None:
            return []
        out = []
        for view in self.cameras.views():
            device_id = str(view["device_id"])
            device = self.devices.get(device_id)
            out.append({
                "device_id": device_id,
                "room": self.rooms.room_of(device_id) or None,
                "zone": device.zone if device is not None else None,
                "version": view["version"],
                "view_at": ms_iso(view["view_at_ms"]),
                "last_motion": ms_iso(view["motion_at_ms"]),
                "size": view["size"],
                "detections": view["detections"],
                # When the frame the detections are of was taken (None: none analysed yet).
                "analysed_at": ms_iso(view.get("analysed_at_ms")),
            })
        return out

    def health(self) -> dict[str, object]:
        return {
            "hub": self.metrics.health(),
            "mqtt_connected": self._mqtt_connected(),
            "ai_server": self.ai_status,
            "ai_server_mqtt": self.server_status,
            "hubs": dict(self.hubs),
        }

    def hello(self) -> dict[str, object]:
        return {"hub_instance": self.hub_instance, "server_time": utc_iso()}

    def snapshot(self) -> dict[str, object]:
        return {
            "devices": self.device_list(),
            "levels": dict(self._levels),
            "alerts": list(self.alerts),
            "cameras": self.camera_list(),
            # The chart's bars: the newest turns; its p50/p95 lines: the hour's, computed here.
            "turns": [turn_json(t) for t in self.turns.recent(limit=CHART_TURNS)],
            "latency": self.turns.latency(),
            "health": self.health(),
        }

    def initial_events(self, device_id: str | None) -> list[bytes]:
        """What a new stream starts with: ``hello``, then a snapshot (dashboard) or the device's own state."""
        events = [format_event("hello", self.hello())]
        if device_id is None:
            events.append(format_event("snapshot", self.snapshot()))
        else:
            view = self.devices.get(device_id)
            events.append(format_event("device", self._json(view) if view else {"device_id": device_id}))
        return events

    # ----- inputs -----

    def on_turn(self, turn: TurnRecord) -> None:
        self.bus.publish("turn", turn_json(turn), device_id=turn.device_id)
        self.bus.publish("latency", self.turns.latency(), dashboard_only=True)

    async def on_mqtt(self, topic: str, payload: bytes) -> None:
        """Handler for the hub's MQTT link (registered for every filter in MQTT_FILTERS)."""
        if not payload:
            return  # a cleared retained alert or server status: nothing to show
        try:
            _parsed, message = decode_message(topic, payload)
        except MessageError as err:
            log.info("dashboard: dropped MQTT message on %r: %s", topic[:200], err)
            return
        if isinstance(message, Alert):
            self.on_alert(message)
        elif isinstance(message, ServerStatus):
            self.server_status = {
                "online": message.online,
                "version": message.version,
                "timestamp": utc_iso(message.timestamp),
            }
            self.bus.publish("health", self.health(), dashboard_only=True)
        elif isinstance(message, HubStatus):
            self.on_hub_status(message)

    def on_hub_status(self, status: HubStatus) -> None:
        """A hub's presence: mark which hub serves each device, adding devices only it knows of."""
        self.hubs[status.hub_id] = {"online": status.online, "devices": status.device_count}
        self._hub_devices[status.hub_id] = set(status.devices) if status.online else set()
        for device_id in status.devices if status.online else ():
            if device_id not in self.devices:
                self._make_room()
                self.devices[device_id] = DeviceView(device_id)
        for device_id, view in self.devices.items():
            view.hub = next((h for h, ids in sorted(self._hub_devices.items()) if device_id in ids), None)
        self._devices_changed()

    def _cleared(self, device_id: str) -> None:
        """An empty retained message deletes a status: forget what it said."""
        view = self.devices.get(device_id)
        if view is None:
            return
        if view.connected:
            view.mqtt_online = None
        else:
            del self.devices[device_id]
        self._devices_changed()

    def on_device_status(self, status: DeviceStatus) -> None:
        view = self.devices.get(status.device_id)
        if view is None:
            self._make_room()
            view = self.devices[status.device_id] = DeviceView(status.device_id)
        view.mqtt_online = status.online
        view.zone = status.zone or view.zone
        view.firmware_version = status.firmware_version
        view.capabilities = list(status.capabilities)
        if status.listening_mode and not view.connected:
            view.listening_mode = status.listening_mode
        if status.online:
            view.camera_enabled, view.microphone_enabled = status.camera_enabled, status.microphone_enabled
        # An offline status (often the broker publishing the device's will) says when it was
        # registered, not when the device was last heard: keep what we knew.
        if status.online or view.last_seen is None:
            view.last_seen = utc_iso(status.timestamp)
        self._devices_changed()

    def _make_room(self) -> None:
        """Keep the map at MAX_DEVICES: forget an offline device, else one only MQTT says is online.
        Devices with a live session stay: those are bounded by the hub's session cap."""
        if len(self.devices) < MAX_DEVICES:
            return
        victim = next((i for i, v in self.devices.items() if not v.online), None)
        if victim is None:
            victim = next((i for i, v in self.devices.items() if not v.connected), None)
        if victim is not None:
            del self.devices[victim]

    def on_alert(self, alert: Alert) -> None:
        item = alert_json(alert, utc_iso())
        self.alerts.append(item)
        self.bus.publish("alert", item, dashboard_only=True)

    def set_browser_room(self, device_id: str, room: str | None) -> None:
        """A browser page names its own room: into hub.rooms, so it rides on its audio too."""
        self.rooms.set(device_id, room)
        if device_id in self.devices:
            self._devices_changed()

    def _devices_changed(self) -> None:
        self._devices_dirty = True
        self.flush_devices()

    def flush_devices(self) -> None:
        """Send the device list if it changed and the last one went out DEVICES_EVERY_S ago or more;
        otherwise a later call (the ticker's) sends it, with every change until then."""
        if not self._devices_dirty:
            return
        if not self.bus.dashboards:
            self._devices_dirty = False  # nobody to tell; a new dashboard starts from a snapshot
            return
        now = self._clock()
        if now < self._next_devices_at:
            return
        self._devices_dirty = False
        self._next_devices_at = now + DEVICES_EVERY_S
        self.bus.publish("devices", self.device_list(), dashboard_only=True)

    def _cameras_changed(self) -> None:
        self._cameras_dirty = True

    def flush_cameras(self) -> None:
        """Send the camera list (not pixels: a page fetches a view whose version changed) at most
        every CAMERAS_EVERY_S; the ticker calls this."""
        if not self._cameras_dirty:
            return
        if not self.bus.dashboards:
            self._cameras_dirty = False
            return
        now = self._clock()
        if now < self._next_cameras_at:
            return
        self._cameras_dirty = False
        self._next_cameras_at = now + CAMERAS_EVERY_S
        self.bus.publish("cameras", self.camera_list(), dashboard_only=True)

    # ----- the ticker -----

    def poll_sessions(self) -> None:
        """Mark devices connected / disconnected and refresh the level meters."""
        changed = False
        now = utc_iso()
        for device_id in self.sessions:
            view = self.devices.get(device_id)
            if view is None:
                self._make_room()
                view = self.devices[device_id] = DeviceView(device_id)
            if not view.connected:
                view.connected = True
                changed = True
            # The effective mode (config, status or the page may change it): dashboard-only sessions
            # in tests have no gate, hence getattr.
            mode = getattr(self.sessions[device_id], "listening_mode", None)
            if mode != view.listening_mode and mode is not None:
                view.listening_mode = mode
                changed = True
            view.last_seen = now
        for device_id, view in self.devices.items():
            if view.connected and device_id not in self.sessions:
                view.connected = False
                changed = True
        if changed:
            self._devices_changed()
        levels = {
            device_id: round(max(LEVEL_FLOOR_DBFS, session.input_level_dbfs), 1)
            for device_id, session in self.sessions.items()
        }
        if levels != self._levels:
            self._levels = levels
            self.bus.publish("levels", levels, dashboard_only=True)

    async def _run(self) -> None:
        next_health = next_ai = 0.0
        while True:
            try:
                self.poll_sessions()
                self.flush_devices()
                self.flush_cameras()
                now = self._clock()
                if self.bus.dashboards and now >= next_ai and self._ai_status_fetch is not None:
                    next_ai = now + AI_STATUS_EVERY_S
                    if self._ai_task is None or self._ai_task.done():
                        # Its own task: an unreachable AI server takes the whole deadline to say so,
                        # and the level meters must not freeze meanwhile.
                        self._ai_task = asyncio.create_task(self._fetch_ai_status(), name="web-ai-status")
                if self.bus.dashboards and now >= next_health:
                    next_health = now + HEALTH_EVERY_S
                    self.bus.publish("health", self.health(), dashboard_only=True)
            except Exception:  # the dashboard must never take the hub down, nor stop updating
                log.exception("dashboard tick failed")
            await asyncio.sleep(TICK_S)

    async def _fetch_ai_status(self) -> None:
        assert self._ai_status_fetch is not None
        try:
            self.ai_status = await asyncio.to_thread(self._ai_status_fetch)
        except Exception as err:
            self.ai_status = {"reachable": False, "error": type(err).__name__}

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="web-dashboard")

    async def stop(self) -> None:
        for task in (self._task, self._ai_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._task = self._ai_task = None

    def alerts_matching(self, zone: str | None, alert_type: str | None) -> Iterator[dict[str, object]]:
        for a in self.alerts:
            if (zone is None or a["zone"] == zone) and (alert_type is None or a["alert_type"] == alert_type):
                yield a


class AiStatusClient:
    """A blocking GetStatus on its own channel (called in a thread): the hub's AI link uses
    GetStatus only as a heartbeat and keeps no answer, and one call every few seconds needs no more."""

    def __init__(self, target: str | ClientSecurity, timeout_s: float = 2.0) -> None:
        # A ClientSecurity (shared.grpc_security.hub_client) carries HUB_AI_TLS_*; a bare target is plaintext.
        self.security = target if isinstance(target, ClientSecurity) else ClientSecurity(target)
        self.target = self.security.target
        self.timeout_s = timeout_s
        self._channel: Any = None

    def __call__(self) -> dict[str, object]:
        import grpc

        from shared.contract import pb, pb_grpc

        if self._channel is None:
            self._channel = self.security.channel()
        try:
            r = pb_grpc.NailaAIStub(self._channel).GetStatus(pb.StatusRequest(), timeout=self.timeout_s)
        except grpc.RpcError as err:
            code = err.code() if isinstance(err, grpc.Call) else None
            return {"reachable": False, "error": getattr(code, "name", str(code))}
        return {
            "reachable": True,
            "status": r.status,
            "uptime_secs": int(r.uptime_secs),
            "version": r.version,
            "stt": f"{r.stt_backend} {r.stt_model}".strip(),
            "llm": f"{r.llm_backend} {r.llm_model}".strip(),
            "tts": f"{r.tts_backend} {r.tts_model}".strip(),
            "active_conversations": r.active_conversations,
            "latencies": [
                {"stage": x.stage, "p50_ms": round(x.p50_ms), "p95_ms": round(x.p95_ms), "count": x.count}
                for x in r.latencies
            ],
        }

    def close(self) -> None:
        channel, self._channel = self._channel, None
        if channel is not None:
            channel.close()
