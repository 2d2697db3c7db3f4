"""NAILA's MQTT contract: topic tree, QoS/retain policy, payload models and their JSON codec.

Typical use::

    from shared.mqtt import topics, DeviceStatus, decode, encode, MessageError, last_will

    will = last_will(status)  # aiomqtt.Will(will.topic, will.payload, will.qos, will.retain)
    out = outbound(topics.device_status(dev), status)
    await client.publish(out.topic, out.payload, qos=out.qos, retain=out.retain)

    async for msg in client.messages:
        try:
            parsed, message = decode_message(msg.topic.value, msg.payload)
        except MessageError as err:
            log.warning("dropping MQTT message on %s: %s", msg.topic, err)
            continue

No broker client is imported here: the package only needs pydantic, so every deployable can use it.
"""

from shared.mqtt import topics
from shared.mqtt.codec import NailaMessage, Payload, build, decode, encode
from shared.mqtt.dispatch import MODEL_FOR_KIND, OutboundMessage, check_consistent, decode_message, outbound
from shared.mqtt.errors import MessageError
from shared.mqtt.fields import new_request_id, utc_now
from shared.mqtt.limits import (
    CONTROL_MAX_PAYLOAD_BYTES,
    MEDIA_MAX_UPLOAD_SIZE,
    UPLOAD_MAX_PAYLOAD_BYTES,
    VISUAL_CONTEXT_MAX_PAYLOAD_BYTES,
    media_payload_limit,
)
from shared.mqtt.models import (
    AlarmRecord,
    Alert,
    Broadcast,
    ChatReply,
    ChatRequest,
    Command,
    CommandResponse,
    DetectedObject,
    DeviceEvent,
    DeviceStatus,
    HubStatus,
    IceCandidate,
    LastWill,
    MediaRequest,
    MediaUpload,
    ServerPresence,
    ServerStatus,
    SignalingDescription,
    VisualAnalysis,
    VisualContext,
    VisualMedia,
    VisualSource,
    WebUpload,
    last_will,
    offline_status,
    server_last_will,
)
from shared.mqtt.topics import (
    TOPIC_POLICY,
    ParsedTopic,
    TopicKind,
    TopicPolicy,
    check_segment,
    is_safe_segment,
    parse_topic,
    policy_for,
)

__all__ = [
    "CONTROL_MAX_PAYLOAD_BYTES",
    "MEDIA_MAX_UPLOAD_SIZE",
    "MODEL_FOR_KIND",
    "TOPIC_POLICY",
    "UPLOAD_MAX_PAYLOAD_BYTES",
    "VISUAL_CONTEXT_MAX_PAYLOAD_BYTES",
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
    "MessageError",
    "NailaMessage",
    "OutboundMessage",
    "ParsedTopic",
    "Payload",
    "ServerPresence",
    "ServerStatus",
    "SignalingDescription",
    "TopicKind",
    "TopicPolicy",
    "VisualAnalysis",
    "VisualContext",
    "VisualMedia",
    "VisualSource",
    "WebUpload",
    "build",
    "check_consistent",
    "check_segment",
    "decode",
    "decode_message",
    "encode",
    "is_safe_segment",
    "last_will",
    "media_payload_limit",
    "new_request_id",
    "offline_status",
    "outbound",
    "parse_topic",
    "policy_for",
    "server_last_will",
    "topics",
    "utc_now",
]
