"""``naila ai-server``: load STT, LLM and TTS, then serve NailaAI over gRPC.

In-process use (tests, the demo, benchmarks)::

    server = await start_server(load(AIServerSettings), port=0)   # loads + warms models
    ... connect to f"127.0.0.1:{server.port}" ...
    await server.stop()

Pass ``stt=``, ``llm=`` and/or ``tts=`` to inject backends (fakes for failure tests, or
models already loaded once per test session); injected backends are not closed by
``stop()``. Pass ``mqtt=`` (broker settings) to also run the MQTT control plane
(ai_server/control: device registry, commands, snapshots, chat, uploads, alerts) unless
``AI_MQTT=false``; ``naila ai-server`` always passes the MQTT_* settings.

Vision (``VISION_ENABLED``, on by default) builds :class:`~ai_server.vision.pipeline.VisionPipeline`
as ``server.vision``; its YOLO model loads on the first frame (or in a background thread when
``warm``), so starting costs no torch import. Pass ``detector=`` to inject one (a model loaded once
per test session, or a scripted fake). Without torch/ultralytics the server runs without vision and
says so once in the log and in GetStatus (``vision_model``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sqlite3
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import grpc

from ai_server.aio import closing
from ai_server.assist import alarms, maths, time_date
from ai_server.assist.core import AssistServices, IntentRegistry
from ai_server.assist.intents import Recognizer
from ai_server.assist.router import AssistRouter, install_defaults
from ai_server.control import ControlPlane, room_router
from ai_server.conversation import Conversations
from ai_server.errors import StartupError
from ai_server.llm import LLMBackend
from ai_server.llm.engines import build_llm
from ai_server.metrics import Metrics
from ai_server.pipeline import Pipeline
from ai_server.service import NailaAIService
from ai_server.store.home import StoreConfig, store_root
from ai_server.stream_input import StreamLimits
from ai_server.stt import STTBackend, build_stt
from ai_server.tts import TTS_ENGINES, EspeakTTS, TTSBackend
from shared.config import AIServerSettings, ConfigError, MediaSettings, MqttSettings, load
from shared.contract import pb_grpc
from shared.grpc_security import InsecureTransport, ai_server_credentials

if TYPE_CHECKING:
    from ai_server.vision.detector import Detector
    from ai_server.vision.pipeline import VisionPipeline

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


def _install_assist_base(services: AssistServices, control: ControlPlane | None) -> Recognizer | None:
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
    if control is not None:
        room_router.install(services, control.rooms)
    recognizer = Recognizer(str(getattr(settings, "assist_language", "en") or "en"))
    recognizer.warm()
    maths.units()
    return recognizer


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


@dataclass
class AIServer:
    """A running AI server: the grpc.aio server, its bound port and the pipeline behind it."""

    server: Any  # grpc.aio.Server
    port: int
    pipeline: Pipeline
    service: NailaAIService
    metrics_port: int | None = None
    control: ControlPlane | None = None
    vision: VisionPipeline | None = None  # implements ai_server.vision.view.Views
    _owned: list[Any] = field(default_factory=list)
    assist: AssistServices | None = None  # its registry holds every household command's handler

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def stop(self, grace: float | None = 1.0) -> None:
        if self.vision is not None:  # first: alerts it still owes go out while the control plane runs
            self.pipeline.looker = None
            await self.vision.stop()
        if self.control is not None:  # first: its goodbye says "offline" while the broker is still reachable
            await self.control.stop()
        await self.server.stop(grace)
        self.pipeline.metrics.close()
        for backend in self._owned:
            with contextlib.suppress(Exception):
                result = backend.close()
                if asyncio.iscoroutine(result):
                    await result

    async def wait(self) -> None:
        await self.server.wait_for_termination()


def build_vision(
    settings: AIServerSettings,
    metrics: Metrics,
    control: ControlPlane | None,
    detector: Detector | None = None,
) -> tuple[VisionPipeline | None, str]:
    """The vision pipeline, or None and why not (logged once). A VISION_MODEL that does not exist is
    a StartupError; a missing torch/ultralytics or shipped checkpoint only turns vision off."""
    if not settings.vision_enabled:
        return None, "vision not enabled: VISION_ENABLED=false"
    from ai_server.vision.detector import DETECTORS, DetectorUnavailable

    if detector is None:
        try:
            detector = DETECTORS.build(settings.vision_detector, settings)
        except DetectorUnavailable as exc:
            log.warning("vision is off: %s%s", exc, f" ({exc.hint})" if exc.hint else "")
            return None, f"vision unavailable: {exc}"
    from ai_server.vision.config import VisionConfig
    from ai_server.vision.metrics import VisionMetrics
    from ai_server.vision.pipeline import VisionPipeline

    def places(device_id: str) -> tuple[str | None, str | None]:
        record = control.registry.get(device_id) if control is not None else None
        return (None, None) if record is None else (record.room, record.zone)

    vision = VisionPipeline(
        detector, VisionConfig.from_settings(settings),
        alerts=control, store=control.store if control is not None else None,
        store_config=StoreConfig.from_settings(settings), places=places, metrics=VisionMetrics(metrics.registry),
    )
    if control is None:
        try:
            vision.store()  # AI_MQTT=false: the vision's own store opens now, with its retention
        except (OSError, RuntimeError, sqlite3.Error) as exc:
            raise StartupError(f"cannot open the media store in {store_root(settings.ai_media_dir)} "
                               f"(AI_MEDIA_DIR): {exc}") from exc
    return vision, ""


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
        await asyncio.wait_for(first_piece(), 15.0)
    except Exception as exc:  # a remote server that is down now may be up by the first turn
        log.warning("LLM warm-up failed: %s", exc)


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
    """Load (or take) the backends, warm them, and listen. ``port=0`` picks a free port.

    With ``mqtt`` and ``settings.ai_mqtt`` the control plane starts too (it connects in the
    background: a broker that is down is redialled, the gRPC service does not wait for it);
    ``media`` defaults to the MEDIA_* environment.

    Raises StartupError (one line) when a model is missing or the port cannot be bound.
    """
    owned: list[Any] = []
    if stt is None:
        stt = await asyncio.to_thread(build_stt, settings)
        owned.append(stt)
    if llm is None:
        llm = await asyncio.to_thread(build_llm, settings)
        owned.append(llm)
    if tts is None:
        tts = await asyncio.to_thread(TTS_ENGINES.build, settings.tts_backend, settings)
        owned.append(tts)
    degraded = settings.tts_backend == "piper" and isinstance(tts, EspeakTTS)
    conversations = Conversations(settings.llm_system_prompt, settings.llm_history_turns,
                                  follow_s=settings.llm_follow_user_s)
    if warm:
        log.info("warming up STT, LLM and TTS")
        await stt.warm()
        await llm.warm()
        await _prime_llm(llm, conversations)
        await tts.warm()
    pipeline = Pipeline(
        stt, llm, tts, conversations, Metrics(),
        speculate_ms=settings.stt_speculative_ms, chunk_ms=settings.tts_chunk_ms, degraded=degraded,
        preemptive=settings.llm_preemptive,
    )
    service = NailaAIService(pipeline, StreamLimits.from_settings(settings))
    control: ControlPlane | None = None
    if mqtt is not None and settings.ai_mqtt:
        try:
            control = ControlPlane(
                mqtt, settings, media or load(MediaSettings), pipeline=pipeline,
                sessions=lambda: list(service.sessions),
            )
        except (OSError, RuntimeError, sqlite3.Error) as exc:
            where = store_root(settings.ai_media_dir)
            raise StartupError(f"cannot open the media store in {where} (AI_MEDIA_DIR): {exc}") from exc
        service.control = control
    try:
        vision, why_not = build_vision(settings, pipeline.metrics, control, detector)
    except StartupError:
        if control is not None:
            await control.stop()  # not started yet: only frees its media store
        raise
    service.vision = vision
    if why_not:
        service.vision_off = why_not
    warmers: list[Callable[[], None]] = []  # loaded beside the detector when warming up
    if vision is not None:
        from ai_server.media.analysis import ImageAnalyser
        from ai_server.media.ocr import RapidOcr
        from ai_server.vision.ask import VisualQuestions, answer_by

        # One analyser (the cameras' detector: one model in memory, plus OCR) for every source.
        describer = None
        if settings.vision_describe_url and settings.vision_describe_model:
            from ai_server.media.describe import VisionDescriber

            describer = VisionDescriber(settings.vision_describe_url, settings.vision_describe_model,
                                        api_key=settings.llm_api_key, timeout_s=settings.vision_describe_timeout_s)
        ocr = RapidOcr()
        warmers.append(ocr.load)
        analyser = ImageAnalyser(vision.detector, ocr, describer)
        questions = VisualQuestions(vision, analyser=analyser,  # VISION_ANSWER_BY: code or the LLM says the view
                                    answer_by=answer_by(settings.vision_answer_by, settings.llm_backend))
        pipeline.looker = questions  # "who is at the door?" gets the door camera's view
        if control is not None:
            from ai_server.media.history import HistoryQuestions
            from ai_server.media.selection import SourceSelection
            from ai_server.media.sources import MediaSources

            sources = MediaSources(analyser, control.store, views=vision, plane=control)
            control.uploads.analyser = analyser
            control.media.video_frames = sources.video  # clips: their middle frame analysed before storing
            # Spec §8.10's six steps; "what did the front door camera see at 3am" is step 2 (stored events).
            history = HistoryQuestions(control.store.events, vision, lambda: datetime.now().astimezone(),
                                       transcripts=control.store.transcripts,
                                       household=settings.ai_history_household)
            selection = SourceSelection(sources, history=history, questions=questions, registry=control.registry)
            control.uploads.selection = selection
            pipeline.looker = selection
    elif control is not None:
        from ai_server.media.history import HistoryQuestions
        from ai_server.media.looker import HistoryFirst

        # No vision (VISION_ENABLED=false or no torch): stored events and past conversations still
        # answer "what was I asking about yesterday".
        pipeline.looker = HistoryFirst(HistoryQuestions(control.store.events, None, lambda: datetime.now().astimezone(),
                                                        transcripts=control.store.transcripts,
                                                        household=settings.ai_history_household), None)
    # One intent registry for every household command (ai_server/assist): time, date, maths, spoken
    # routing and "Home Assistant isn't set up" first, so that the features below may replace them.
    assist = AssistServices(IntentRegistry(), _household_clock(settings), str(store_root(settings.ai_media_dir)),
                            settings)
    recognizer = await asyncio.to_thread(_install_assist_base, assist, control)
    # assist features: install(services) here
    try:
        owned.append(alarms.install(assist, pipeline=pipeline, sessions=lambda: list(service.sessions),
                                    speaker=control.speaker if control is not None else None))
    except (OSError, RuntimeError, sqlite3.Error) as exc:
        if control is not None:
            await control.stop()  # not started yet: only frees its media store
        raise StartupError(f"cannot open the timer store in {assist.data_dir} (AI_MEDIA_DIR): {exc}") from exc
    from ai_server.assist import home_assistant

    home = home_assistant.install(assist, count=pipeline.metrics.count)  # HA_URL + HA_TOKEN: device control
    if home is not None:
        owned.append(home)
    from ai_server.llm.openai_compat import OpenAICompatLLM

    if settings.llm_tools and isinstance(pipeline.llm, OpenAICompatLLM):  # the same actions as LLM tools
        from ai_server.llm.tools import ToolBox

        pipeline.llm.tools = ToolBox(assist.registry, assist.now)
    if recognizer is not None:  # ASSIST_ENABLED: the intent fast path before the LLM, voice and chat
        router = AssistRouter(assist.registry, recognizer, pipeline.metrics, assist.now)
        pipeline.router = router  # also carries "play it in the kitchen" and announcements (NailaReplay, ...)
        if control is not None:
            control.chat.assist = router.answer
    host = settings.ai_server_host if host is None else host
    port = settings.ai_server_port if port is None else port
    try:
        credentials = ai_server_credentials(settings, host)
    except InsecureTransport as exc:
        if control is not None:
            await control.stop()  # not started yet: only frees its media store
        raise StartupError(str(exc)) from None
    server = grpc.aio.server(options=server_options(settings),
                             maximum_concurrent_rpcs=max_concurrent_rpcs(settings))
    pb_grpc.add_NailaAIServicer_to_server(service, server)
    address = f"{host}:{port}"
    try:
        bound = (server.add_insecure_port(address) if credentials is None
                 else server.add_secure_port(address, credentials))
    except RuntimeError as exc:
        bound = 0
        log.debug("bind failed: %s", exc)
    if not bound:
        if control is not None:
            await control.stop()  # not started yet: only frees its media store
        raise StartupError(f"cannot listen on {host}:{port} (AI_SERVER_HOST/AI_SERVER_PORT)")
    await server.start()
    if control is not None:
        await control.start()
    if vision is not None and warm:
        # In a thread, not awaited: the voice path serves at once; the first frames wait for the model.
        # OCR too (about 1.4 s on first use): the first visual question should not pay for either.
        loaders = [vision.load_model, *warmers]  # a failure is remembered (back-off) and shown by GetStatus

        def load_all() -> None:
            for load in loaders:
                try:
                    load()
                except Exception as exc:  # one failing model must not keep the others from loading
                    log.error("vision: loading %s failed: %s", getattr(load, "__qualname__", load), exc)

        loading = asyncio.get_running_loop().create_task(asyncio.to_thread(load_all), name="vision-load")
        loading.add_done_callback(_log_failure)
        owned.append(_Background(loading))
    mport = settings.ai_server_metrics_port if metrics_port is None else metrics_port
    bound_metrics = pipeline.metrics.serve_http(mport) if mport else None
    log.info(
        "AI server listening on %s:%d, %s (STT %s %s, LLM %s %s, TTS %s %s)", host, bound,
        "plaintext" if credentials is None else
        "mutual TLS" if settings.ai_server_tls_client_ca else "TLS without client certificates",
        stt.name, stt.model, llm.name, llm.model, tts.name, tts.model,
    )
    if vision is not None:
        log.info("vision: %s, the model loads %s", vision.detector.name,
                 "in the background" if warm else "with the first frame")
    return AIServer(server, int(bound), pipeline, service, bound_metrics, control, vision, owned, assist)


@dataclass
class _Background:
    """A background task among the owned backends: ``close()`` cancels it on stop."""

    task: asyncio.Task[None]

    def close(self) -> None:
        self.task.cancel()


async def _serve(settings: AIServerSettings, mqtt: MqttSettings, media: MediaSettings) -> None:
    server = await start_server(settings, mqtt=mqtt, media=media)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down")
    await server.stop(grace=2.0)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="naila ai-server",
        description="Serve NailaAI over gRPC: streaming STT -> LLM -> TTS, and the MQTT control plane. "
        "Configured by AI_SERVER_*, STT_*, LLM_*, TTS_*, AI_*, MQTT_* and MEDIA_* environment variables "
        "(see `naila config`).",
    )
    parser.add_argument("--host", help="bind address (overrides AI_SERVER_HOST)")
    parser.add_argument("--port", type=int, help="gRPC port (overrides AI_SERVER_PORT)")
    parser.add_argument("--metrics-port", type=int,
                        help="serve Prometheus /metrics on this port (overrides AI_SERVER_METRICS_PORT)")
    ns = parser.parse_args(argv)
    overrides: dict[str, Any] = {}
    if ns.host is not None:
        overrides["ai_server_host"] = ns.host
    if ns.port is not None:
        overrides["ai_server_port"] = ns.port
    if ns.metrics_port is not None:
        overrides["ai_server_metrics_port"] = ns.metrics_port
    try:
        settings = load(AIServerSettings, **overrides)
        mqtt = load(MqttSettings)
        media = load(MediaSettings)
    except ConfigError as exc:
        print(f"naila ai-server: {exc}", file=sys.stderr)
        return 2
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    try:
        asyncio.run(_serve(settings, mqtt, media))
    except StartupError as exc:
        print(f"naila ai-server: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
