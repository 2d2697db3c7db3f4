"""The AI server's MQTT control plane: one broker link, every inbound message gated, parts wired.

Subscriptions (spec §5.1, §9.1): device status, command responses, media snapshots and
recordings, uploads, chat requests. Each message is parsed by topic, rate limited per device /
session (and chat / uploads per kind, whatever their session ids), size-checked and decoded with
its model, cross-checked against its topic (:mod:`ai_server.control.inbound`), then dispatched.
Cheap work (registry, matching replies) runs inline in the link's receive loop, which keeps
per-topic order; slow work (LLM answers, storing media, and the base64 decode of anything that
carries media) runs in tasks, at most ``AI_CHAT_MAX_PENDING`` at once.

Delivery (finding M1): the link is a persistent session under ``AI_MQTT_CLIENT_ID``, so chat and
upload requests published while the server is down are queued by the broker and answered when it
returns; received payloads wait in the link's inbox, bounded by ``AI_MQTT_QUEUE_BYTES`` (what does
not fit is refused as ``busy``, answered where the sender waits for a reply).

A refused message is counted by reason and logged (rate-limited). Where the sender waits on a
reply topic it is answered there: chat requests and uploads get a :class:`ChatReply` with
``error`` on ``naila/chat/{session_id}/reply`` (the conversation_id is recovered from the raw
payload when possible). Command responses and device media have no reply topic: count and log
only. Nothing a message contains can stop the receive loop.

The server's presence (retained ``naila/server/status``, last will) is in
:mod:`ai_server.control.presence`; the API for the rest of the server is the methods below.
Spoken routing requests ("play it in the kitchen", "announce dinner is ready") are carried out by
:mod:`ai_server.control.room_router`, which the plane installs as the voice pipeline's router.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
import uuid
from collections.abc import Callable, Coroutine, Iterable
from datetime import UTC, datetime
from typing import Any, Final

import aiomqtt

from ai_server.control.alerts import Alerts, PublishedAlert
from ai_server.control.chat import Chat, new_conversation_id, reply_message
from ai_server.control.commands import Commands
from ai_server.control.errors import BrokerUnavailable
from ai_server.control.inbound import InboundGuard, Rejected
from ai_server.control.media import DeviceMedia
from ai_server.control.media_check import MediaPolicy
from ai_server.control.metrics import ControlMetrics
from ai_server.control.outbox import OUTBOX_NAME, AlertOutbox
from ai_server.control.presence import Presence
from ai_server.control.registry import DeviceRegistry
from ai_server.control.room_router import RoomRouter
from ai_server.control.speech import AnnounceLimit, Speaker
from ai_server.control.uploads import Uploads
from ai_server.media.analysis import limit_pixels
from ai_server.pipeline import Pipeline, one_line
from ai_server.session import ConversationSession
from ai_server.store import MediaRecord, MediaStore
from ai_server.store.home import StoreConfig, open_store
from ai_server.store.retention import Retention, RetentionMetrics
from ai_server.store.transcripts import TranscriptSink
from shared.backoff import Backoff
from shared.config import AIServerSettings, DeviceSettings, MediaSettings, MqttSettings, load
from shared.contract import pb
from shared.mqtt import (
    MODEL_FOR_KIND,
    Broadcast,
    ChatRequest,
    CommandResponse,
    DeviceStatus,
    MediaUpload,
    MessageError,
    NailaMessage,
    OutboundMessage,
    ParsedTopic,
    TopicKind,
    WebUpload,
    is_safe_segment,
    parse_topic,
    topics,
)
from shared.mqtt.fields import JsonDict
from shared.mqtt_link import MqttLink

log = logging.getLogger(__name__)

SUBSCRIPTIONS: Final = (
    topics.ALL_DEVICE_STATUS,
    topics.ALL_COMMAND_RESPONSES,
    topics.ALL_MEDIA_SNAPSHOTS,
    topics.ALL_MEDIA_RECORDINGS,
    topics.ALL_UPLOADS,
    topics.ALL_CHAT_REQUESTS,
)

# Topics whose sender waits for a ChatReply: naila/{chat|uploads}/{session_id}/...
_REPLYABLE: Final = re.compile(r"^naila/(?:chat|uploads)/([^/]+)/[^/]+$")
_CONVERSATION_ID: Final = re.compile(rb'"conversation_id"\s*:\s*"([A-Za-z0-9_.:\-]{1,128})"')


def recover_conversation_id(payload: bytes) -> str | None:
    """The ``conversation_id`` of a payload that was refused, so the client can match the error.

    ``bytes.find`` scans even a 67 MB upload in milliseconds; only the short value after the key
    goes through the regular expression.
    """
    at = payload.find(b'"conversation_id"')
    if at < 0:
        return None
    match = _CONVERSATION_ID.match(payload, at, at + 200)
    return match.group(1).decode("ascii") if match else None


def reply_session(topic: str, parsed: ParsedTopic | None) -> str | None:
    """The session to answer a refusal on, or None when the topic has no reply topic."""
    if parsed is not None:
        return parsed.session_id if parsed.kind in (TopicKind.CHAT_REQUEST, TopicKind.UPLOAD) else None
    match = _REPLYABLE.match(topic)  # unknown upload kind etc.: the session may still be readable
    if match is None or not is_safe_segment(match.group(1)):
        return None
    return match.group(1)


class ControlPlane:
    """See the module doc. ``start()`` returns at once; the link connects (and redials) in the background."""

    def __init__(
        self,
        mqtt: MqttSettings,
        settings: AIServerSettings,
        media: MediaSettings,
        *,
        pipeline: Pipeline,
        sessions: Callable[[], Iterable[ConversationSession]] = tuple,
        store: MediaStore | None = None,
        client_id: str | None = None,
        version: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        backoff: Backoff | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.settings = settings
        self.metrics = ControlMetrics(pipeline.metrics.registry)
        self._owns_store = store is None
        config = StoreConfig.from_settings(settings)
        if store is None:
            store = open_store(config)  # the persistent data folder (ai_server/store/home.py)
        self.store = store
        # The store's policies: retention at start(), every AI_RETENTION_INTERVAL_S (wall clock ``now``) and
        # when the files pass AI_MEDIA_MAX_BYTES; every finished exchange (voice or chat) into the
        # transcripts table, off the event loop.
        self.retention = Retention(store, config.retention, interval_s=config.retention_interval_s, now=now,
                                   metrics=RetentionMetrics(pipeline.metrics.registry))
        self._retention_task: asyncio.Task[None] | None = None
        self.transcripts = TranscriptSink(store.transcripts, now)
        pipeline.conversations.sink = self.transcripts
        self.presence = Presence(self._publish, version)
        fixed_id = client_id or settings.ai_mqtt_client_id
        self.link = MqttLink(
            mqtt,
            client_id=fixed_id or f"naila-ai-server-{uuid.uuid4().hex[:8]}",
            subscriptions=SUBSCRIPTIONS,
            on_message=self._on_message,
            on_connect=self._on_connect,
            will=self.presence.will(),
            backoff=backoff,
            # Whole payloads (uploads up to ~67 MB) counted in bytes, not 256 of them (17.9 GB).
            max_queued_bytes=settings.ai_mqtt_queue_bytes,
            # A random id would leave an orphan session behind at every restart: persistent only when fixed.
            persistent=bool(fixed_id),
            on_overflow=self._on_overflow,
        )
        self.guard = InboundGuard(
            self.metrics,
            rate_per_s=settings.ai_mqtt_rate_per_s,
            burst=settings.ai_mqtt_rate_burst,
            max_media_bytes=media.media_max_upload_size,
            kind_rates={
                TopicKind.CHAT_REQUEST: settings.ai_mqtt_chat_rate_per_s,
                TopicKind.UPLOAD: settings.ai_mqtt_upload_rate_per_s,
            },
            clock=clock,
        )
        # A device silent for 3 heartbeats is offline, whatever its retained status says (M7).
        self.registry = DeviceRegistry(self.metrics, stale_after_s=3 * load(DeviceSettings).device_heartbeat_s)
        self.policy = MediaPolicy(media, max_pixels=settings.ai_media_max_pixels)
        limit_pixels(settings.ai_media_max_pixels)  # Pillow's own guard, for every decoder in the process
        self.commands = Commands(
            self._publish, self.registry, self.metrics, default_timeout_s=settings.ai_command_timeout_s
        )
        self.media = DeviceMedia(
            self._publish,
            self.registry,
            self.metrics,
            self.policy,
            self.store,
            snapshot_timeout_s=media.media_snapshot_timeout_ms / 1000.0,
            stt=pipeline.stt,
            recording_quota_bytes_per_h=settings.ai_recording_quota_bytes_per_h,
            clock=clock,
        )
        self.speaker = Speaker(pipeline, self.registry, self.metrics, sessions,
                               limit=AnnounceLimit(settings.ai_announce_per_min, self.metrics, clock=clock))
        self.chat = Chat(self._publish, pipeline, self.speaker, self.metrics, timeout_s=settings.ai_chat_timeout_s)
        self.uploads = Uploads(self.policy, self.media, self.chat, self.guard, self.metrics)
        # Alerts the broker did not take wait in a file of the data folder (ai_server/control/outbox.py).
        self.alerts = Alerts(self._publish, self.policy, self.media, self.metrics,
                             outbox=AlertOutbox(store.root / OUTBOX_NAME, self.metrics.event))
        # Voice turns like "play it in the kitchen" / "announce dinner is ready" are carried out here
        # rather than answered by the LLM. Set now, not at start(): speaking needs the hub, not the broker.
        self.rooms = RoomRouter(
            self.registry, self.speaker, pipeline.conversations, self.metrics, self.presence.broadcast
        )
        self.pipeline = pipeline
        pipeline.router = self.rooms
        self.max_tasks = settings.ai_chat_max_pending
        self._tasks: set[asyncio.Task[Any]] = set()
        self._refusals: set[asyncio.Task[None]] = set()  # "busy" answers to what the inbox had no room for

    # -- API for the rest of the AI server ------------------------------------------------------
    async def send_command(
        self, device_id: str, command: str, params: JsonDict | None = None, timeout_s: float | None = None
    ) -> JsonDict:
        """See :meth:`Commands.send_command`."""
        return await self.commands.send_command(device_id, command, params, timeout_s)

    async def request_snapshot(
        self, device_id: str, params: JsonDict | None = None, timeout_s: float | None = None
    ) -> MediaUpload:
        """See :meth:`DeviceMedia.request_snapshot`."""
        return await self.media.request_snapshot(device_id, params, timeout_s)

    async def request_recording(
        self, device_id: str, params: JsonDict | None = None, timeout_s: float | None = None
    ) -> MediaRecord:
        """See :meth:`DeviceMedia.request_recording`."""
        return await self.media.request_recording(device_id, params, timeout_s)

    async def publish_alert(
        self,
        alert_type: str,
        zone: str,
        confidence: float,
        source_device: str,
        snapshot_available: bool = False,
        snapshot_bytes: bytes | None = None,
        *,
        time: datetime | None = None,
    ) -> PublishedAlert:
        """See :meth:`Alerts.publish_alert`."""
        return await self.alerts.publish_alert(
            alert_type, zone, confidence, source_device, snapshot_available, snapshot_bytes, time=time
        )

    async def broadcast(self, message: str, room: str | None = None) -> Broadcast:
        """Publish a :class:`Broadcast` (see :meth:`Presence.broadcast`), then *speak* it through the hub on
        ``room``'s online speaker devices, or on every online speaker device when ``room`` is None:
        an announcement is something people expect to hear. Publishing comes first and raises
        :class:`BrokerUnavailable` as before, and then nothing is spoken (a retry does not say it twice).
        Speaking is best effort (see :meth:`RoomRouter.speak_broadcast`): no speaker online there or no
        hub connected is logged and counted (``broadcast_unspoken``), not raised."""
        sent = await self.presence.broadcast(message, room)
        self.rooms.speak_broadcast(message, room)
        return sent

    def device_infos(self) -> list[pb.DeviceInfo]:
        """For GetStatus: every device the registry knows, sorted by id."""
        return self.registry.device_infos()

    def counters(self) -> dict[str, int]:
        """For GetStatus: control plane counters (``mqtt_*``) and what retention pruned (``store_pruned_*``)."""
        return {**self.metrics.snapshot(), **self.retention.metrics.snapshot()}

    @property
    def connected(self) -> bool:
        return self.link.connected.is_set()

    # -- lifecycle --------------------------------------------------------------------------------
    async def start(self) -> None:
        log.info("MQTT control plane: connecting to %s as %s", self.link.address, self.link.client_id)
        if self._retention_task is None:
            self._retention_task = asyncio.get_running_loop().create_task(self.retention.run(), name="retention")
        await self.link.start()

    async def wait_connected(self, timeout_s: float) -> None:
        await asyncio.wait_for(self.link.connected.wait(), timeout_s)

    async def stop(self) -> None:
        """Retained offline status (clean goodbye), disconnect, stop tasks, close an owned store."""
        self.rooms.active = False  # a stopped plane routes nothing: "play it in the kitchen" goes to the LLM
        if self.pipeline.router is self.rooms:
            self.pipeline.router = None
        await self.link.stop(goodbye=self.presence.status(online=False))
        tasks = [*self._tasks, *self._refusals]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self.commands.pending.cancel_all()
        self.media.snapshots.cancel_all()
        self.media.recordings.cancel_all()
        if self._retention_task is not None:
            self._retention_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._retention_task
            self._retention_task = None
        if self.pipeline.conversations.sink is self.transcripts:
            self.pipeline.conversations.sink = None
        await self.transcripts.close()  # what is queued is written before the store closes
        if self._owns_store:
            self.store.close()

    async def _publish(self, message: OutboundMessage) -> None:
        await self.link.publish(message)

    async def _on_connect(self, link: MqttLink) -> None:
        try:
            await self.presence.announce()
        except BrokerUnavailable as exc:  # the link dropped again at once; the next connect retries
            log.warning("MQTT control plane: could not announce the server: %s", exc)
        if len(self.alerts.outbox):  # alerts owed from while the broker was away (or before a restart)
            task = self.alerts.start_replay()
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    # -- inbound --------------------------------------------------------------------------------
    async def _on_message(self, topic: str, payload: bytes) -> None:
        parsed: ParsedTopic | None = None
        try:
            try:
                parsed = parse_topic(topic)
            except MessageError as exc:
                raise Rejected("unknown_topic", str(exc)) from None
            await self._handle(topic, parsed, payload)
        except Rejected as err:
            await self._refuse(topic, parsed, payload, err)

    async def _handle(self, topic: str, parsed: ParsedTopic, payload: bytes) -> None:
        if parsed.kind is TopicKind.DEVICE_STATUS and not payload.strip():
            assert parsed.device_id is not None
            self.registry.forget(parsed.device_id)  # its retained status was cleared
            return
        self.guard.admit(parsed)
        if MODEL_FOR_KIND[parsed.kind].carries_media:
            # base64 of up to 50 MB takes a while (and its copy is big): decoded in a task, counted
            # against AI_CHAT_MAX_PENDING like the work that follows, so the receive loop goes on
            # serving statuses and command responses meanwhile.
            conversation = recover_conversation_id(payload) if parsed.kind is TopicKind.UPLOAD else None
            self._spawn(topic, parsed, self._decode_media(topic, parsed, payload), conversation)
            return
        work = self._accept(topic, parsed, self.guard.decode(parsed, payload))
        if work is not None:
            self._spawn(topic, parsed, *work)

    async def _decode_media(self, topic: str, parsed: ParsedTopic, payload: bytes) -> None:
        message = await asyncio.to_thread(self.guard.decode, parsed, payload)
        del payload  # the decoded bytes are all that is needed from here on
        work = self._accept(topic, parsed, message)
        if work is not None:
            await work[0]

    def _accept(
        self, topic: str, parsed: ParsedTopic, message: NailaMessage
    ) -> tuple[Coroutine[Any, Any, Any], str | None] | None:
        """Count and dispatch a decoded message; returns its slow work (and conversation) to run."""
        self.metrics.handle(parsed.kind.value)
        device_id = parsed.device_id
        if device_id is not None and parsed.kind is not TopicKind.DEVICE_STATUS:
            self.registry.touch(device_id)
        return self._dispatch(topic, parsed, message)

    def _dispatch(
        self, topic: str, parsed: ParsedTopic, message: NailaMessage
    ) -> tuple[Coroutine[Any, Any, Any], str | None] | None:
        device_id = parsed.device_id or ""
        if isinstance(message, DeviceStatus):
            self.registry.update(message)
        elif isinstance(message, CommandResponse):
            # A device also answers here, with an error, a snapshot/recording request it cannot serve (issue 22).
            if not self.commands.on_response(device_id, message) and not self.media.on_device_error(device_id, message):
                raise Rejected("unmatched", f"command response {message.request_id} from {device_id}: nobody waits")
        elif isinstance(message, MediaUpload) and parsed.kind is TopicKind.MEDIA_SNAPSHOT:
            self.media.on_snapshot(device_id, message)
        elif isinstance(message, MediaUpload):
            return self.media.on_recording(device_id, message), None
        elif isinstance(message, WebUpload):
            return self.uploads.on_upload(topic, message), message.conversation_id
        elif isinstance(message, ChatRequest):
            return self.chat.on_request(message), message.conversation_id
        else:  # a topic we subscribe to but do not serve: a programming error, not the sender's
            raise Rejected("unknown_topic", f"no handler for {parsed.kind.value}")
        return None

    def _on_overflow(self, topic: str, payload: bytes) -> None:
        """The link's inbox had no room for this message (already acknowledged to the broker):
        count and log it as ``busy`` and, where the sender waits on a reply topic, tell it."""
        parsed: ParsedTopic | None = None
        with contextlib.suppress(MessageError):
            parsed = parse_topic(topic)
        err = Rejected("busy", f"{len(payload)} bytes refused: {self.link.queued_bytes} bytes of messages "
                       "are waiting already; try again shortly")
        conversation = recover_conversation_id(payload) if reply_session(topic, parsed) else None
        task = asyncio.get_running_loop().create_task(self._refuse(topic, parsed, b"", err, conversation),
                                                      name="mqtt-refusal")
        self._refusals.add(task)
        task.add_done_callback(self._refusals.discard)

    def _spawn(
        self,
        topic: str,
        parsed: ParsedTopic,
        work: Coroutine[Any, Any, Any],
        conversation_id: str | None = None,
    ) -> None:
        if len(self._tasks) >= self.max_tasks:
            work.close()
            raise Rejected("busy", f"{len(self._tasks)} requests are being handled already; try again shortly")

        async def run() -> None:
            try:
                await work
            except Rejected as err:
                await self._refuse(topic, parsed, b"", err, conversation_id)
            except BrokerUnavailable as exc:
                self.metrics.event("reply_lost")
                log.warning("MQTT control plane: reply to %s lost: %s", topic, exc)
            except Exception:  # a bug: log it, keep serving everyone else
                self.metrics.event("handler_error")
                log.exception("MQTT control plane: handling %s failed", topic)

        task = asyncio.get_running_loop().create_task(run(), name=f"mqtt-{parsed.kind.value}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _refuse(
        self,
        topic: str,
        parsed: ParsedTopic | None,
        payload: bytes,
        err: Rejected,
        conversation_id: str | None = None,
    ) -> None:
        self.guard.refused(topic, err)
        session_id = reply_session(topic, parsed)
        if session_id is None:
            return
        conversation = conversation_id or recover_conversation_id(payload) or new_conversation_id()
        try:
            await self.chat.publish_reply(
                reply_message(session_id, conversation, error=f"refused ({err.reason}): {err.detail}")
            )
        except (BrokerUnavailable, aiomqtt.MqttError, MessageError) as exc:
            log.warning("MQTT control plane: could not answer the refusal on %s: %s", topic, one_line(exc))
