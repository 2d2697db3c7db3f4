"""Payload models for every NAILA MQTT message (spec §5.2, §8.5-8.9, §8.11, plus our additions).

Field names are exactly the spec's JSON keys (including ``sdpMid`` / ``sdpMLineIndex``), so the
models *are* the wire format: ``encode(model)`` is what goes on the broker. Fields marked
"our addition" are optional and absent from the spec's examples.

Use :func:`decode` / :func:`encode` (re-exported here) rather than pydantic's own methods: they
apply the size limits and turn every failure into :class:`~shared.mqtt.errors.MessageError`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Literal, Self

from pydantic import Field, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from shared.mqtt import topics
from shared.mqtt.codec import NailaMessage, build, decode, encode
from shared.mqtt.fields import (
    BBox,
    Confidence,
    ErrorText,
    Filename,
    IpAddress,
    JsonDict,
    Label,
    MediaData,
    MediaType,
    NonEmptyText,
    Pixels,
    SafeId,
    Text,
    Timestamp,
    Token,
    utc_now,
)
from shared.mqtt.limits import (
    MAX_CANDIDATE_LEN,
    MAX_LABEL_LEN,
    MAX_LIST_ITEMS,
    MAX_OBJECTS,
    MAX_SDP_LEN,
    MAX_SEGMENT_LEN,
    VISUAL_CONTEXT_MAX_PAYLOAD_BYTES,
)

__all__ = [
    "AlarmRecord",
    "Alert",
    "Broadcast",
    "ChatReply",
    "ChatRequest",
    "Command",
    "CommandResponse",
    "DetectedObject",
    "DeviceEvent",
    "DeviceStatus",
    "HubStatus",
    "IceCandidate",
    "LastWill",
    "MediaRequest",
    "MediaUpload",
    "ServerPresence",
    "ServerStatus",
    "SignalingDescription",
    "VisualAnalysis",
    "VisualContext",
    "VisualMedia",
    "VisualSource",
    "WebUpload",
    "build",
    "decode",
    "encode",
    "last_will",
    "offline_status",
    "server_last_will",
]


# --- devices -------------------------------------------------------------------------------


class DeviceStatus(NailaMessage):
    """``naila/devices/{id}/status`` (retained). ``online: false`` is also the device's last will."""

    device_id: SafeId
    online: bool
    capabilities: Annotated[list[Token], Field(max_length=MAX_LIST_ITEMS)]
    firmware_version: Label
    timestamp: Timestamp = Field(default_factory=utc_now)
    # Our additions, all optional: where the device is and its speaker state.
    room: SafeId | None = None
    zone: SafeId | None = None
    ip: IpAddress | None = None
    volume: Annotated[int, Field(ge=0, le=100)] | None = None
    muted: bool | None = None
    # issue 19: what starts a turn on this device (DEVICE_LISTENING_MODE); the hub applies it.
    listening_mode: Literal["wake_word", "always", "push_to_talk"] | None = None
    # issue 22: the privacy switches (the ``camera`` / ``microphone`` commands); None = the device has none.
    camera_enabled: bool | None = None
    microphone_enabled: bool | None = None


class SignalingDescription(NailaMessage):
    """An SDP offer or answer on ``.../signaling/offer`` / ``.../signaling/answer`` (spec §5.2 / §9).

    The device offers and the hub answers (as with HTTP ``POST /connect``); ``session_id`` is
    new for every offer and the answer repeats it, so a late answer to an abandoned offer is
    recognised and ignored.

    Our additions, all optional:

    * ``hub_id`` (issue 21, several hubs on one broker): on an offer, the hub the device wants
      (``DEVICE_HUB_ID``, or the hub that answered it last); on an answer, the hub that answered.
      An offer without it is answered by the hub the hubs' presence elects (hub/hub_directory.py).
    * ``error``: the hub refused the offer (bad SDP, rate limit, wrong token...). Only on an
      answer, and then ``sdp`` is ``""``: the device learns why on the topic it already waits on,
      instead of waiting for a timeout.
    * ``token``: the device's hub token (``DEVICE_HUB_TOKEN``), only on an offer; checked against
      ``HUB_DEVICE_TOKENS`` like the HTTP bearer token. Kept out of ``repr`` so it is not logged.
    """

    type: Literal["offer", "answer"]
    # Declared before ``sdp`` so that sdp's validator can see it (pydantic validates in field order).
    error: ErrorText | None = None
    sdp: Annotated[str, Field(max_length=MAX_SDP_LEN)]
    device_id: SafeId
    session_id: SafeId
    token: Label | None = Field(None, repr=False)
    hub_id: SafeId | None = None

    @field_validator("sdp")
    @classmethod
    def _sdp_unless_error(cls, value: str, info: ValidationInfo) -> str:
        if not value and info.data.get("error") is None:
            raise PydanticCustomError("sdp_empty", "must not be empty (only an error answer has no SDP)")
        return value

    @model_validator(mode="after")
    def _error_and_token_placement(self) -> Self:
        if self.error is not None and (self.type != "answer" or self.sdp):
            raise ValueError("error is only allowed on an answer, with an empty sdp")
        if self.token is not None and self.type != "offer":
            raise ValueError("token is only allowed on an offer")
        return self


class IceCandidate(NailaMessage):
    """One trickled ICE candidate (``naila/devices/{id}/signaling/ice``).

    ``candidate == ""`` is the W3C end-of-candidates marker. As in ``RTCIceCandidateInit``,
    ``sdpMid`` or ``sdpMLineIndex`` may be null, but not both.
    """

    candidate: Annotated[str, Field(max_length=MAX_CANDIDATE_LEN)]
    sdpMid: Annotated[str, Field(max_length=MAX_SEGMENT_LEN)] | None = None
    sdpMLineIndex: Annotated[int, Field(ge=0, le=1023)] | None = None
    session_id: SafeId

    @model_validator(mode="after")
    def _has_media_line(self) -> Self:
        if self.sdpMid is None and self.sdpMLineIndex is None:
            raise ValueError("sdpMid or sdpMLineIndex is required")
        return self


class Command(NailaMessage):
    """A command to a device; the reply goes to ``.../command/response`` with the same ``request_id``."""

    command: Token
    params: JsonDict = Field(default_factory=dict)
    request_id: Token


class CommandResponse(NailaMessage):
    """Reply to a :class:`Command` (our addition); ``ok`` is false exactly when ``error`` is set."""

    request_id: Token
    ok: bool
    result: JsonDict = Field(default_factory=dict)
    error: ErrorText | None = None

    @model_validator(mode="after")
    def _error_iff_failed(self) -> Self:
        if self.ok and self.error is not None:
            raise ValueError("error must be null when ok is true")
        if not self.ok and self.error is None:
            raise ValueError("error is required when ok is false")
        return self


class DeviceEvent(NailaMessage):
    """``naila/devices/{id}/events``: something happened on the device (button, wake word...)."""

    event: Token
    device_id: SafeId
    timestamp: Timestamp = Field(default_factory=utc_now)
    data: JsonDict = Field(default_factory=dict)


# --- media ---------------------------------------------------------------------------------


class MediaRequest(NailaMessage):
    """Server -> device: capture a snapshot or a recording (spec §8.5)."""

    request_type: Literal["snapshot", "recording"]
    request_id: Token
    params: JsonDict = Field(default_factory=dict)


class MediaUpload(NailaMessage):
    """Device -> server on ``media/snapshot`` or ``media/recording`` (spec §5.2, §8.5, §8.6).

    ``data`` is base64 on the wire and ``bytes`` here. The image size (§8.5) and clip details
    (§8.6) are optional because only one of them applies.
    """

    carries_media = True

    request_id: Token
    media_type: MediaType
    format: Token
    timestamp: Timestamp = Field(default_factory=utc_now)
    data: MediaData
    width: Pixels | None = None
    height: Pixels | None = None
    duration_ms: Annotated[int, Field(ge=0, le=24 * 3600 * 1000)] | None = None
    sample_rate: Annotated[int, Field(ge=1000, le=768_000)] | None = None


class WebUpload(NailaMessage):
    """``naila/uploads/{session_id}/{kind}``: media from the web service or any client (spec §8.7, §8.9)."""

    carries_media = True

    session_id: SafeId
    media_type: MediaType
    format: Token
    filename: Filename
    context: Text = ""
    conversation_id: Token | None = None
    data: MediaData


# --- server, alerts, chat ------------------------------------------------------------------


class ServerStatus(NailaMessage):
    """``naila/server/status`` (retained)."""

    online: bool
    version: Label
    timestamp: Timestamp = Field(default_factory=utc_now)


class HubStatus(NailaMessage):
    """``naila/hubs/{hub_id}/status`` (retained; our addition, issue 21): a hub's presence.

    Published by each hub when it connects to the broker and whenever the devices it serves
    change; ``online: false`` is its last will and its goodbye. ``devices``: the ids with a live
    WebRTC session on that hub (the first MAX_OBJECTS, sorted; ``device_count`` is the total).
    """

    hub_id: SafeId
    online: bool
    devices: Annotated[list[SafeId], Field(max_length=MAX_OBJECTS)] = Field(default_factory=list)
    device_count: Annotated[int, Field(ge=0)] = 0
    timestamp: Timestamp = Field(default_factory=utc_now)


class ServerPresence(NailaMessage):
    """``naila/servers/{server_id}/status`` (retained; our addition, issue 21): one AI server's presence.

    ``online: true`` is published at every connect of the server's alarm link, and the same message with
    ``online: false`` is its last will and its goodbye. ``session`` is new at every start, so the server
    knows its own "online" when it comes back: every retained message sent before it has arrived.
    ``group``: its AI_MQTT_SHARE_GROUP; the servers that share requests share their alarms, the others
    (another household on the same broker, another test) are left alone.
    """

    server_id: SafeId
    online: bool
    session: Token
    version: Label
    group: Annotated[str, Field(max_length=MAX_SEGMENT_LEN, pattern=r"^[A-Za-z0-9_.-]*$")] = ""
    timestamp: Timestamp = Field(default_factory=utc_now)


class AlarmRecord(NailaMessage):
    """``naila/alarms/{server_id}/{alarm_id}`` (retained; our addition, issue 21): a timer or reminder
    that AI server owns, so every other server mirrors it and one adopts it if the owner dies.

    ``due`` is the absolute time it rings (UTC), None while a timer is paused (``left_s`` holds what
    was left). ``label``: a timer's name ("pasta", "" for none) or a reminder's task.
    """

    alarm_id: SafeId
    server_id: SafeId
    kind: Literal["timer", "reminder"]
    asker: Token  # a device id, or "chat:<session_id>" for a typed chat
    room: Annotated[str, Field(max_length=MAX_LABEL_LEN, pattern=r"^[^\x00-\x1f\x7f]*$")] = ""
    label: Text = ""
    due: Timestamp | None = None
    left_s: Annotated[float, Field(ge=0, le=366 * 86400, allow_inf_nan=False)] | None = None
    duration_s: Annotated[float, Field(ge=0, le=366 * 86400, allow_inf_nan=False)] = 0.0
    set_s: Annotated[float, Field(ge=0, le=366 * 86400, allow_inf_nan=False)] = 0.0
    created: Timestamp
    #: It fell due and rings now (the record stays until the ring ends, so "stop" said to another
    #: server reaches it: that server clears the record and the owner stops ringing).
    ringing: bool = False

    @model_validator(mode="after")
    def _when(self) -> Self:
        if self.due is None and (self.kind == "reminder" or self.left_s is None):
            raise ValueError("an alarm needs due, or left_s while a timer is paused")
        return self


class Broadcast(NailaMessage):
    """``naila/server/broadcast``: something to say on all devices, or on one room's."""

    message: NonEmptyText
    room: SafeId | None = None
    timestamp: Timestamp = Field(default_factory=utc_now)


class Alert(NailaMessage):
    """``naila/alerts/{zone}/{alert_type}`` and ``naila/alerts/all`` (spec §5.2)."""

    alert_type: SafeId
    zone: SafeId
    confidence: Confidence
    source_device: SafeId
    timestamp: Timestamp = Field(default_factory=utc_now)
    snapshot_available: bool = False
    #: Our addition (issue 24): the snapshot's media id in the AI server's store, which the hub's
    #: dashboard asks for over gRPC (Household.GetSnapshot). Set only when ``snapshot_available``.
    snapshot_id: SafeId | None = None


class ChatRequest(NailaMessage):
    """Typed text to the assistant (our addition).

    ``speak_on``: a device_id or room on which to also speak the reply.
    """

    session_id: SafeId
    text: NonEmptyText
    conversation_id: Token | None = None
    speak_on: SafeId | None = None


class ChatReply(NailaMessage):
    """The assistant's answer to a :class:`ChatRequest` (our addition); ``error`` set when it failed."""

    session_id: SafeId
    text: Text
    conversation_id: Token
    error: ErrorText | None = None


# --- visual context (spec §8.11) -----------------------------------------------------------


class VisualSource(NailaMessage):
    """Where the image came from; at least one of ``device_id`` / ``session_id`` identifies it."""

    type: Literal["webrtc_stream", "mqtt_snapshot", "http_upload", "mqtt_upload"]
    device_id: SafeId | None = None
    session_id: SafeId | None = None

    @model_validator(mode="after")
    def _identified(self) -> Self:
        if self.device_id is None and self.session_id is None:
            raise ValueError("device_id or session_id is required")
        return self


class VisualMedia(NailaMessage):
    """The analysed image (or video frame)."""

    type: Literal["image", "video"]
    format: Token
    width: Pixels
    height: Pixels
    timestamp: Timestamp = Field(default_factory=utc_now)


class DetectedObject(NailaMessage):
    """One detection; ``bbox`` is ``[x, y, width, height]`` in pixels from the top-left corner."""

    label: Label
    confidence: Confidence
    bbox: BBox


class VisualAnalysis(NailaMessage):
    """What vision made of the image."""

    description: Text
    objects: Annotated[list[DetectedObject], Field(max_length=MAX_OBJECTS)] = Field(default_factory=list)
    scene_type: Label | None = None
    lighting: Label | None = None
    text_detected: Annotated[list[Text], Field(max_length=MAX_LIST_ITEMS)] = Field(default_factory=list)


class VisualContext(NailaMessage):
    """The unified visual context handed to the LLM, whatever the input method (spec §8.11)."""

    max_payload_bytes = VISUAL_CONTEXT_MAX_PAYLOAD_BYTES

    source: VisualSource
    media: VisualMedia
    analysis: VisualAnalysis
    user_context: Text | None = None


# --- last wills ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LastWill:
    """What to register as the MQTT will: ``aiomqtt.Will(w.topic, w.payload, w.qos, w.retain)``."""

    topic: str
    payload: bytes
    qos: int
    retain: bool


def offline_status(
    device_id: str,
    *,
    firmware_version: str = "unknown",
    capabilities: Sequence[str] = (),
    room: str | None = None,
    zone: str | None = None,
) -> DeviceStatus:
    """The ``online: false`` status of a device (its last will, or a clean goodbye).

    Raises :class:`~shared.mqtt.errors.MessageError` for an unsafe id (ids often come from config).
    """
    return build(
        DeviceStatus,
        device_id=device_id,
        online=False,
        capabilities=list(capabilities),
        firmware_version=firmware_version,
        room=room,
        zone=zone,
    )


def last_will(status: DeviceStatus | str) -> LastWill:
    """The will for a device: its status with ``online: false``, retained on its status topic.

    Pass the device's online :class:`DeviceStatus` to keep capabilities/room in the offline
    message, or just its id. The timestamp is when the will was registered (connect time), not
    when the device died; the broker publishes it later, unchanged.
    """
    offline = (
        offline_status(status)
        if isinstance(status, str)
        else status.model_copy(update={"online": False, "ip": None})
    )
    policy = topics.policy_for(topics.TopicKind.DEVICE_STATUS)
    return LastWill(topics.device_status(offline.device_id), encode(offline), policy.qos, policy.retain)


def server_last_will(version: str) -> LastWill:
    """The AI server's / hub's will: ``naila/server/status`` with ``online: false``, retained."""
    policy = topics.policy_for(topics.TopicKind.SERVER_STATUS)
    payload = encode(build(ServerStatus, online=False, version=version))
    return LastWill(topics.SERVER_STATUS, payload, policy.qos, policy.retain)
