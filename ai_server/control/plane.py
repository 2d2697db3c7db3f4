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
:mod:`ai_server.control.room_router`. The plane builds nothing: ai_server/assembly.py builds its
parts and the link, and the plane's table maps each subscribed topic kind to the part that serves it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Callable, Coroutine
from datetime import datetime
from typing import Any, Final, TypeAlias, cast

import aiomqtt

from ai_server.control.alerts import Alerts, PublishedAlert
from ai_server.control.chat import Chat, new_conversation_id, reply_message
from ai_server.control.commands import Commands
from ai_server.control.errors import BrokerUnavailable, Rejected
from ai_server.control.inbound import InboundGuard
from ai_server.control.media import DeviceMedia
from ai_server.control.metrics import ControlMetrics
from ai_server.control.presence import Presence
from ai_server.control.registry import DeviceRegistry
from ai_server.control.room_router import RoomRouter
from ai_server.control.uploads import Uploads
from ai_server.store import MediaRecord
from shared.aio import wait_event
from shared.contract import pb
from shared.errors import one_line
from shared.mqtt import (
    MODEL_FOR_KIND,
    Broadcast,
    ChatRequest,
    CommandResponse,
    DeviceStatus,
    MediaUpload,
    MessageError,
    NailaMessage,
    ParsedTopic,
    TopicKind,
    WebUpload,
    is_safe_segment,
    parse_topic,
    topics,
)
from shared.mqtt.fields import JsonDict
from shared.mqtt.recover import recover_id
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
# Requests that exactly one AI server must answer, however many share the broker (issue 21). Device
# statuses stay plain (every server keeps the registry), and so do command responses and media:
# they answer the request of the one server that sent it, which must be the one that receives them.
SHARED_REQUESTS: Final = (topics.ALL_UPLOADS, topics.ALL_CHAT_REQUESTS)


def subscriptions(share_group: str) -> tuple[str, ...]:
    """The control plane's topic filters: AI_MQTT_SHARE_GROUP's requests as shared subscriptions
    (``$share/<group>/<filter>``: the broker hands each message to one member of the group), or all
    plain when the group is empty (one AI server, as before)."""
    if not share_group:
        return SUBSCRIPTIONS
    return tuple(f"$share/{share_group}/{f}" if f in SHARED_REQUESTS else f for f in SUBSCRIPTIONS)

# Topics whose sender waits for a ChatReply: naila/{chat|uploads}/{session_id}/...
_REPLYABLE: Final = re.compile(r"^naila/(?:chat|uploads)/([^/]+)/[^/]+$")


# A handler's slow work (run in a task) and the conversation a refusal is answered in; None: done inline.
Work: TypeAlias = tuple[Coroutine[Any, Any, Any], str | None] | None
Handler: TypeAlias = Callable[[str, str, NailaMessage], Work]


def recover_conversation_id(payload: bytes) -> str | None:
    """The ``conversation_id`` of a payload that was refused, so the client can match the error."""
    return recover_id(payload, "conversation_id")


def reply_session(topic: str, parsed: ParsedTopic | None) -> str | None:
    """The session to answer a refusal on, or None when the topic has no reply topic."""
    if parsed is not None:
        return parsed.session_id if parsed.kind in (TopicKind.CHAT_REQUEST, TopicKind.UPLOAD) else None
    match = _REPLYABLE.match(topic)  # unknown upload kind etc.: the session may still be readable
    if match is None or not is_safe_segment(match.group(1)):
        return None
    return match.group(1)


class ControlPlane:
    """See the module doc. Built by ai_server/assembly.py from the parts it dispatches to; ``start()``
    returns at once; the link connects (and redials) in the background."""

    def __init__(
        self,
        link: MqttLink,
        *,
        guard: InboundGuard,
        registry: DeviceRegistry,
        commands: Commands,
        media: DeviceMedia,
        chat: Chat,
        uploads: Uploads,
        alerts: Alerts,
        presence: Presence,
        rooms: RoomRouter,
        metrics: ControlMetrics,
        max_tasks: int,
    ) -> None:
        self.link = link
        self.guard = guard
        self.registry = registry
        self.commands = commands
        self.media = media
        self.chat = chat
        self.uploads = uploads
        self.alerts = alerts
        self.presence = presence
        self.rooms = rooms
        self.metrics = metrics
        self.max_tasks = max_tasks  # AI_CHAT_MAX_PENDING
        self._tasks: set[asyncio.Task[Any]] = set()
        self._refusals: set[asyncio.Task[None]] = set()  # "busy" answers to what the inbox had no room for
        # One handler per topic kind we subscribe to: cheap work returns None (done inline, in topic
        # order); slow work returns its coroutine and the conversation a refusal would be answered in.
        self._handlers: dict[TopicKind, Handler] = {
            TopicKind.DEVICE_STATUS: self._on_status,
            TopicKind.DEVICE_COMMAND_RESPONSE: self._on_response,
            TopicKind.MEDIA_SNAPSHOT: self._on_snapshot,
            TopicKind.MEDIA_RECORDING: self._on_recording,
            TopicKind.UPLOAD: self._on_upload,
            TopicKind.CHAT_REQUEST: self._on_chat,
        }

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
        """For GetStatus: control plane counters (``mqtt_*``)."""
        return self.metrics.snapshot()

    @property
    def connected(self) -> bool:
        return self.link.connected.is_set()

    # -- lifecycle --------------------------------------------------------------------------------
    async def start(self) -> None:
        log.info("MQTT control plane: connecting to %s as %s", self.link.address, self.link.client_id)
        await self.link.start()

    async def wait_connected(self, timeout_s: float) -> None:
        if not await wait_event(self.link.connected, timeout_s):  # shared.aio: not wait_for (3.11 cancel bug)
            raise TimeoutError(f"MQTT broker {self.link.address} not connected within {timeout_s} s")

    async def stop(self) -> None:
        """Retained offline status (clean goodbye), disconnect, stop tasks (the store is the assembly's)."""
        self.rooms.active = False  # a stopped plane routes nothing: "play it in the kitchen" goes to the LLM
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

    async def on_connect(self, link: MqttLink) -> None:
        try:
            await self.presence.announce()
        except BrokerUnavailable as exc:  # the link dropped again at once; the next connect retries
            log.warning("MQTT control plane: could not announce the server: %s", exc)
        if len(self.alerts.outbox):  # alerts owed from while the broker was away (or before a restart)
            task = self.alerts.start_replay()
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    # -- inbound --------------------------------------------------------------------------------
    async def on_message(self, topic: str, payload: bytes) -> None:
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

    def _dispatch(self, topic: str, parsed: ParsedTopic, message: NailaMessage) -> Work:
        handler = self._handlers.get(parsed.kind)
        if handler is None:  # a topic we subscribe to but do not serve: a programming error, not the sender's
            raise Rejected("unknown_topic", f"no handler for {parsed.kind.value}")
        return handler(topic, parsed.device_id or "", message)

    # The handlers: the message's model is the one MODEL_FOR_KIND gives the topic kind (the guard
    # decoded it with that model), so each narrows with a cast, not an isinstance chain.
    def _on_status(self, topic: str, device_id: str, message: NailaMessage) -> Work:
        self.registry.update(cast(DeviceStatus, message))
        return None

    def _on_response(self, topic: str, device_id: str, message: NailaMessage) -> Work:
        response = cast(CommandResponse, message)
        # A device also answers here, with an error, a snapshot/recording request it cannot serve (issue 22).
        if not self.commands.on_response(device_id, response) and not self.media.on_device_error(device_id, response):
            raise Rejected("unmatched", f"command response {response.request_id} from {device_id}: nobody waits")
        return None

    def _on_snapshot(self, topic: str, device_id: str, message: NailaMessage) -> Work:
        self.media.on_snapshot(device_id, cast(MediaUpload, message))
        return None

    def _on_recording(self, topic: str, device_id: str, message: NailaMessage) -> Work:
        return self.media.on_recording(device_id, cast(MediaUpload, message)), None

    def _on_upload(self, topic: str, device_id: str, message: NailaMessage) -> Work:
        upload = cast(WebUpload, message)
        return self.uploads.on_upload(topic, upload), upload.conversation_id

    def _on_chat(self, topic: str, device_id: str, message: NailaMessage) -> Work:
        request = cast(ChatRequest, message)
        return self.chat.on_request(request), request.conversation_id

    def on_overflow(self, topic: str, payload: bytes) -> None:
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
