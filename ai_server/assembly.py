"""The AI server's composition root: every object is built once, here, with its dependencies.

In-process use (tests, the demo, benchmarks)::

    server = await start_server(load(AIServerSettings), port=0)   # loads + warms models
    ... connect to f"127.0.0.1:{server.port}" ...
    await server.stop()

Pass ``stt=``, ``llm=`` and/or ``tts=`` to inject backends (fakes for failure tests, or models
already loaded once per test session); injected backends are not closed by ``stop()``. Pass
``mqtt=`` (broker settings) to also run the MQTT control plane (ai_server/control) unless
``AI_MQTT=false``; ``naila ai-server`` always passes the MQTT_* settings.

Vision (``VISION_ENABLED``, on by default) builds :class:`~ai_server.vision.pipeline.VisionPipeline`
as ``server.vision``; its model loads on the first frame (or in a background thread when ``warm``),
so starting costs no torch import. Pass ``detector=`` to inject one. Without the detector's libraries
the server runs without vision and says so once in the log and in GetStatus (``vision_model``).

Layers (enforced by tests/foundation/test_import_layers.py): engines → store → domain → adapters →
app. This module is the app layer: the one place that knows every part. The build order follows
the object graph: engines; the store; what speaks (:class:`~ai_server.pipeline.Voice`) and the
control plane's device parts; vision and the looker; the intent router; the voice pipeline (given
its router and looker); chat and uploads; the plane; then the gRPC service. Two references go
forward, both closures: the MQTT link calls the plane built after it (the plane's parts publish
through the link), and a recording's frame is analysed by the media sources built after the device
media that asks for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import uuid
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import grpc

from ai_server.assist import alarms, home_assistant, maths, time_date
from ai_server.assist.core import AssistServices, IntentRegistry
from ai_server.assist.home_assistant import HomeAssistant
from ai_server.assist.intents import Recognizer
from ai_server.assist.replica import AlarmMirror, AlarmReplica, alarm_link, server_id_of
from ai_server.assist.router import AssistRouter, install_defaults
from ai_server.assist.tools import ToolBox, install_looking
from ai_server.control import room_router
from ai_server.control.alerts import Alerts
from ai_server.control.chat import Chat
from ai_server.control.commands import Commands
from ai_server.control.inbound import InboundGuard
from ai_server.control.media import DeviceMedia
from ai_server.control.media_check import MediaPolicy
from ai_server.control.metrics import ControlMetrics
from ai_server.control.outbox import OUTBOX_NAME, AlertOutbox
from ai_server.control.plane import ControlPlane, subscriptions
from ai_server.control.presence import Presence, will_message
from ai_server.control.registry import DeviceRegistry
from ai_server.control.room_router import RoomRouter
from ai_server.control.speech import AnnounceLimit, Speaker
from ai_server.control.uploads import Uploads
from ai_server.conversation import Conversations
from ai_server.errors import StartupError
from ai_server.household import HouseholdService
from ai_server.llm import LLMBackend
from ai_server.llm.engines import build_llm
from ai_server.media.analysis import Analysed, ImageAnalyser, limit_pixels
from ai_server.media.describe import VisionDescriber
from ai_server.media.frames import ClipDecoder, ClipLimits
from ai_server.media.history import HistoryQuestions
from ai_server.media.looker import HistoryFirst
from ai_server.media.ocr import RapidOcr, rapidocr_installed
from ai_server.media.selection import SourceSelection
from ai_server.media.sources import MediaSources
from ai_server.metrics import Metrics
from ai_server.pipeline import Looker, Pipeline, Voice
from ai_server.service import NailaAIService
from ai_server.session import ConversationSession
from ai_server.store.home import StoreConfig, store_root
from ai_server.store.storage import Storage
from ai_server.stream_input import StreamLimits
from ai_server.stt import STTBackend, build_stt
from ai_server.tts import TTS_ENGINES, EspeakTTS, TTSBackend
from ai_server.vision.ask import VisualQuestions, answer_by
from ai_server.vision.config import VisionConfig
from ai_server.vision.detector import DETECTORS, Detector, DetectorUnavailable
from ai_server.vision.metrics import VisionMetrics
from ai_server.vision.pipeline import VisionPipeline
from shared.aio import closing
from shared.config import AIServerSettings, DeviceSettings, MediaSettings, MqttSettings, load
from shared.contract import pb_grpc
from shared.grpc_security import InsecureTransport, ai_server_credentials
from shared.mqtt import TopicKind
from shared.mqtt_link import MqttLink
from shared.version import naila_version

log = logging.getLogger("ai_server")


def _household_clock(s: AIServerSettings) -> Callable[[], datetime]:
    """The household's wall clock: ASSIST_TIMEZONE, else the machine's zone."""
    zone_name = getattr(s, "assist_timezone", "")
    if zone_name:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            zone = ZoneInfo(zone_name)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise StartupError(f"ASSIST_TIMEZONE={zone_name!r} is not a known IANA time zone") from exc
        return lambda: datetime.now(zone)
    return lambda: datetime.now().astimezone()


def server_options(s: AIServerSettings) -> list[tuple[str, int]]:
    """gRPC server options: explicit message size limits (grpc's default receive limit is 4 MiB and
    the send limit is unbounded) so a message's size is a setting, not an accident."""
    return [
        ("grpc.max_receive_message_length", s.ai_grpc_max_message_bytes),
        ("grpc.max_send_message_length", s.ai_grpc_max_message_bytes),
    ]


def max_concurrent_rpcs(s: AIServerSettings) -> int:
    """RPCs in flight at once: the allowed streams plus room for GetStatus heartbeats and probes.
    Beyond it grpc answers RESOURCE_EXHAUSTED before any of our code runs."""
    return 2 * s.ai_max_streams + 16


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("vision: loading the model failed: %s", task.exception())


async def _prime_llm(llm: LLMBackend, conversations: Conversations) -> None:
    """Evaluate the system prompt once: llama.cpp keeps it in its KV cache as the shared
    prefix of every later prompt (saves ~0.5 s on the first turn with SmolLM2 here)."""
    async def first_piece() -> None:
        async with closing(llm.stream(conversations.messages("", "Hello"))) as pieces:
            async for _ in pieces:
                break

    try:
        async with asyncio.timeout(15.0):  # not wait_for: see shared/aio.py
            await first_piece()
    except Exception as exc:  # a remote server that is down now may be up by the first turn
        log.warning("LLM warm-up failed: %s", exc)


@dataclass
class AIServer:
    """A running AI server: the grpc.aio server, its bound port and the parts behind it."""

    server: Any  # grpc.aio.Server
    port: int
    pipeline: Pipeline
    service: NailaAIService
    metrics_port: int | None
    control: ControlPlane | None
    vision: VisionPipeline | None  # implements ai_server.vision.view.Views
    assist: AssistServices  # its registry holds every household command's handler
    storage: Storage
    resources: contextlib.AsyncExitStack  # what stop() closes, last built first: engines, store, stores of assist
    home: HomeAssistant | None = None  # Home Assistant device control (HA_URL + HA_TOKEN), closed by stop()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def stop(self, grace: float | None = 1.0) -> None:
        if self.vision is not None:  # first: alerts it still owes go out while the control plane runs
            await self.vision.stop()
        if self.control is not None:  # first: its goodbye says "offline" while the broker is still reachable
            await self.control.stop()
        await self.server.stop(grace)
        self.pipeline.metrics.close()
        await self.resources.aclose()

    async def wait(self) -> None:
        await self.server.wait_for_termination()


def build_detector(settings: AIServerSettings, detector: Detector | None) -> tuple[Detector | None, str]:
    """The vision detector VISION_DETECTOR names (or the injected one), or None and why not (logged once).
    A VISION_MODEL that does not exist is a StartupError; missing libraries or checkpoint only turn vision off."""
    if not settings.vision_enabled:
        return None, "vision not enabled: VISION_ENABLED=false"
    if detector is not None:
        return detector, ""
    try:
        return DETECTORS.build(settings.vision_detector, settings), ""
    except DetectorUnavailable as exc:
        log.warning("vision is off: %s%s", exc, f" ({exc.hint})" if exc.hint else "")
        return None, f"vision unavailable: {exc}"


@dataclass
class _DeviceParts:
    """The control plane's parts that exist before the voice pipeline (they do not need it)."""

    metrics: ControlMetrics
    link: MqttLink
    presence: Presence
    guard: InboundGuard
    registry: DeviceRegistry
    policy: MediaPolicy
    commands: Commands
    media: DeviceMedia
    speaker: Speaker
    rooms: RoomRouter
    alerts: Alerts


def _device_parts(
    mqtt: MqttSettings, settings: AIServerSettings, media: MediaSettings, *, metrics: Metrics, voice: Voice,
    stt: STTBackend, conversations: Conversations, storage: Storage,
    sessions: Callable[[], list[ConversationSession]], plane: Callable[[], ControlPlane],
    sources: Callable[[], MediaSources | None], video: bool,
) -> _DeviceParts:
    control_metrics = ControlMetrics(metrics.registry)
    version = naila_version()
    fixed_id = settings.ai_mqtt_client_id
    link = MqttLink(
        mqtt,
        client_id=fixed_id or f"naila-ai-server-{uuid.uuid4().hex[:8]}",
        subscriptions=subscriptions(settings.ai_mqtt_share_group),  # several AI servers: one answer each
        # The link calls the plane, which is built last from parts that publish through this link.
        on_message=lambda topic, payload: plane().on_message(topic, payload),
        on_connect=lambda link: plane().on_connect(link),
        will=will_message(version),
        # Whole payloads (uploads up to ~67 MB) counted in bytes, not 256 of them (17.9 GB).
        max_queued_bytes=settings.ai_mqtt_queue_bytes,
        # A random id would leave an orphan session behind at every restart: persistent only when fixed.
        persistent=bool(fixed_id),
        on_overflow=lambda topic, payload: plane().on_overflow(topic, payload),
    )
    presence = Presence(link.publish, version)
    guard = InboundGuard(
        control_metrics,
        rate_per_s=settings.ai_mqtt_rate_per_s,
        burst=settings.ai_mqtt_rate_burst,
        max_media_bytes=media.media_max_upload_size,
        kind_rates={
            TopicKind.CHAT_REQUEST: settings.ai_mqtt_chat_rate_per_s,
            TopicKind.UPLOAD: settings.ai_mqtt_upload_rate_per_s,
        },
    )
    # A device silent for 3 heartbeats is offline, whatever its retained status says (M7).
    registry = DeviceRegistry(control_metrics, stale_after_s=3 * load(DeviceSettings).device_heartbeat_s)
    policy = MediaPolicy(media, max_pixels=settings.ai_media_max_pixels)

    async def video_frames(data: bytes, fmt: str, *, device_id: str | None = None) -> Analysed:
        found = sources()  # MediaSources, built after these parts from the device media below
        assert found is not None  # given only with vision, whose sources exist before the link starts
        return await found.video(data, fmt, device_id=device_id)

    device_media = DeviceMedia(
        link.publish, registry, control_metrics, policy, storage.store,
        snapshot_timeout_s=media.media_snapshot_timeout_ms / 1000.0, stt=stt,
        recording_quota_bytes_per_h=settings.ai_recording_quota_bytes_per_h,
        video_frames=video_frames if video else None,  # a clip's middle frame analysed before storing
    )
    speaker = Speaker(voice, registry, control_metrics, sessions,
                      limit=AnnounceLimit(settings.ai_announce_per_min, control_metrics))
    # Voice turns like "play it in the kitchen" / "announce dinner is ready" are carried out by code.
    rooms = RoomRouter(registry, speaker, conversations, control_metrics, presence.broadcast)
    # Alerts the broker did not take wait in a file of the data folder (ai_server/control/outbox.py).
    alerts = Alerts(link.publish, policy, device_media, control_metrics,
                    outbox=AlertOutbox(storage.store.root / OUTBOX_NAME, control_metrics.event))
    commands = Commands(link.publish, registry, control_metrics, default_timeout_s=settings.ai_command_timeout_s)
    return _DeviceParts(control_metrics, link, presence, guard, registry, policy, commands, device_media, speaker,
                        rooms, alerts)


async def start_server(
    settings: AIServerSettings,
    *,
    stt: STTBackend | None = None,
    llm: LLMBackend | None = None,
    tts: TTSBackend | None = None,
    host: str | None = None,
    port: int | None = None,
    metrics_port: int | None = None,
    warm: bool = True,
    mqtt: MqttSettings | None = None,
    media: MediaSettings | None = None,
    detector: Detector | None = None,
) -> AIServer:
    """Load (or take) the backends, warm them, build every part, and listen. ``port=0`` picks a free port.

    With ``mqtt`` and ``settings.ai_mqtt`` the control plane starts too (it connects in the
    background: a broker that is down is redialled, the gRPC service does not wait for it);
    ``media`` defaults to the MEDIA_* environment.

    Raises StartupError (one line) when a model is missing, a store cannot be opened or the port
    cannot be bound; what was built by then is closed.
    """
    resources = contextlib.AsyncExitStack()
    try:
        return await _assemble(settings, resources, stt=stt, llm=llm, tts=tts, host=host, port=port,
                               metrics_port=metrics_port, warm=warm, mqtt=mqtt, media=media, detector=detector)
    except BaseException:
        await resources.aclose()
        raise


async def _assemble(
    settings: AIServerSettings,
    resources: contextlib.AsyncExitStack,
    *,
    stt: STTBackend | None,
    llm: LLMBackend | None,
    tts: TTSBackend | None,
    host: str | None,
    port: int | None,
    metrics_port: int | None,
    warm: bool,
    mqtt: MqttSettings | None,
    media: MediaSettings | None,
    detector: Detector | None,
) -> AIServer:
    # The household's actions (ai_server/assist): the registry exists first and its handlers are installed
    # below, once their parts exist; the LLM engine is given them as tools now (it reads the offered tools
    # per request). An injected LLM keeps the tools it was built with.
    assist = AssistServices(IntentRegistry(), _household_clock(settings), str(store_root(settings.ai_media_dir)),
                            settings)
    tools = ToolBox(assist.registry, assist.now) if settings.llm_tools else None
    # -- engines (injected ones are the caller's to close) ----------------------------------------
    if stt is None:
        stt = await asyncio.to_thread(build_stt, settings)
        resources.push_async_callback(stt.close)
    if llm is None:
        llm = await asyncio.to_thread(build_llm, settings, tools)
        resources.push_async_callback(llm.close)
    if tts is None:
        tts = await asyncio.to_thread(TTS_ENGINES.build, settings.tts_backend, settings)
        resources.push_async_callback(tts.close)
    degraded = settings.tts_backend == "piper" and isinstance(tts, EspeakTTS)
    metrics = Metrics()
    # -- store: one, whatever is on; its retention runs from start-up ------------------------------
    storage = Storage.open(StoreConfig.from_settings(settings), metrics.registry)
    resources.push_async_callback(storage.close)
    storage.start()
    control_on = mqtt is not None and settings.ai_mqtt
    # Every finished exchange (voice or chat) into the transcripts table when the control plane runs.
    conversations = Conversations(settings.llm_system_prompt, settings.llm_history_turns,
                                  follow_s=settings.llm_follow_user_s,
                                  sink=storage.transcripts if control_on else None)
    if warm:
        log.info("warming up STT, LLM and TTS")
        await stt.warm()
        await llm.warm()
        await _prime_llm(llm, conversations)
        await tts.warm()
    voice = Voice(tts, settings.tts_chunk_ms)
    sessions: weakref.WeakSet[ConversationSession] = weakref.WeakSet()  # the open streams (the gRPC service's)
    limit_pixels(settings.ai_media_max_pixels)  # Pillow's own guard, for every decoder in the process
    found_detector, vision_off = build_detector(settings, detector)
    # -- the control plane's device parts ---------------------------------------------------------
    plane: ControlPlane | None = None
    sources: MediaSources | None = None

    def the_plane() -> ControlPlane:
        assert plane is not None  # the link starts (and calls it) only after the plane is built
        return plane

    parts: _DeviceParts | None = None
    if control_on:
        assert mqtt is not None
        parts = _device_parts(mqtt, settings, media or load(MediaSettings), metrics=metrics, voice=voice, stt=stt,
                              conversations=conversations, storage=storage, sessions=lambda: list(sessions),
                              plane=the_plane, sources=lambda: sources, video=found_detector is not None)
    # -- vision and where the assistant looks ----------------------------------------------------
    vision: VisionPipeline | None = None
    analyser: ImageAnalyser | None = None
    selection: SourceSelection | None = None
    looker: Looker | None = None
    history: HistoryQuestions | None = None  # past events and conversations, when the store is reachable
    warmers: list[Callable[[], None]] = []  # loaded beside the detector when warming up
    now = lambda: datetime.now().astimezone()  # noqa: E731
    if found_detector is not None:
        registry = parts.registry if parts is not None else None

        def places(device_id: str) -> tuple[str | None, str | None]:
            record = registry.get(device_id) if registry is not None else None
            return (None, None) if record is None else (record.room, record.zone)

        vision = VisionPipeline(found_detector, VisionConfig.from_settings(settings),
                                alerts=parts.alerts if parts is not None else None, store=storage.store,
                                places=places, metrics=VisionMetrics(metrics.registry))
        # One analyser (the cameras' detector: one model in memory, plus OCR) for every source.
        describer = None
        if settings.vision_describe_url and settings.vision_describe_model:
            describer = VisionDescriber(settings.vision_describe_url, settings.vision_describe_model,
                                        api_key=settings.llm_api_key, timeout_s=settings.vision_describe_timeout_s)
        ocr = RapidOcr() if rapidocr_installed() else None
        if ocr is None:  # Python 3.13: scripts/vision-no-deps.txt installs it only below 3.13
            log.warning("vision: no OCR, rapidocr-onnxruntime is not installed (it has no release for this Python): "
                        "images are described without the text in them")
        else:
            warmers.append(ocr.load)
        analyser = ImageAnalyser(found_detector, ocr, describer)
        questions = VisualQuestions(vision, analyser=analyser,  # VISION_ANSWER_BY: code or the LLM says the view
                                    answer_by=answer_by(settings.vision_answer_by, settings.llm_backend))
        looker = questions  # "who is at the door?" gets the door camera's view
        if parts is not None:
            clips = ClipDecoder(ClipLimits(max_pixels=settings.ai_media_max_video_pixels,
                                           max_s=settings.ai_media_max_video_s))
            sources = MediaSources(analyser, storage.store, views=vision, devices=parts.media, clips=clips)
            # Spec §8.10's six steps; "what did the front door camera see at 3am" is step 2 (stored events).
            history = HistoryQuestions(storage.store.events, vision, now, transcripts=storage.store.transcripts,
                                       household=settings.ai_history_household)
            selection = SourceSelection(sources, history=history, questions=questions, registry=parts.registry)
            looker = selection
    elif parts is not None:
        # No vision (VISION_ENABLED=false or no detector): stored events and past conversations still
        # answer "what was I asking about yesterday".
        history = HistoryQuestions(storage.store.events, None, now, transcripts=storage.store.transcripts,
                                   household=settings.ai_history_household)
        looker = HistoryFirst(history, None)
    if tools is not None:
        # The LLM's camera and history tools answer through the same parts as a spoken question; a tool
        # whose part is missing (no vision, no control plane) is not offered.
        install_looking(assist.registry, camera=looker if vision is not None else None, history=history)
    # -- household commands (ai_server/assist): time, date, maths, spoken routing and "Home Assistant
    # isn't set up" first, so that the features installed after may replace them ---------------------
    recognizer = await asyncio.to_thread(_install_assist_base, assist, parts.rooms if parts is not None else None)
    router = AssistRouter(assist.registry, recognizer, metrics, assist.now) if recognizer is not None else None
    # -- the voice pipeline ------------------------------------------------------------------------
    pipeline = Pipeline(
        stt, llm, tts, conversations, metrics,
        speculate_ms=settings.stt_speculative_ms, chunk_ms=settings.tts_chunk_ms, degraded=degraded,
        preemptive=settings.llm_preemptive, preemptive_quiet_ms=settings.llm_preemptive_quiet_ms, voice=voice,
        router=router,  # also carries "play it in the kitchen" and announcements (NailaReplay, ...)
        looker=looker,
    )
    if parts is not None:
        chat = Chat(parts.link.publish, pipeline, parts.speaker, parts.metrics, timeout_s=settings.ai_chat_timeout_s,
                    assist=router.answer if router is not None else None)
        uploads = Uploads(parts.policy, parts.media, chat, parts.guard.refused, parts.metrics, analyser=analyser,
                          selection=selection)
        plane = ControlPlane(parts.link, guard=parts.guard, registry=parts.registry, commands=parts.commands,
                             media=parts.media, chat=chat, uploads=uploads, alerts=parts.alerts,
                             presence=parts.presence, rooms=parts.rooms, metrics=parts.metrics,
                             max_tasks=settings.ai_chat_max_pending)
    # Timers and reminders replicated through the broker (issue 21): their own link, built before the
    # replica it calls (a closure, as the plane's link), and the mirror of the other servers' alarms.
    replica: AlarmReplica | None = None
    mirror: AlarmMirror | None = None
    if mqtt is not None and control_on:
        server_id, session = server_id_of(settings), uuid.uuid4().hex

        def the_replica() -> AlarmReplica:
            assert replica is not None  # the link starts only after the replica is built
            return replica

        replica_link = alarm_link(mqtt, settings, server_id, session, naila_version(), the_replica)
        clear = lambda topic: replica_link.publish_raw(topic, b"", qos=1, retain=True)  # noqa: E731
        mirror = AlarmMirror(clear, metrics.count, settings.ai_mqtt_share_group)
    try:
        alarm_set = alarms.install(assist, pipeline=pipeline, sessions=lambda: list(sessions),
                                   speaker=parts.speaker if parts is not None else None, remote=mirror)
        resources.callback(alarm_set.close)
    except (OSError, RuntimeError, sqlite3.Error) as exc:
        raise StartupError(f"cannot open the timer store in {assist.data_dir} (AI_MEDIA_DIR): {exc}") from exc
    if mirror is not None:
        replica = AlarmReplica(server_id, session, naila_version(), alarm_set, mirror, publish=replica_link.publish,
                               clear=clear, clock=alarm_set.timers.clock, count=metrics.count)
        replica.start()
        await replica_link.start()
        resources.push_async_callback(replica.stop)
        resources.push_async_callback(replica_link.stop, replica.goodbye())
    home = home_assistant.install(assist, count=metrics.count)  # HA_URL + HA_TOKEN: device control
    if home is not None:
        resources.push_async_callback(home.close)
    service = NailaAIService(pipeline, StreamLimits.from_settings(settings), sessions=sessions, control=plane,
                             vision=vision, vision_off=vision_off or "vision not enabled", counters=storage.counters)
    # -- gRPC -------------------------------------------------------------------------------------
    host = settings.ai_server_host if host is None else host
    port = settings.ai_server_port if port is None else port
    try:
        credentials = ai_server_credentials(settings, host)
    except InsecureTransport as exc:
        raise StartupError(str(exc)) from None
    server = grpc.aio.server(options=server_options(settings), maximum_concurrent_rpcs=max_concurrent_rpcs(settings))
    pb_grpc.add_NailaAIServicer_to_server(service, server)
    # The dashboard's reads (issue 24): alert snapshots, event history, timers; same port and credentials.
    pb_grpc.add_HouseholdServicer_to_server(HouseholdService(storage.store, alarm_set, metrics), server)
    address = f"{host}:{port}"
    try:
        bound = (server.add_insecure_port(address) if credentials is None
                 else server.add_secure_port(address, credentials))
    except RuntimeError as exc:
        bound = 0
        log.debug("bind failed: %s", exc)
    if not bound:
        raise StartupError(f"cannot listen on {host}:{port} (AI_SERVER_HOST/AI_SERVER_PORT)")
    await server.start()
    if plane is not None:
        await plane.start()
    if vision is not None and warm:
        _load_in_background(resources, [vision.load_model, *warmers])
    mport = settings.ai_server_metrics_port if metrics_port is None else metrics_port
    bound_metrics = metrics.serve_http(mport) if mport else None
    log.info(
        "AI server listening on %s:%d, %s (STT %s %s, LLM %s %s, TTS %s %s)", host, bound,
        "plaintext" if credentials is None else
        "mutual TLS" if settings.ai_server_tls_client_ca else "TLS without client certificates",
        stt.name, stt.model, llm.name, llm.model, tts.name, tts.model,
    )
    if vision is not None:
        log.info("vision: %s, the model loads %s", vision.detector.name,
                 "in the background" if warm else "with the first frame")
    return AIServer(server, int(bound), pipeline, service, bound_metrics, plane, vision, assist, storage, resources,
                    home)


def _load_in_background(resources: contextlib.AsyncExitStack, loaders: list[Callable[[], None]]) -> None:
    """In a thread, not awaited: the voice path serves at once; the first frames wait for the model.
    OCR too (about 1.4 s on first use): the first visual question should not pay for either. A failure
    is remembered (back-off) and shown by GetStatus; stop() cancels what is still loading."""

    def load_all() -> None:
        for load_one in loaders:
            try:
                load_one()
            except Exception as exc:  # one failing model must not keep the others from loading
                log.error("vision: loading %s failed: %s", getattr(load_one, "__qualname__", load_one), exc)

    loading = asyncio.get_running_loop().create_task(asyncio.to_thread(load_all), name="vision-load")
    loading.add_done_callback(_log_failure)
    resources.callback(loading.cancel)


def _install_assist_base(services: AssistServices, rooms: RoomRouter | None) -> Recognizer | None:
    """Our own intents (time, date, maths, spoken routing, the device-control defaults) and the warmed
    recognizer, or None when ASSIST_ENABLED=false. Runs in a thread: compiling the templates, the first
    recognition (~120 ms) and pint's unit registry (~0.3 s) are paid at start, not by the first command."""
    settings = services.settings
    if not getattr(settings, "assist_enabled", True):
        log.info("assist: off (ASSIST_ENABLED=false): every turn goes to the LLM")
        return None
    time_date.install(services)
    maths.install(services)
    install_defaults(services.registry)
    if rooms is not None:
        room_router.install(services, rooms)
    recognizer = Recognizer(str(getattr(settings, "assist_language", "en") or "en"))
    recognizer.warm()
    maths.units()
    return recognizer
