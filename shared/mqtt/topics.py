"""The MQTT topic tree (spec §5.1, §9.1) as functions, one parser, and the QoS/retain table (§5.3).

Why functions instead of f-strings at call sites: every id that goes into a topic comes from the
network or from configuration, and an id containing ``/``, ``+`` or ``#`` would silently publish
to (or subscribe to) someone else's topics. Each builder validates its segments, and
:func:`parse_topic` is the single place that turns an incoming topic back into ids.

Tree (root ``naila/``)::

    devices/{device_id}/status                 retained DeviceStatus
    devices/{device_id}/command                Command, server -> device
    devices/{device_id}/command/response       CommandResponse, device -> server   (our addition)
    devices/{device_id}/signaling/offer        SignalingDescription (type "offer")
    devices/{device_id}/signaling/answer       SignalingDescription (type "answer")
    devices/{device_id}/signaling/ice          IceCandidate, both directions
    devices/{device_id}/media/snapshot         MediaUpload, device -> server
    devices/{device_id}/media/recording        MediaUpload, device -> server
    devices/{device_id}/media/request          MediaRequest, server -> device
    devices/{device_id}/events                 DeviceEvent
    server/status                              retained ServerStatus
    hubs/{hub_id}/status                       retained HubStatus: a hub's presence (our addition)
    servers/{server_id}/status                 retained ServerPresence: one AI server's presence (our addition)
    alarms/{server_id}/{alarm_id}              retained AlarmRecord: a timer/reminder that server owns (ours)
    server/broadcast                           Broadcast
    uploads/{session_id}/{image|audio|video}   WebUpload
    alerts/{zone}/{alert_type}                 Alert
    alerts/all                                 Alert (every alert, once more)
    chat/{session_id}/request                  ChatRequest  (our addition)
    chat/{session_id}/reply                    ChatReply    (our addition)

Choices the spec leaves open:

* Command replies go to ``.../command/response``, not back to ``.../command``: a device
  subscribed to its command topic would otherwise receive its own replies, and a reply is
  told apart from a command by topic alone, before parsing. Replies carry the command's
  ``request_id``.
* ``signaling/ice`` is used in both directions (as the spec says), so a client that both
  publishes and subscribes to it receives its own candidates back. Subscribe with MQTT v5
  ``no_local`` or ignore candidates you sent. (aiortc does not trickle: its candidates are in
  the SDP, so aiortc-to-aiortc sessions never need this topic.)
* ``alerts/all`` is a concrete topic: the alert producer publishes each alert to its zone topic
  and to ``alerts/all``, so a consumer that wants everything subscribes once without a
  wildcard ACL. To get zone alerts by wildcard use :data:`ALL_ZONE_ALERTS`.
* ``chat/...`` carries typed text conversations (web UI, CLI) that the spec does not cover.
* ``hubs/{hub_id}/status`` (issue 21): each hub's retained presence and the devices it serves,
  so that several hubs on one broker agree which of them answers an MQTT offer
  (hub/hub_directory.py) and every dashboard shows the whole household.
* ``servers/{server_id}/status`` and ``alarms/{server_id}/{alarm_id}`` (issue 21): each AI server's
  presence (its last will says ``online: false``) and every timer and reminder it owns, retained, so
  that the other servers mirror them and adopt those of a server that died
  (ai_server/assist/replica.py). ``server/status`` stays the spec's one topic for "an AI server".
* Segments are ``[A-Za-z0-9_.-]{1,64}`` and may not be ``.`` or ``..`` (ids end up in file
  names and URLs too).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Final, Literal, get_args

from shared.ids import ID_RULE, is_safe_id
from shared.mqtt.errors import MessageError
from shared.mqtt.limits import MAX_SEGMENT_LEN

ROOT: Final = "naila"

UploadKind = Literal["image", "audio", "video"]
UPLOAD_KINDS: Final[tuple[UploadKind, ...]] = get_args(UploadKind)


def is_safe_segment(value: object) -> bool:
    """True when ``value`` can be used as one topic level (and as a file name component)."""
    return is_safe_id(value)


def check_segment(value: object, what: str = "segment") -> str:
    """Return ``value`` if it is a safe topic segment, else raise :class:`MessageError` naming ``what``."""
    if not isinstance(value, str):
        raise MessageError(f"{what} must be a string, got {type(value).__name__}", field=what)
    if not is_safe_segment(value):
        shown = value if len(value) <= 80 else value[:80] + "..."
        raise MessageError(f"{what} must be {ID_RULE}, got {shown!r}", field=what)
    return value


class TopicKind(StrEnum):
    """What a topic is, independent of its ids."""

    DEVICE_STATUS = "device_status"
    DEVICE_COMMAND = "device_command"
    DEVICE_COMMAND_RESPONSE = "device_command_response"
    SIGNALING_OFFER = "signaling_offer"
    SIGNALING_ANSWER = "signaling_answer"
    SIGNALING_ICE = "signaling_ice"
    MEDIA_SNAPSHOT = "media_snapshot"
    MEDIA_RECORDING = "media_recording"
    MEDIA_REQUEST = "media_request"
    DEVICE_EVENTS = "device_events"
    SERVER_STATUS = "server_status"
    SERVER_BROADCAST = "server_broadcast"
    UPLOAD = "upload"
    ALERT = "alert"
    ALERTS_ALL = "alerts_all"
    CHAT_REQUEST = "chat_request"
    CHAT_REPLY = "chat_reply"
    HUB_STATUS = "hub_status"
    SERVER_PRESENCE = "server_presence"
    ALARM = "alarm"


# Levels after naila/devices/{device_id}/ for each per-device kind: one table for build and parse.
_DEVICE_SUFFIX: Final[MappingProxyType[TopicKind, str]] = MappingProxyType(
    {
        TopicKind.DEVICE_STATUS: "status",
        TopicKind.DEVICE_COMMAND: "command",
        TopicKind.DEVICE_COMMAND_RESPONSE: "command/response",
        TopicKind.SIGNALING_OFFER: "signaling/offer",
        TopicKind.SIGNALING_ANSWER: "signaling/answer",
        TopicKind.SIGNALING_ICE: "signaling/ice",
        TopicKind.MEDIA_SNAPSHOT: "media/snapshot",
        TopicKind.MEDIA_RECORDING: "media/recording",
        TopicKind.MEDIA_REQUEST: "media/request",
        TopicKind.DEVICE_EVENTS: "events",
    }
)
_DEVICE_KIND_BY_SUFFIX: Final = {tuple(s.split("/")): k for k, s in _DEVICE_SUFFIX.items()}
_CHAT_SUFFIX: Final = {TopicKind.CHAT_REQUEST: "request", TopicKind.CHAT_REPLY: "reply"}
_CHAT_KIND_BY_SUFFIX: Final = {s: k for k, s in _CHAT_SUFFIX.items()}


def _device(device_id: str, kind: TopicKind) -> str:
    return f"{ROOT}/devices/{check_segment(device_id, 'device_id')}/{_DEVICE_SUFFIX[kind]}"


def device_status(device_id: str) -> str:
    """``naila/devices/{id}/status``: retained online/offline status (and the last will)."""
    return _device(device_id, TopicKind.DEVICE_STATUS)


def device_command(device_id: str) -> str:
    """``naila/devices/{id}/command``: commands to the device."""
    return _device(device_id, TopicKind.DEVICE_COMMAND)


def device_command_response(device_id: str) -> str:
    """``naila/devices/{id}/command/response``: the device's replies, matched by ``request_id``."""
    return _device(device_id, TopicKind.DEVICE_COMMAND_RESPONSE)


def signaling_offer(device_id: str) -> str:
    """``naila/devices/{id}/signaling/offer``: SDP offers (device -> hub: the device initiates, as with /connect)."""
    return _device(device_id, TopicKind.SIGNALING_OFFER)


def signaling_answer(device_id: str) -> str:
    """``naila/devices/{id}/signaling/answer``: SDP answers, or a refusal with ``error`` (hub -> device)."""
    return _device(device_id, TopicKind.SIGNALING_ANSWER)


def signaling_ice(device_id: str) -> str:
    """``naila/devices/{id}/signaling/ice``: trickled ICE candidates, both directions."""
    return _device(device_id, TopicKind.SIGNALING_ICE)


def media_snapshot(device_id: str) -> str:
    """``naila/devices/{id}/media/snapshot``: a captured image (device -> server)."""
    return _device(device_id, TopicKind.MEDIA_SNAPSHOT)


def media_recording(device_id: str) -> str:
    """``naila/devices/{id}/media/recording``: an audio/video clip (device -> server)."""
    return _device(device_id, TopicKind.MEDIA_RECORDING)


def media_request(device_id: str) -> str:
    """``naila/devices/{id}/media/request``: the server asks for a snapshot or recording."""
    return _device(device_id, TopicKind.MEDIA_REQUEST)


def device_events(device_id: str) -> str:
    """``naila/devices/{id}/events``: device events (button, wake word...)."""
    return _device(device_id, TopicKind.DEVICE_EVENTS)


SERVER_STATUS: Final = f"{ROOT}/server/status"
SERVER_BROADCAST: Final = f"{ROOT}/server/broadcast"
ALERTS_ALL: Final = f"{ROOT}/alerts/all"


def hub_status(hub_id: str) -> str:
    """``naila/hubs/{hub_id}/status``: a hub's retained presence (HUB_ID), and its last will."""
    return f"{ROOT}/hubs/{check_segment(hub_id, 'hub_id')}/status"


def server_presence(server_id: str) -> str:
    """``naila/servers/{server_id}/status``: one AI server's retained presence (AI_SERVER_ID), and its last will."""
    return f"{ROOT}/servers/{check_segment(server_id, 'server_id')}/status"


def alarm(server_id: str, alarm_id: str) -> str:
    """``naila/alarms/{server_id}/{alarm_id}``: a timer or reminder that server owns, retained (empty: gone)."""
    return f"{ROOT}/alarms/{check_segment(server_id, 'server_id')}/{check_segment(alarm_id, 'alarm_id')}"


def upload(session_id: str, kind: str) -> str:
    """``naila/uploads/{session_id}/{image|audio|video}``: media from the web service or any client."""
    check_segment(session_id, "session_id")
    if kind not in UPLOAD_KINDS:
        allowed = ", ".join(UPLOAD_KINDS)
        raise MessageError(f"upload kind must be one of {allowed}, got {kind!r}", field="kind")
    return f"{ROOT}/uploads/{session_id}/{kind}"


def alert(zone: str, alert_type: str) -> str:
    """``naila/alerts/{zone}/{alert_type}``: zone-specific alerts."""
    return f"{ROOT}/alerts/{check_segment(zone, 'zone')}/{check_segment(alert_type, 'alert_type')}"


def chat_request(session_id: str) -> str:
    """``naila/chat/{session_id}/request``: typed text to the assistant (our addition)."""
    return f"{ROOT}/chat/{check_segment(session_id, 'session_id')}/request"


def chat_reply(session_id: str) -> str:
    """``naila/chat/{session_id}/reply``: the assistant's text answer (our addition)."""
    return f"{ROOT}/chat/{check_segment(session_id, 'session_id')}/reply"


# Subscription filters (wildcards). ``+`` is one level; these never match deeper topics, so
# ALL_DEVICE_COMMANDS does not also deliver command responses.
ALL_DEVICE_STATUS: Final = f"{ROOT}/devices/+/status"
ALL_DEVICE_COMMANDS: Final = f"{ROOT}/devices/+/command"
ALL_COMMAND_RESPONSES: Final = f"{ROOT}/devices/+/command/response"
ALL_SIGNALING_OFFERS: Final = f"{ROOT}/devices/+/signaling/offer"
ALL_SIGNALING_ANSWERS: Final = f"{ROOT}/devices/+/signaling/answer"
ALL_SIGNALING_ICE: Final = f"{ROOT}/devices/+/signaling/ice"
ALL_MEDIA_SNAPSHOTS: Final = f"{ROOT}/devices/+/media/snapshot"
ALL_MEDIA_RECORDINGS: Final = f"{ROOT}/devices/+/media/recording"
ALL_DEVICE_EVENTS: Final = f"{ROOT}/devices/+/events"
ALL_UPLOADS: Final = f"{ROOT}/uploads/+/+"
ALL_ZONE_ALERTS: Final = f"{ROOT}/alerts/+/+"
ALL_CHAT_REQUESTS: Final = f"{ROOT}/chat/+/request"
ALL_CHAT_REPLIES: Final = f"{ROOT}/chat/+/reply"
ALL_HUB_STATUS: Final = f"{ROOT}/hubs/+/status"
ALL_SERVER_PRESENCE: Final = f"{ROOT}/servers/+/status"
ALL_ALARMS: Final = f"{ROOT}/alarms/+/+"
EVERYTHING: Final = f"{ROOT}/#"


def device_wildcard(device_id: str) -> str:
    """``naila/devices/{id}/#``: every topic of one device (debugging, ACLs)."""
    return f"{ROOT}/devices/{check_segment(device_id, 'device_id')}/#"


@dataclass(frozen=True, slots=True)
class ParsedTopic:
    """A recognised concrete topic: its kind and the ids it carries (the others are ``None``)."""

    kind: TopicKind
    device_id: str | None = None
    session_id: str | None = None
    zone: str | None = None
    alert_type: str | None = None
    upload_kind: UploadKind | None = None
    hub_id: str | None = None
    server_id: str | None = None
    alarm_id: str | None = None

    @property
    def topic(self) -> str:
        """The topic string again (``parse_topic(t).topic == t``)."""
        return build_topic(self)


def build_topic(parsed: ParsedTopic) -> str:
    """Inverse of :func:`parse_topic`; raises :class:`MessageError` if a needed id is missing/unsafe."""
    kind = parsed.kind
    if kind in _DEVICE_SUFFIX:
        return _device(_need(parsed.device_id, "device_id"), kind)
    if kind is TopicKind.UPLOAD:
        return upload(_need(parsed.session_id, "session_id"), _need(parsed.upload_kind, "upload_kind"))
    if kind is TopicKind.ALERT:
        return alert(_need(parsed.zone, "zone"), _need(parsed.alert_type, "alert_type"))
    if kind in _CHAT_SUFFIX:
        session_id = check_segment(_need(parsed.session_id, "session_id"), "session_id")
        return f"{ROOT}/chat/{session_id}/{_CHAT_SUFFIX[kind]}"
    if kind is TopicKind.HUB_STATUS:
        return hub_status(_need(parsed.hub_id, "hub_id"))
    if kind is TopicKind.SERVER_PRESENCE:
        return server_presence(_need(parsed.server_id, "server_id"))
    if kind is TopicKind.ALARM:
        return alarm(_need(parsed.server_id, "server_id"), _need(parsed.alarm_id, "alarm_id"))
    return {
        TopicKind.SERVER_STATUS: SERVER_STATUS,
        TopicKind.SERVER_BROADCAST: SERVER_BROADCAST,
        TopicKind.ALERTS_ALL: ALERTS_ALL,
    }[kind]


def _need(value: str | None, what: str) -> str:
    if value is None:
        raise MessageError(f"{what} is required for this topic kind", field=what)
    return value


# naila / devices / id / at most two levels: anything longer is certainly not ours.
_MAX_TOPIC_LEN: Final = 8 * (MAX_SEGMENT_LEN + 1)


def parse_topic(topic: str) -> ParsedTopic:
    """Recognise a concrete topic of the tree and return its kind and ids.

    Raises :class:`MessageError` for anything else: another root, an unknown or wrongly deep
    path, empty levels, wildcards, or an id that is not a safe segment.
    """
    if not isinstance(topic, str):
        raise MessageError(f"topic must be a string, got {type(topic).__name__}", field="topic")
    if len(topic) > _MAX_TOPIC_LEN:
        raise MessageError(f"topic is {len(topic)} characters, longer than any NAILA topic", field="topic")
    parts = topic.split("/")
    if parts[0] != ROOT or len(parts) < 3:
        raise MessageError(f"not a NAILA topic: {topic!r}", field="topic")
    branch, rest = parts[1], parts[2:]
    parsed = _parse_branch(branch, rest)
    if parsed is None:
        raise MessageError(f"unknown NAILA topic: {topic!r}", field="topic")
    return parsed


def _parse_branch(branch: str, rest: list[str]) -> ParsedTopic | None:
    if branch == "devices":
        kind = _DEVICE_KIND_BY_SUFFIX.get(tuple(rest[1:]))
        if kind is None:
            return None
        return ParsedTopic(kind, device_id=check_segment(rest[0], "device_id"))
    if branch == "server" and len(rest) == 1:
        if rest[0] == "status":
            return ParsedTopic(TopicKind.SERVER_STATUS)
        if rest[0] == "broadcast":
            return ParsedTopic(TopicKind.SERVER_BROADCAST)
        return None
    if branch == "uploads" and len(rest) == 2:
        if rest[1] not in UPLOAD_KINDS:
            return None
        session_id = check_segment(rest[0], "session_id")
        return ParsedTopic(TopicKind.UPLOAD, session_id=session_id, upload_kind=rest[1])
    if branch == "alerts":
        if rest == ["all"]:
            return ParsedTopic(TopicKind.ALERTS_ALL)
        if len(rest) == 2:
            zone = check_segment(rest[0], "zone")
            return ParsedTopic(TopicKind.ALERT, zone=zone, alert_type=check_segment(rest[1], "alert_type"))
        return None
    if branch == "hubs" and len(rest) == 2 and rest[1] == "status":
        return ParsedTopic(TopicKind.HUB_STATUS, hub_id=check_segment(rest[0], "hub_id"))
    if branch == "servers" and len(rest) == 2 and rest[1] == "status":
        return ParsedTopic(TopicKind.SERVER_PRESENCE, server_id=check_segment(rest[0], "server_id"))
    if branch == "alarms" and len(rest) == 2:
        server_id = check_segment(rest[0], "server_id")
        return ParsedTopic(TopicKind.ALARM, server_id=server_id, alarm_id=check_segment(rest[1], "alarm_id"))
    if branch == "chat" and len(rest) == 2:
        chat_kind = _CHAT_KIND_BY_SUFFIX.get(rest[1])
        if chat_kind is None:
            return None
        return ParsedTopic(chat_kind, session_id=check_segment(rest[0], "session_id"))
    return None


def matches(topic_filter: str, topic: str) -> bool:
    """MQTT filter matching (``+`` one level, ``#`` the rest), for dispatching on subscriptions."""
    f_parts = topic_filter.split("/")
    t_parts = topic.split("/")
    for i, f in enumerate(f_parts):
        if f == "#":
            return i == len(f_parts) - 1
        if i >= len(t_parts) or (f != "+" and f != t_parts[i]):
            return False
    return len(f_parts) == len(t_parts)


@dataclass(frozen=True, slots=True)
class TopicPolicy:
    """How to publish on a topic kind: QoS level and whether the broker keeps the last message."""

    qos: int
    retain: bool


_AT_LEAST_ONCE: Final = TopicPolicy(qos=1, retain=False)
_RETAINED: Final = TopicPolicy(qos=1, retain=True)

#: Spec §5.3: signaling, commands, alerts, media and chat must arrive (QoS 1); status is QoS 1 and
#: retained so a late subscriber sees the current state; events are telemetry-like, QoS 0.
TOPIC_POLICY: Final[MappingProxyType[TopicKind, TopicPolicy]] = MappingProxyType(
    {
        TopicKind.DEVICE_STATUS: _RETAINED,
        TopicKind.DEVICE_COMMAND: _AT_LEAST_ONCE,
        TopicKind.DEVICE_COMMAND_RESPONSE: _AT_LEAST_ONCE,
        TopicKind.SIGNALING_OFFER: _AT_LEAST_ONCE,
        TopicKind.SIGNALING_ANSWER: _AT_LEAST_ONCE,
        TopicKind.SIGNALING_ICE: _AT_LEAST_ONCE,
        TopicKind.MEDIA_SNAPSHOT: _AT_LEAST_ONCE,
        TopicKind.MEDIA_RECORDING: _AT_LEAST_ONCE,
        TopicKind.MEDIA_REQUEST: _AT_LEAST_ONCE,
        TopicKind.DEVICE_EVENTS: TopicPolicy(qos=0, retain=False),
        TopicKind.SERVER_STATUS: _RETAINED,
        TopicKind.SERVER_BROADCAST: _AT_LEAST_ONCE,
        TopicKind.UPLOAD: _AT_LEAST_ONCE,
        TopicKind.ALERT: _AT_LEAST_ONCE,
        TopicKind.ALERTS_ALL: _AT_LEAST_ONCE,
        TopicKind.CHAT_REQUEST: _AT_LEAST_ONCE,
        TopicKind.CHAT_REPLY: _AT_LEAST_ONCE,
        TopicKind.HUB_STATUS: _RETAINED,
        TopicKind.SERVER_PRESENCE: _RETAINED,
        TopicKind.ALARM: _RETAINED,
    }
)


def policy_for(topic: str | TopicKind) -> TopicPolicy:
    """QoS and retain flag for a concrete topic (or a kind); raises :class:`MessageError` if unknown."""
    kind = topic if isinstance(topic, TopicKind) else parse_topic(topic).kind
    return TOPIC_POLICY[kind]
