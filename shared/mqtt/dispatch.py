"""Which model travels on which topic, for receiving and for publishing.

Why: a handler subscribed to wildcards gets a topic and bytes. :func:`decode_message` picks the
model from the topic, decodes it, and checks that ids present in both agree (spec §15.1,
"validate device IDs in signaling"): with per-device broker ACLs on topics, a device can then
not speak for another one by putting a different ``device_id`` in the payload.
:func:`outbound` is the publishing side: topic, payload bytes, QoS and retain flag in one place.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from shared.mqtt import models as m
from shared.mqtt.codec import NailaMessage, Payload, decode, encode
from shared.mqtt.errors import MessageError
from shared.mqtt.limits import MEDIA_MAX_UPLOAD_SIZE
from shared.mqtt.topics import ParsedTopic, TopicKind, parse_topic, policy_for

#: The payload model of each topic kind.
MODEL_FOR_KIND: Final[MappingProxyType[TopicKind, type[NailaMessage]]] = MappingProxyType(
    {
        TopicKind.DEVICE_STATUS: m.DeviceStatus,
        TopicKind.DEVICE_COMMAND: m.Command,
        TopicKind.DEVICE_COMMAND_RESPONSE: m.CommandResponse,
        TopicKind.SIGNALING_OFFER: m.SignalingDescription,
        TopicKind.SIGNALING_ANSWER: m.SignalingDescription,
        TopicKind.SIGNALING_ICE: m.IceCandidate,
        TopicKind.MEDIA_SNAPSHOT: m.MediaUpload,
        TopicKind.MEDIA_RECORDING: m.MediaUpload,
        TopicKind.MEDIA_REQUEST: m.MediaRequest,
        TopicKind.DEVICE_EVENTS: m.DeviceEvent,
        TopicKind.SERVER_STATUS: m.ServerStatus,
        TopicKind.SERVER_BROADCAST: m.Broadcast,
        TopicKind.UPLOAD: m.WebUpload,
        TopicKind.ALERT: m.Alert,
        TopicKind.ALERTS_ALL: m.Alert,
        TopicKind.CHAT_REQUEST: m.ChatRequest,
        TopicKind.CHAT_REPLY: m.ChatReply,
        TopicKind.HUB_STATUS: m.HubStatus,
        TopicKind.SERVER_PRESENCE: m.ServerPresence,
        TopicKind.ALARM: m.AlarmRecord,
    }
)

# ParsedTopic attribute -> payload field that must hold the same value when both exist.
_SAME: Final = (
    ("device_id", "device_id"),
    ("session_id", "session_id"),
    ("zone", "zone"),
    ("alert_type", "alert_type"),
    ("upload_kind", "media_type"),
    ("hub_id", "hub_id"),
    ("server_id", "server_id"),
    ("alarm_id", "alarm_id"),
)
_EXPECTED_SDP_TYPE: Final = {TopicKind.SIGNALING_OFFER: "offer", TopicKind.SIGNALING_ANSWER: "answer"}


def check_consistent(parsed: ParsedTopic, message: NailaMessage) -> None:
    """Raise :class:`MessageError` if the payload contradicts its topic (ids, upload kind, SDP type)."""
    name = type(message).__name__
    for topic_attr, field in _SAME:
        expected = getattr(parsed, topic_attr)
        actual = getattr(message, field, None)
        if expected is not None and actual is not None and expected != actual:
            raise MessageError(
                f"{name}.{field}: {actual!r} does not match the topic's {topic_attr} {expected!r}",
                field=field,
            )
    sdp_type = _EXPECTED_SDP_TYPE.get(parsed.kind)
    if sdp_type is not None and getattr(message, "type", None) != sdp_type:
        raise MessageError(f"{name}.type: must be {sdp_type!r} on a signaling/{sdp_type} topic", field="type")


def decode_message(
    topic: str, payload: Payload, *, max_media_bytes: int = MEDIA_MAX_UPLOAD_SIZE
) -> tuple[ParsedTopic, NailaMessage]:
    """Parse ``topic``, decode ``payload`` with its model and cross-check them. Raises :class:`MessageError`.

    Narrow the result with ``isinstance(message, DeviceStatus)`` etc., or call
    :func:`~shared.mqtt.codec.decode` with the expected model when the topic kind is known.
    """
    parsed = parse_topic(topic)
    message = decode(MODEL_FOR_KIND[parsed.kind], payload, max_media_bytes=max_media_bytes)
    check_consistent(parsed, message)
    return parsed, message


@dataclass(frozen=True, slots=True)
class OutboundMessage:
    """Everything ``client.publish`` needs.

    ``await client.publish(o.topic, o.payload, qos=o.qos, retain=o.retain)``
    """

    topic: str
    payload: bytes
    qos: int
    retain: bool


def outbound(topic: str, message: NailaMessage) -> OutboundMessage:
    """Encode ``message`` for ``topic`` with the topic's QoS/retain policy, after checking they agree."""
    parsed = parse_topic(topic)
    expected = MODEL_FOR_KIND[parsed.kind]
    if not isinstance(message, expected):
        raise MessageError(
            f"{topic} carries {expected.__name__}, not {type(message).__name__}", field="topic"
        )
    check_consistent(parsed, message)
    policy = policy_for(parsed.kind)
    return OutboundMessage(topic, encode(message), policy.qos, policy.retain)
