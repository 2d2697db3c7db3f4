"""The Hub: signaling + status HTTP server, device sessions, the AI link and vision, wired together.

Start one in-process (tests, the demo, benchmarks) with::

    hub = await run_hub(load(HubSettings, hub_host="127.0.0.1"), port=0)
    ...  # hub.port is the bound port, hub.url its base URL

(HUB_PORT must be 1-65535 in the environment; ``port=0`` asks the OS for a free one.)
    await hub.stop()
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection

from hub.ai_link import AiLink
from hub.ai_pool import AiPool, Link
from hub.arbitration import Arbiter
from hub.device_status import DeviceStatusFeed
from hub.end_of_turn import END_OF_TURN_ENGINES, TurnJudge
from hub.http_guard import HeaderDeadline, HostGuard, server_ssl_context
from hub.hub_directory import HubDirectory, presence
from hub.listening import ListeningModes
from hub.metrics import HubMetrics
from hub.mqtt_control import HubMqtt
from hub.mqtt_signaling import MqttSignaling
from hub.rooms import RoomDirectory
from hub.session import DeviceSession
from hub.signaling import Busy, ConnectEndpoint
from hub.status_routes import add_status_routes
from hub.turns import TurnLog
from hub.vad import VoiceDetector, make_detector
from hub.vision import VisionService
from hub.web import add_web_app, device_tokens, read_access
from hub.web.proxy import ProxyView, limit_key
from shared.backoff import Backoff
from shared.config import AudioSettings, HubSettings, MqttSettings, VideoSettings, WebRTCSettings
from shared.contract import pb
from shared.grpc_security import hub_client
from shared.mqtt import topics

log = logging.getLogger("naila.hub")

TURN_HISTORY = 2000  # at most; the log keeps the last hour's turns (hub/turns.py)
LINGER_S = 1.0  # how long aiohttp keeps reading a refused request's unread body before it closes


@dataclass
class _IdLock:
    """One device id's negotiation lock and how many offers use it (dropped at zero: no per-id growth)."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


class Hub:
    """One hub: owns the HTTP server, the device sessions and the gRPC link."""

    def __init__(
        self,
        settings: HubSettings,
        webrtc: WebRTCSettings | None = None,
        audio: AudioSettings | None = None,
        *,
        detector_factory: Callable[[], VoiceDetector] | None = None,
        clock: Callable[[], float] = time.monotonic,
        port: int | None = None,
        mqtt: MqttSettings | None = None,
        video: VideoSettings | None = None,
    ) -> None:
        self.settings = settings
        self._listen_port = settings.hub_port if port is None else port
        self.webrtc = webrtc or WebRTCSettings()
        self.audio = audio or AudioSettings()
        self._clock = clock
        vad_mode = self.audio.audio_vad_mode
        self._detector_factory = detector_factory or (
            lambda: make_detector(vad_mode, settings)
        )
        self._detector_factory()  # fail at construction, not at the first device, if unavailable
        # AUDIO_END_OF_TURN: one model for all sessions, asked on a worker thread (None: silence decides).
        eot_model = END_OF_TURN_ENGINES.build(self.audio.audio_end_of_turn, settings)
        self.turn_judge = TurnJudge(eot_model) if eot_model else None
        self.metrics = HubMetrics(clock)
        self.turns = TurnLog(TURN_HISTORY)
        self.sessions: dict[str, DeviceSession] = {}
        # One person heard by several devices: only the best capture opens an utterance.
        self.arbiter = Arbiter(
            window_s=settings.hub_arbitration_window_ms / 1000, live_devices=lambda: len(self.sessions), clock=clock
        )
        self._locks: dict[str, _IdLock] = {}
        self._sequences: dict[str, itertools.count[int]] = {}
        # H6: offers being negotiated (HTTP and MQTT together), and how many of them are for new ids.
        self._negotiations = asyncio.Semaphore(settings.hub_max_negotiations)
        self._negotiating = 0
        self._pending_new: set[str] = set()
        self._ssl: ssl.SSLContext | None = server_ssl_context(settings.hub_tls_cert, settings.hub_tls_key)
        self._deadline = HeaderDeadline(settings.hub_request_timeout_s, self.metrics)
        self._listener: asyncio.Server | None = None
        # One gRPC stream per AI server in HUB_AI_SERVER; each device sticks to one (hub/ai_pool.py).
        self.link = AiPool(
            settings.ai_servers, self._make_link, on_output=self.route_output,
            on_devices_lost=self._on_ai_lost, clock=clock,
        )
        self.metrics.ai_status = lambda: self.link.ai_status
        self.metrics.active_devices = lambda: len(self.sessions)
        self.metrics.negotiations = lambda: self._negotiating
        self.metrics.grpc_connected = lambda: self.link.connected
        # HUB_VISION: each device's camera through the motion gate to the AI server (hub/vision).
        self.video = video or VideoSettings()
        self.vision = (
            VisionService(settings, self.video, self.metrics, clock=clock,
                          choose_server=self.link.first_up if len(self.link.targets) > 1 else None)
            if settings.hub_vision else None
        )
        self._runner: web.AppRunner | None = None
        self._warned_unknown: set[str] = set()
        self.port = 0
        # HUB_MQTT: offers over MQTT (hub/mqtt_signaling.py), and hub.mqtt.add_listener for other modules.
        self.mqtt: HubMqtt | None = None
        self.mqtt_signaling: MqttSignaling | None = None
        # Several hubs on one broker (issue 21): every hub's presence, and which hub answers an offer.
        self.hubs: HubDirectory | None = None
        self.rooms = RoomDirectory()
        # Device statuses decoded once, then handed to the rooms, the listening modes and the dashboard.
        self.device_status = DeviceStatusFeed(self.metrics, clock=clock)
        self.device_status.add_listener(self.rooms.on_status)
        # Listening modes (issue 19): HUB_LISTENING_MODE(S), overridden by what a device reports.
        self.listening_modes = ListeningModes(settings.hub_listening_mode, dict(settings.hub_listening_modes))
        self.listening_modes.on_change(self._listening_mode_changed)
        self.device_status.add_listener(self.listening_modes.on_status)
        if settings.hub_mqtt:
            self.mqtt = HubMqtt(mqtt or MqttSettings(), settings.hub_id, self.metrics,
                                goodbye=presence(settings.hub_id, [], online=False))
            self.mqtt.add_listener(topics.ALL_DEVICE_STATUS, self.device_status.on_mqtt)
            self.hubs = HubDirectory(settings.hub_id, self.mqtt, lambda: list(self.sessions))
            self.mqtt.on_connect(self.hubs.publish_now)
            self.mqtt_signaling = MqttSignaling(self, self.mqtt, settings, self.metrics, clock=clock,
                                                directory=self.hubs)

    def _make_link(self, target: str, on_output: Callable[[pb.AudioOutput], None],
                   on_change: Callable[[bool], None]) -> Link:
        s = self.settings
        several = len(s.ai_servers) > 1  # one AI server: None, the link's historical 5 s beat, 3 misses
        return AiLink(
            target,
            self.metrics,
            on_output=on_output,
            on_connection_change=on_change,
            backoff=Backoff(s.hub_grpc_backoff_initial_s, s.hub_grpc_backoff_max_s),
            per_device_limit=s.hub_device_queue_frames,
            clock=self._clock,
            heartbeat_period_s=s.hub_ai_heartbeat_s if several else None,
            heartbeat_timeout_s=s.hub_ai_heartbeat_s if several else None,
            heartbeat_misses=s.hub_ai_heartbeat_misses if several else None,
            security=hub_client(s, target),  # HUB_AI_TLS_*; refuses plaintext to a non-loopback AI server
        )

    # ----- lifecycle -----

    @property
    def scheme(self) -> str:
        return "https" if self._ssl is not None else "http"

    @property
    def url(self) -> str:
        host = self.settings.hub_host
        if host in ("0.0.0.0", "", "::"):
            host = "127.0.0.1"
        return f"{self.scheme}://{host}:{self.port}"

    def make_app(self) -> web.Application:
        # Every route: first the header deadline's bookkeeping, then the Host check (DNS rebinding).
        guard = HostGuard(self.settings.hub_public_hosts, self.metrics)
        app = web.Application(middlewares=[self._deadline.middleware, guard.middleware])
        app.router.add_post(
            "/connect",
            # HUB_DEVICE_TOKENS, plus the web app's per-browser device tokens (hub.web.auth).
            ConnectEndpoint(self, self.metrics, device_tokens(self.settings), self.settings,
                            client_address=client_address(self.settings), clock=self._clock).handle,
        )
        web_app = add_web_app(app, self)
        # /turns, /health?detail=1, /metrics: the web login (its cookies, revocable) or HUB_METRICS_TOKEN.
        access = read_access(self.settings, web_app)
        add_status_routes(app, self.metrics, self.turns, self.device_details, self.vision_details, access=access,
                          ai_servers=self.link.details)
        return app

    async def start(self) -> None:
        """Start the AI link (it connects in the background) and the HTTP server."""
        self.link.start()
        s = self.settings
        self._warn_about_auth()
        # keepalive_timeout bounds the wait for a kept-alive connection's next request (headers included).
        self._runner = web.AppRunner(
            self.make_app(), access_log=None, keepalive_timeout=s.hub_request_timeout_s, lingering_time=LINGER_S
        )
        await self._runner.setup()
        server = self._runner.server
        assert server is not None
        # Our own listener instead of web.TCPSite: its protocol factory carries the header deadline.
        self._listener = await asyncio.get_running_loop().create_server(
            self._deadline.factory(server), s.hub_host, self._listen_port, ssl=self._ssl,
            ssl_handshake_timeout=s.hub_request_timeout_s if self._ssl is not None else None, reuse_address=True,
        )
        self.port = int(self._listener.sockets[0].getsockname()[1])
        if self.mqtt is not None:
            await self.mqtt.start()  # returns at once; redials in the background without a broker
        log.info(
            "hub listening on %s://%s:%d (POST /connect, GET /health /metrics /turns); AI server %s",
            self.scheme, s.hub_host, self.port, s.hub_ai_server,
        )

    def _warn_about_auth(self) -> None:
        s = self.settings
        if s.hub_allow_unauthenticated:
            log.warning(
                "HUB_ALLOW_UNAUTHENTICATED=true: /connect accepts device ids without a token; anyone who can reach "
                "%s:%s can join as a device (its room, history and speakers). For demos and tests on loopback only.",
                s.hub_host, self._listen_port,
            )
        elif not s.hub_device_tokens:
            log.warning("HUB_DEVICE_TOKENS is empty: every /connect without a web-app device token is refused "
                        "(401); `naila init` writes one token per device")
        if self._ssl is None and s.hub_host not in ("127.0.0.1", "::1", "localhost"):
            log.warning("plain HTTP on %s: device tokens and SDP (DTLS fingerprints) cross the LAN in clear; "
                        "set HUB_TLS_CERT/HUB_TLS_KEY", s.hub_host)

    async def stop(self) -> None:
        """Close every session, the HTTP server, the MQTT link and the AI link."""
        if self.mqtt_signaling is not None:
            await self.mqtt_signaling.stop()
        for session in list(self.sessions.values()):
            await session.close("shutdown")
        if self._listener is not None:
            self._listener.close()
        self._deadline.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._listener is not None:
            await self._listener.wait_closed()
            self._listener = None
        if self.hubs is not None:
            await self.hubs.stop()
        if self.mqtt is not None:
            await self.mqtt.stop()
        self.device_status.close()
        await self.link.stop()
        if self.vision is not None:
            await self.vision.stop()
        if self.turn_judge is not None:
            self.turn_judge.close()
        log.info("hub stopped")

    # ----- sessions -----

    def _rtc_configuration(self) -> RTCConfiguration:
        return RTCConfiguration(iceServers=[RTCIceServer(urls=u) for u in self.webrtc.webrtc_ice_servers])

    async def connect_device(self, device_id: str, sdp: str) -> str:
        """Open a session for the device (replacing its old one) and return the answer SDP.

        Raises :class:`~hub.signaling.Busy` (503) at HUB_MAX_NEGOTIATIONS offers in flight (HTTP
        and MQTT together) or, for a device not connected yet, at HUB_MAX_SESSIONS devices.
        """
        s = self.settings
        if self._negotiations.locked():
            raise Busy("busy", f"{s.hub_max_negotiations} offers are being negotiated; retry later")
        new = device_id not in self.sessions and device_id not in self._pending_new
        if new and len(self.sessions) + len(self._pending_new) >= s.hub_max_sessions:
            raise Busy("too_many_sessions", f"{s.hub_max_sessions} devices are connected (HUB_MAX_SESSIONS)")
        if new:
            self._pending_new.add(device_id)
        entry = self._locks.setdefault(device_id, _IdLock())
        entry.users += 1
        self._negotiating += 1
        try:
            async with self._negotiations:
                return await self._negotiate(device_id, sdp, entry.lock)
        finally:
            self._negotiating -= 1
            if new:
                self._pending_new.discard(device_id)
            entry.users -= 1
            if entry.users == 0 and self._locks.get(device_id) is entry:
                del self._locks[device_id]

    async def _negotiate(self, device_id: str, sdp: str, lock: asyncio.Lock) -> str:
        async with lock:
            session = DeviceSession(device_id, RTCPeerConnection(self._rtc_configuration()), self,
                                    clock=self._clock)
            try:
                await session.accept_offer(sdp)
            except BaseException:
                session.closed = True
                with contextlib.suppress(Exception):
                    await session.pc.close()
                raise
            old = self.sessions.get(device_id)
            if old is not None:
                log.info("%s reconnected: closing its previous session", device_id)
                await old.close("replaced")
            self.sessions[device_id] = session
            try:
                answer = await session.answer()
            except BaseException:
                await session.close("answer_failed")
                raise
            session.start()
            if self.hubs is not None and old is None:
                self.hubs.sessions_changed()
            log.info("%s connected (conversation %s)", device_id, session.conversation_id)
            return answer

    def device_details(self) -> list[dict[str, object]]:
        """Connected devices for /health?detail=1: id, room, how long connected, mic level."""
        now = self._clock()
        return [
            {
                "device_id": s.device_id,
                "room": self.rooms.room_of(s.device_id),
                "connected_s": round(now - s.created_at, 1),
                "input_level_dbfs": round(s.input_level_dbfs, 1),
                "listening_mode": s.listening.mode,
                "listening_mode_source": self.listening_modes.source_of(s.device_id)[1],
                "listening": s.listening.phase.value,
                "wake_words_heard": s.listening.wakes,
                "wake_word_heard_s_ago": None if s.wake_heard_at is None else round(now - s.wake_heard_at, 2),
            }
            for s in sorted(self.sessions.values(), key=lambda s: s.device_id)
        ]

    def _listening_mode_changed(self, device_id: str, mode: str) -> None:
        session = self.sessions.get(device_id)
        if session is not None:
            session.set_listening_mode(mode)

    def vision_details(self) -> dict[str, object]:
        """The vision pipeline for /health?detail=1: its AI stream and every streaming camera."""
        return self.vision.details() if self.vision is not None else {"enabled": False}

    def session_closed(self, session: DeviceSession) -> None:
        if self.sessions.get(session.device_id) is session:
            del self.sessions[session.device_id]
            # The device is gone: nothing per id may outlive it (H6), or made-up ids grow the hub.
            self._sequences.pop(session.device_id, None)
            self.link.forget(session.device_id)
            if self.mqtt_signaling is not None:
                self.mqtt_signaling.session_closed(session.device_id, session)
            if self.hubs is not None:
                self.hubs.sessions_changed()

    def next_sequence(self, device_id: str) -> int:
        return next(self._sequences.setdefault(device_id, itertools.count()))

    def make_detector(self) -> VoiceDetector:
        return self._detector_factory()

    # ----- AI replies -----

    def route_output(self, out: pb.AudioOutput) -> None:
        session = self.sessions.get(out.device_id)
        if session is None:
            self.metrics.unknown_device_outputs += 1
            if out.device_id not in self._warned_unknown and len(self._warned_unknown) < 1000:
                self._warned_unknown.add(out.device_id)
                log.warning("AudioOutput for unknown device %r ignored (counted, logged once)", out.device_id)
            return
        session.on_ai_output(out)

    def _on_ai_lost(self, device_ids: list[str]) -> None:
        """Their AI server went away: a reply in flight will not finish (hub/ai_pool.py)."""
        for device_id in device_ids:
            session = self.sessions.get(device_id)
            if session is not None:
                session.on_ai_connection(False)


async def run_hub(
    settings: HubSettings,
    webrtc: WebRTCSettings | None = None,
    audio: AudioSettings | None = None,
    *,
    detector_factory: Callable[[], VoiceDetector] | None = None,
    port: int | None = None,
    mqtt: MqttSettings | None = None,
    video: VideoSettings | None = None,
) -> Hub:
    """Build and start a hub; ``hub.port`` is the bound port (``port=0`` for a free one)."""
    hub = Hub(settings, webrtc, audio, detector_factory=detector_factory, port=port, mqtt=mqtt, video=video)
    await hub.start()
    return hub


def client_address(settings: HubSettings) -> Callable[[web.Request], str]:
    """The client address /connect's limits are keyed on: behind a HUB_TRUSTED_PROXIES proxy, the
    forwarded client (else every device would share the proxy's budget); an IPv6 client by its /64."""
    view = ProxyView(settings.hub_trusted_proxies)
    return lambda request: limit_key(view.client(request))
