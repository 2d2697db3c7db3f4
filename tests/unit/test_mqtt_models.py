"""MQTT payload models and their JSON codec (spec §5.2, §8.5-8.9, §8.11)."""

from __future__ import annotations

import base64
import contextlib
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import JsonValue, ValidationError

from shared.mqtt import (
    CONTROL_MAX_PAYLOAD_BYTES,
    MEDIA_MAX_UPLOAD_SIZE,
    MODEL_FOR_KIND,
    UPLOAD_MAX_PAYLOAD_BYTES,
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
    MediaRequest,
    MediaUpload,
    MessageError,
    NailaMessage,
    ServerPresence,
    ServerStatus,
    SignalingDescription,
    TopicKind,
    VisualAnalysis,
    VisualContext,
    VisualMedia,
    VisualSource,
    WebUpload,
    build,
    decode,
    decode_message,
    encode,
    last_will,
    new_request_id,
    offline_status,
    outbound,
    server_last_will,
    topics,
)

pytestmark = pytest.mark.unit

SETTINGS = settings(max_examples=100, deadline=None)

# --- strategies ---------------------------------------------------------------------------------

SAFE_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-"
safe_ids = st.text(alphabet=SAFE_CHARS, min_size=1, max_size=64).filter(lambda s: s not in (".", ".."))
tokens = st.text(alphabet=SAFE_CHARS + ":", min_size=1, max_size=40)
labels = st.text(st.characters(exclude_categories=("Cs", "Cc")), min_size=1, max_size=40)
texts = st.text(max_size=200)
non_empty_texts = st.text(min_size=1, max_size=200)
errors = st.text(min_size=1, max_size=100)
media_types = st.sampled_from(["image", "audio", "video"])
timestamps = st.datetimes(
    min_value=datetime(1970, 1, 2),
    max_value=datetime(2100, 1, 1),
    timezones=st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8))]),
)
probabilities = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)
blobs = st.binary(min_size=1, max_size=300)
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**53), max_value=2**53),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
json_values: st.SearchStrategy[JsonValue] = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
json_dicts = st.dictionaries(st.text(max_size=10), json_values, max_size=5)
finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)
sizes = st.floats(min_value=0, max_value=1e6, allow_nan=False)
pixels = st.integers(min_value=1, max_value=65535)


def opt(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.none() | strategy


device_statuses = st.builds(
    DeviceStatus,
    device_id=safe_ids,
    online=st.booleans(),
    capabilities=st.lists(tokens, max_size=6),
    firmware_version=labels,
    timestamp=timestamps,
    room=opt(safe_ids),
    zone=opt(safe_ids),
    ip=opt(st.ip_addresses().map(str)),
    volume=opt(st.integers(min_value=0, max_value=100)),
    muted=opt(st.booleans()),
)
signaling = st.builds(
    SignalingDescription,
    type=st.sampled_from(["offer", "answer"]),
    sdp=st.text(min_size=1, max_size=500),
    device_id=safe_ids,
    session_id=safe_ids,
    hub_id=opt(safe_ids),
)
ice_candidates = st.builds(
    IceCandidate,
    candidate=st.text(max_size=200),
    sdpMid=st.text(max_size=10),
    sdpMLineIndex=opt(st.integers(min_value=0, max_value=1023)),
    session_id=safe_ids,
)
commands = st.builds(Command, command=tokens, params=json_dicts, request_id=tokens)
command_responses = st.one_of(
    st.builds(CommandResponse, request_id=tokens, ok=st.just(True), result=json_dicts),
    st.builds(CommandResponse, request_id=tokens, ok=st.just(False), result=json_dicts, error=errors),
)
device_events = st.builds(
    DeviceEvent, event=tokens, device_id=safe_ids, timestamp=timestamps, data=json_dicts
)
media_requests = st.builds(
    MediaRequest,
    request_type=st.sampled_from(["snapshot", "recording"]),
    request_id=tokens,
    params=json_dicts,
)
media_uploads = st.builds(
    MediaUpload,
    request_id=tokens,
    media_type=media_types,
    format=tokens,
    timestamp=timestamps,
    data=blobs,
    width=opt(pixels),
    height=opt(pixels),
    duration_ms=opt(st.integers(min_value=0, max_value=3_600_000)),
    sample_rate=opt(st.sampled_from([8000, 16000, 44100, 48000])),
)
web_uploads = st.builds(
    WebUpload,
    session_id=safe_ids,
    media_type=media_types,
    format=tokens,
    filename=labels.filter(lambda s: "/" not in s and "\\" not in s and s not in (".", "..")),
    context=texts,
    conversation_id=opt(tokens),
    data=blobs,
)
server_statuses = st.builds(ServerStatus, online=st.booleans(), version=labels, timestamp=timestamps)
hub_statuses = st.builds(
    HubStatus,
    hub_id=safe_ids,
    online=st.booleans(),
    devices=st.lists(safe_ids, max_size=4),
    device_count=st.integers(0, 10_000),
    timestamp=timestamps,
)
server_presences = st.builds(
    ServerPresence,
    server_id=safe_ids,
    online=st.booleans(),
    session=safe_ids,
    version=labels,
    timestamp=timestamps,
    group=st.sampled_from(["", "naila-ai"]),
)
seconds = st.floats(0, 86400, allow_nan=False)
alarm_records = st.builds(
    AlarmRecord,
    alarm_id=safe_ids,
    server_id=safe_ids,
    kind=st.just("timer"),
    asker=safe_ids,
    room=st.just("kitchen"),
    label=texts,
    due=timestamps,
    left_s=opt(seconds),
    duration_s=seconds,
    set_s=seconds,
    created=timestamps,
)
broadcasts = st.builds(Broadcast, message=non_empty_texts, room=opt(safe_ids), timestamp=timestamps)
alerts = st.builds(
    Alert,
    alert_type=safe_ids,
    zone=safe_ids,
    confidence=probabilities,
    source_device=safe_ids,
    timestamp=timestamps,
    snapshot_available=st.booleans(),
)
chat_requests = st.builds(
    ChatRequest,
    session_id=safe_ids,
    text=non_empty_texts,
    conversation_id=opt(tokens),
    speak_on=opt(safe_ids),
)
chat_replies = st.builds(
    ChatReply, session_id=safe_ids, text=texts, conversation_id=tokens, error=opt(errors)
)
visual_contexts = st.builds(
    VisualContext,
    source=st.one_of(
        st.builds(
            VisualSource,
            type=st.sampled_from(["webrtc_stream", "mqtt_snapshot"]),
            device_id=safe_ids,
            session_id=opt(safe_ids),
        ),
        st.builds(
            VisualSource,
            type=st.sampled_from(["http_upload", "mqtt_upload"]),
            device_id=opt(safe_ids),
            session_id=safe_ids,
        ),
    ),
    media=st.builds(
        VisualMedia,
        type=st.sampled_from(["image", "video"]),
        format=tokens,
        width=pixels,
        height=pixels,
        timestamp=timestamps,
    ),
    analysis=st.builds(
        VisualAnalysis,
        description=texts,
        objects=st.lists(
            st.builds(
                DetectedObject,
                label=labels,
                confidence=probabilities,
                bbox=st.tuples(finite, finite, sizes, sizes),
            ),
            max_size=5,
        ),
        scene_type=opt(labels),
        lighting=opt(labels),
        text_detected=st.lists(texts, max_size=4),
    ),
    user_context=opt(texts),
)

ALL_MESSAGES: dict[type[NailaMessage], st.SearchStrategy[Any]] = {
    DeviceStatus: device_statuses,
    SignalingDescription: signaling,
    IceCandidate: ice_candidates,
    Command: commands,
    CommandResponse: command_responses,
    DeviceEvent: device_events,
    MediaRequest: media_requests,
    MediaUpload: media_uploads,
    WebUpload: web_uploads,
    ServerStatus: server_statuses,
    HubStatus: hub_statuses,
    ServerPresence: server_presences,
    AlarmRecord: alarm_records,
    Broadcast: broadcasts,
    Alert: alerts,
    ChatRequest: chat_requests,
    ChatReply: chat_replies,
    VisualContext: visual_contexts,
}
any_message = st.one_of(*ALL_MESSAGES.values())


# --- round trips --------------------------------------------------------------------------------


def test_every_wire_model_has_a_strategy() -> None:
    assert set(MODEL_FOR_KIND.values()) <= set(ALL_MESSAGES)


@pytest.mark.parametrize("model_cls", list(ALL_MESSAGES), ids=lambda c: c.__name__)
@SETTINGS
@given(data=st.data())
def test_encode_decode_round_trip(model_cls: type[NailaMessage], data: st.DataObject) -> None:
    message = data.draw(ALL_MESSAGES[model_cls])
    wire = encode(message)
    assert isinstance(wire, bytes)
    decoded = decode(model_cls, wire)
    assert decoded == message
    assert encode(decoded) == wire  # stable bytes: re-publishing does not drift
    assert isinstance(json.loads(wire), dict)


def test_encoding_is_compact_json() -> None:
    status = DeviceStatus(
        device_id="d1",
        online=True,
        capabilities=["audio"],
        firmware_version="1.0",
        timestamp=datetime(2024, 1, 15, 10, 30, tzinfo=UTC),
        volume=40,
    )
    assert encode(status) == (
        b'{"device_id":"d1","online":true,"capabilities":["audio"],"firmware_version":"1.0",'
        b'"timestamp":"2024-01-15T10:30:00Z","room":null,"zone":null,"ip":null,"volume":40,"muted":null,'
        b'"listening_mode":null,"camera_enabled":null,"microphone_enabled":null}'
    )


@SETTINGS
@given(any_message)
def test_encoding_is_one_line_utf8(message: NailaMessage) -> None:
    wire = encode(message)
    assert b"\n" not in wire
    wire.decode("utf-8")


@SETTINGS
@given(
    any_message, st.dictionaries(st.text(alphabet="xyz_", min_size=1, max_size=8), json_scalars, max_size=3)
)
def test_unknown_fields_are_ignored(message: NailaMessage, extra: dict[str, JsonValue]) -> None:
    obj = json.loads(encode(message))
    fresh = {f"zz_{k}": v for k, v in extra.items() if f"zz_{k}" not in obj}
    assert decode(type(message), json.dumps({**obj, **fresh})) == message


@SETTINGS
@given(any_message)
def test_decode_accepts_str_bytearray_and_memoryview(message: NailaMessage) -> None:
    wire = encode(message)
    cls = type(message)
    assert decode(cls, wire.decode()) == message
    assert decode(cls, bytearray(wire)) == message
    assert decode(cls, memoryview(wire)) == message


# --- spec examples ------------------------------------------------------------------------------

SPEC_EXAMPLES: list[tuple[type[NailaMessage], str]] = [
    (
        DeviceStatus,
        '{"device_id": "living_room_hub", "online": true, "capabilities": ["audio", "video", "speaker"],'
        ' "firmware_version": "1.2.0", "timestamp": "2024-01-15T10:30:00Z"}',
    ),
    (
        SignalingDescription,
        '{"type": "offer", "sdp": "v=0\\r\\no=- 123456 ...", "device_id": "living_room_hub",'
        ' "session_id": "abc123"}',
    ),
    (
        IceCandidate,
        '{"candidate": "candidate:1 1 UDP 2130706431 ...", "sdpMid": "audio", "sdpMLineIndex": 0,'
        ' "session_id": "abc123"}',
    ),
    (
        Command,
        '{"command": "start_video", "params": {"resolution": "640x480", "fps": 10}, "request_id": "req_123"}',
    ),
    (
        Alert,
        '{"alert_type": "person_detected", "zone": "front_door", "confidence": 0.92,'
        ' "source_device": "front_camera", "timestamp": "2024-01-15T10:30:00Z", "snapshot_available": true}',
    ),
    (
        MediaRequest,
        '{"request_type": "snapshot", "request_id": "req_456",'
        ' "params": {"resolution": "1280x720", "format": "jpeg", "quality": 85}}',
    ),
    (
        MediaUpload,
        '{"request_id": "req_456", "media_type": "image", "format": "jpeg", "width": 1280, "height": 720,'
        ' "timestamp": "2024-01-15T10:30:00Z", "data": "/9j/4AAQSkZJRg=="}',
    ),
    (
        MediaUpload,
        '{"request_id": "req_789", "media_type": "audio", "format": "opus", "duration_ms": 5000,'
        ' "sample_rate": 48000, "timestamp": "2024-01-15T10:30:00Z", "data": "T2dnUw=="}',
    ),
    (
        WebUpload,
        '{"session_id": "web_session_123", "media_type": "image", "format": "jpeg", "filename": "photo.jpg",'
        ' "context": "What\'s in this picture?", "conversation_id": "conv_456", "data": "/9j/4AAQ"}',
    ),
    (
        VisualContext,
        """{
          "source": {"type": "webrtc_stream", "device_id": "living_room_camera",
                     "session_id": "web_session_123"},
          "media": {"type": "image", "format": "jpeg", "width": 1280, "height": 720,
                    "timestamp": "2024-01-15T10:30:00Z"},
          "analysis": {
            "description": "Office desk with laptop and accessories",
            "objects": [
              {"label": "laptop", "confidence": 0.95, "bbox": [100, 100, 400, 300]},
              {"label": "coffee mug", "confidence": 0.88, "bbox": [450, 200, 100, 120]}
            ],
            "scene_type": "indoor_office",
            "lighting": "natural",
            "text_detected": ["NAILA", "Meeting at 3pm"]
          },
          "user_context": "What's on my desk?"
        }""",
    ),
]


@pytest.mark.parametrize(("model_cls", "payload"), SPEC_EXAMPLES, ids=lambda v: getattr(v, "__name__", ""))
def test_spec_examples_decode(model_cls: type[NailaMessage], payload: str) -> None:
    message = decode(model_cls, payload)
    # Every key of the spec's example comes back under the same name.
    original = json.loads(payload)
    encoded = json.loads(encode(message))
    assert set(original) <= set(encoded)
    assert decode(model_cls, encode(message)) == message


def test_spec_example_values() -> None:
    status = decode(DeviceStatus, SPEC_EXAMPLES[0][1])
    assert status.timestamp == datetime(2024, 1, 15, 10, 30, tzinfo=UTC)
    assert status.capabilities == ["audio", "video", "speaker"]
    assert json.loads(encode(status))["timestamp"] == "2024-01-15T10:30:00Z"
    ice = decode(IceCandidate, SPEC_EXAMPLES[2][1])
    assert (ice.sdpMid, ice.sdpMLineIndex) == ("audio", 0)
    snapshot = decode(MediaUpload, SPEC_EXAMPLES[6][1])
    assert snapshot.data.startswith(b"\xff\xd8")
    ctx = decode(VisualContext, SPEC_EXAMPLES[-1][1])
    assert ctx.analysis.objects[1].bbox == (450.0, 200.0, 100.0, 120.0)
    assert ctx.source.type == "webrtc_stream"


def test_timestamp_defaults_to_now_utc() -> None:
    before = datetime.now(UTC)
    status = DeviceStatus(device_id="d1", online=True, capabilities=[], firmware_version="1")
    assert before <= status.timestamp <= datetime.now(UTC)
    assert json.loads(encode(status))["timestamp"].endswith("Z")


def test_media_data_is_bytes_in_python_and_base64_on_the_wire() -> None:
    upload = WebUpload(session_id="s", media_type="image", format="png", filename="a.png", data=b"\x89PNG")
    assert upload.data == b"\x89PNG"
    assert json.loads(encode(upload))["data"] == base64.b64encode(b"\x89PNG").decode()
    assert upload.model_dump()["data"] == b"\x89PNG"


def test_new_request_id_is_a_valid_unique_token() -> None:
    ids = {new_request_id() for _ in range(50)}
    assert len(ids) == 50
    for rid in ids:
        Command(command="ping", request_id=rid)


# --- rejection ----------------------------------------------------------------------------------

GOOD_STATUS: dict[str, Any] = {
    "device_id": "d1",
    "online": True,
    "capabilities": ["audio"],
    "firmware_version": "1.0",
    "timestamp": "2024-01-15T10:30:00Z",
}


def status_with(**changes: Any) -> str:
    body = {**GOOD_STATUS, **changes}
    return json.dumps({k: v for k, v in body.items() if v is not _DROP})


_DROP = object()


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"   ",
        b"{",
        b"nul",
        b"{'a': 1}",
        b"\xff\xfe\x00",
        b'{"device_id": "d1",}',
        b"[]",
        b"1",
        b'"x"',
        b"null",
    ],
)
def test_malformed_json_or_not_an_object(payload: bytes) -> None:
    with pytest.raises(MessageError) as info:
        decode(DeviceStatus, payload)
    assert info.value.field is None
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("payload", [None, 5, 1.5])
def test_payload_of_wrong_python_type(payload: Any) -> None:
    with pytest.raises(MessageError, match="bytes or str"):
        decode(DeviceStatus, payload)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"device_id": _DROP}, "device_id"),
        ({"online": _DROP}, "online"),
        ({"capabilities": _DROP}, "capabilities"),
        ({"firmware_version": _DROP}, "firmware_version"),
        ({"online": "true"}, "online"),
        ({"online": 1}, "online"),
        ({"device_id": 42}, "device_id"),
        ({"capabilities": "audio"}, "capabilities"),
        ({"capabilities": [1]}, "capabilities.0"),
        ({"timestamp": 1705314600}, "timestamp"),
        ({"timestamp": "2024-01-15T10:30:00"}, "timestamp"),
        ({"timestamp": "yesterday"}, "timestamp"),
        ({"volume": 101}, "volume"),
        ({"volume": 50.0}, "volume"),
        ({"ip": "999.1.1.1"}, "ip"),
        ({"device_id": "a/b"}, "device_id"),
        ({"device_id": "+"}, "device_id"),
        ({"device_id": "#"}, "device_id"),
        ({"device_id": ""}, "device_id"),
        ({"device_id": "x" * 65}, "device_id"),
        ({"device_id": "a\u0000b"}, "device_id"),
        ({"device_id": ".."}, "device_id"),
        ({"room": "living room"}, "room"),
        ({"zone": "z/1"}, "zone"),
        ({"firmware_version": "1.0\n"}, "firmware_version"),
        ({"firmware_version": "v" * 300}, "firmware_version"),
    ],
)
def test_wrong_or_missing_fields_name_the_field(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(MessageError) as info:
        decode(DeviceStatus, status_with(**changes))
    assert info.value.field == field
    message = str(info.value)
    assert message.startswith(f"DeviceStatus.{field}:")
    assert "\n" not in message


def test_missing_field_message() -> None:
    with pytest.raises(MessageError, match=r"^DeviceStatus\.online: missing required field$"):
        decode(DeviceStatus, status_with(online=_DROP))


def test_several_problems_are_counted_on_one_line() -> None:
    with pytest.raises(MessageError, match=r"and 2 more problems"):
        decode(DeviceStatus, '{"capabilities": []}')


@SETTINGS
@given(st.text(min_size=1, max_size=80).filter(lambda s: not all(c in SAFE_CHARS for c in s) or len(s) > 64))
def test_unsafe_ids_rejected_in_every_id_field(bad: str) -> None:
    cases: list[tuple[type[NailaMessage], dict[str, Any], str]] = [
        (DeviceStatus, GOOD_STATUS, "device_id"),
        (
            SignalingDescription,
            {"type": "answer", "sdp": "v=0", "device_id": "d", "session_id": "s"},
            "session_id",
        ),
        (IceCandidate, {"candidate": "", "sdpMid": "0", "session_id": "s"}, "session_id"),
        (Alert, {"alert_type": "m", "zone": "z", "confidence": 0.5, "source_device": "c"}, "zone"),
        (ChatRequest, {"session_id": "s", "text": "hi", "speak_on": "kitchen"}, "speak_on"),
        (
            WebUpload,
            {"session_id": "s", "media_type": "image", "format": "jpeg", "filename": "a", "data": "AA=="},
            "session_id",
        ),
    ]
    for model_cls, good, field in cases:
        decode(model_cls, json.dumps(good))  # the base case is valid
        with pytest.raises(MessageError) as info:
            decode(model_cls, json.dumps({**good, field: bad}))
        assert info.value.field == field


@SETTINGS
@given(any_message, st.data())
def test_dropping_a_required_field_fails(message: NailaMessage, data: st.DataObject) -> None:
    cls = type(message)
    required = [name for name, f in cls.model_fields.items() if f.is_required()]
    name = data.draw(st.sampled_from(required))
    obj = json.loads(encode(message))
    del obj[name]
    with pytest.raises(MessageError, match="missing required field") as info:
        decode(cls, json.dumps(obj))
    assert info.value.field == name


@SETTINGS
@given(any_message, st.data())
def test_wrong_json_type_for_a_field_fails(message: NailaMessage, data: st.DataObject) -> None:
    cls = type(message)
    obj = json.loads(encode(message))
    name = data.draw(st.sampled_from(sorted(obj)))
    value = obj[name]
    # Something of a clearly different JSON type (a dict is wrong for every non-dict field and vice versa).
    wrong: JsonValue = [1, 2] if isinstance(value, dict) else {"unexpected": True}
    obj[name] = wrong
    with pytest.raises(MessageError) as info:
        decode(cls, json.dumps(obj))
    assert info.value.field is not None and info.value.field.startswith(name)


@SETTINGS
@given(st.binary(max_size=200))
def test_garbage_bytes_only_ever_raise_message_error(payload: bytes) -> None:
    for cls in (DeviceStatus, Command, WebUpload, VisualContext):
        try:
            decode(cls, payload)
        except MessageError as err:
            assert "\n" not in str(err)


@SETTINGS
@given(json_values)
def test_arbitrary_json_only_ever_raises_message_error(value: JsonValue) -> None:
    for cls in ALL_MESSAGES:
        with contextlib.suppress(MessageError):
            decode(cls, json.dumps(value))


@pytest.mark.parametrize(
    ("model_cls", "payload", "field"),
    [
        (Alert, {"confidence": 1.5}, "confidence"),
        (Alert, {"confidence": -0.1}, "confidence"),
        (Alert, {"confidence": "0.9"}, "confidence"),
        (Alert, {"snapshot_available": "yes"}, "snapshot_available"),
        (IceCandidate, {"sdpMLineIndex": -1}, "sdpMLineIndex"),
        (IceCandidate, {"sdpMLineIndex": "0"}, "sdpMLineIndex"),
        (IceCandidate, {"candidate": "c" * 2000}, "candidate"),
        (SignalingDescription, {"type": "pranswer"}, "type"),
        (SignalingDescription, {"sdp": ""}, "sdp"),
        (MediaRequest, {"request_type": "stream"}, "request_type"),
        (MediaRequest, {"params": [1]}, "params"),
        (MediaRequest, {"request_id": "has space"}, "request_id"),
        (Command, {"params": {"x": float("nan")}}, "params"),
        (ChatRequest, {"text": ""}, "text"),
        (ChatRequest, {"text": "x" * 9000}, "text"),
        (WebUpload, {"filename": "../etc/passwd"}, "filename"),
        (WebUpload, {"filename": "a\\b"}, "filename"),
        (WebUpload, {"media_type": "document"}, "media_type"),
        (WebUpload, {"data": "not base64!"}, "data"),
        (WebUpload, {"data": "AAA"}, "data"),
        (WebUpload, {"data": "AA==\n"}, "data"),
        (WebUpload, {"data": "-_8="}, "data"),
        (WebUpload, {"data": ""}, "data"),
        (WebUpload, {"data": 12}, "data"),
        (MediaUpload, {"width": 0}, "width"),
        (MediaUpload, {"data": "é"}, "data"),
    ],
)
def test_field_rules(model_cls: type[NailaMessage], payload: dict[str, Any], field: str) -> None:
    base: dict[type[NailaMessage], dict[str, Any]] = {
        Alert: {"alert_type": "m", "zone": "z", "confidence": 0.5, "source_device": "c"},
        IceCandidate: {"candidate": "candidate:1", "sdpMid": "0", "sdpMLineIndex": 0, "session_id": "s"},
        SignalingDescription: {"type": "offer", "sdp": "v=0", "device_id": "d", "session_id": "s"},
        MediaRequest: {"request_type": "snapshot", "request_id": "r"},
        Command: {"command": "c", "request_id": "r"},
        ChatRequest: {"session_id": "s", "text": "hello"},
        WebUpload: {
            "session_id": "s",
            "media_type": "image",
            "format": "jpeg",
            "filename": "a.jpg",
            "data": "AA==",
        },
        MediaUpload: {"request_id": "r", "media_type": "image", "format": "jpeg", "data": "AA=="},
    }
    good = base[model_cls]
    decode(model_cls, json.dumps(good))
    with pytest.raises(MessageError) as info:
        decode(model_cls, json.dumps({**good, **payload}))
    assert info.value.field == field, str(info.value)


def test_nan_literal_in_json_is_rejected() -> None:
    with pytest.raises(MessageError, match="params"):
        decode(Command, b'{"command": "c", "request_id": "r", "params": {"a": [1, NaN]}}')
    with pytest.raises(MessageError, match="confidence"):
        decode(Alert, b'{"alert_type": "m", "zone": "z", "confidence": NaN, "source_device": "c"}')


def test_cross_field_rules() -> None:
    with pytest.raises(MessageError, match="sdpMid or sdpMLineIndex"):
        decode(IceCandidate, '{"candidate": "", "session_id": "s"}')
    with pytest.raises(MessageError, match="error is required"):
        decode(CommandResponse, '{"request_id": "r", "ok": false}')
    with pytest.raises(MessageError, match="error must be null"):
        decode(CommandResponse, '{"request_id": "r", "ok": true, "error": "boom"}')
    with pytest.raises(MessageError, match=r"^VisualSource: device_id or session_id is required$"):
        decode(VisualSource, '{"type": "mqtt_upload"}')
    bad_ctx = json.loads(SPEC_EXAMPLES[-1][1])
    bad_ctx["analysis"]["objects"][0]["bbox"] = [1, 2, -3, 4]
    with pytest.raises(MessageError) as info:
        decode(VisualContext, json.dumps(bad_ctx))
    assert info.value.field == "analysis.objects.0.bbox"
    bad_ctx["analysis"]["objects"][0]["bbox"] = [1, 2, 3]
    with pytest.raises(MessageError):
        decode(VisualContext, json.dumps(bad_ctx))


# --- sizes --------------------------------------------------------------------------------------


def test_control_payload_limit() -> None:
    padding = "x" * CONTROL_MAX_PAYLOAD_BYTES
    with pytest.raises(MessageError, match="over the 65536-byte limit"):
        decode(DeviceStatus, status_with(zz_padding=padding))
    # Unknown fields are ignored, but still count towards the size.
    decode(DeviceStatus, status_with(zz_padding="x" * 1000))
    with pytest.raises(MessageError, match="over the 100-byte limit"):
        decode(DeviceStatus, status_with(), max_bytes=100)


def test_upload_payload_limit_defaults() -> None:
    assert MEDIA_MAX_UPLOAD_SIZE == 52_428_800
    assert WebUpload.payload_limit() == UPLOAD_MAX_PAYLOAD_BYTES > 4 * MEDIA_MAX_UPLOAD_SIZE // 3
    assert MediaUpload.payload_limit(1000) < DeviceStatus.payload_limit() + 2000
    assert DeviceStatus.payload_limit() == CONTROL_MAX_PAYLOAD_BYTES


def test_media_limit_is_per_call() -> None:
    blob = bytes(range(256)) * 400  # 102 400 bytes, more than a control payload once in base64
    wire = encode(WebUpload(session_id="s", media_type="image", format="jpeg", filename="a.jpg", data=blob))
    assert decode(WebUpload, wire).data == blob
    assert decode(WebUpload, wire, max_media_bytes=len(blob)).data == blob
    with pytest.raises(MessageError, match="media limit") as info:
        decode(WebUpload, wire, max_media_bytes=len(blob) - 1)
    assert info.value.field == "data"
    # A much smaller media limit also shrinks the payload limit: refused before parsing.
    with pytest.raises(MessageError, match="byte limit"):
        decode(WebUpload, wire, max_media_bytes=100)


def test_default_media_limit_is_50_mb() -> None:
    size = MEDIA_MAX_UPLOAD_SIZE + 1
    b64 = base64.b64encode(bytes(size)).decode()
    payload = json.dumps(
        {"session_id": "s", "media_type": "video", "format": "mp4", "filename": "v.mp4", "data": b64}
    )
    assert len(payload) <= UPLOAD_MAX_PAYLOAD_BYTES  # the envelope fits; the blob does not
    with pytest.raises(MessageError, match="52428800-byte media limit"):
        decode(WebUpload, payload)
    with pytest.raises(ValidationError):
        WebUpload(session_id="s", media_type="video", format="mp4", filename="v.mp4", data=bytes(size))


def test_encode_refuses_what_receivers_would_refuse() -> None:
    big = ChatReply(session_id="s", text="x" * 8000, conversation_id="c")
    assert len(encode(big)) < CONTROL_MAX_PAYLOAD_BYTES
    with pytest.raises(MessageError, match="encoded payload"):
        encode(big, max_bytes=1000)
    objects = [DetectedObject(label="l" * 200, confidence=0.5, bbox=(0, 0, 1, 1))] * 500
    huge = VisualContext(
        source=VisualSource(type="mqtt_upload", session_id="s"),
        media=VisualMedia(type="image", format="jpeg", width=1, height=1),
        analysis=VisualAnalysis(description="d", objects=objects, text_detected=["t" * 8000] * 40),
    )
    with pytest.raises(MessageError, match="encoded payload"):
        encode(huge)


# --- construction helpers, wills, dispatch -------------------------------------------------------


def test_build_turns_validation_errors_into_message_error() -> None:
    assert build(Command, command="c", request_id="r") == Command(command="c", request_id="r")
    with pytest.raises(MessageError, match=r"^Command\.request_id: missing required field$"):
        build(Command, command="c")
    with pytest.raises(MessageError, match=r"^ChatRequest\.session_id: "):
        build(ChatRequest, session_id="a b", text="hi")


def test_models_are_frozen() -> None:
    status = offline_status("d1")
    with pytest.raises(ValidationError):
        status.online = True  # type: ignore[misc]
    assert status.model_copy(update={"online": True}).online


def test_device_last_will() -> None:
    online = DeviceStatus(
        device_id="kitchen_pi", online=True, capabilities=["audio"], firmware_version="2.0", room="kitchen"
    )
    will = last_will(online)
    assert will.topic == "naila/devices/kitchen_pi/status"
    assert (will.qos, will.retain) == (1, True)
    offline = decode(DeviceStatus, will.payload)
    assert offline.online is False
    assert offline.room == "kitchen" and offline.capabilities == ["audio"]
    minimal = decode(DeviceStatus, last_will("kitchen_pi").payload)
    assert (minimal.device_id, minimal.online) == ("kitchen_pi", False)
    with pytest.raises(MessageError, match="device_id"):
        last_will("kitchen/pi")


def test_server_last_will() -> None:
    will = server_last_will("0.1.0")
    assert will.topic == topics.SERVER_STATUS
    assert will.retain and will.qos == 1
    assert decode(ServerStatus, will.payload).online is False


def test_decode_message_picks_the_model_and_checks_ids() -> None:
    wire = encode(offline_status("d1"))
    parsed, message = decode_message("naila/devices/d1/status", wire)
    assert parsed.kind is TopicKind.DEVICE_STATUS
    assert isinstance(message, DeviceStatus) and message.device_id == "d1"
    with pytest.raises(MessageError, match="does not match the topic's device_id"):
        decode_message("naila/devices/d2/status", wire)
    with pytest.raises(MessageError):
        decode_message("naila/devices/+/status", wire)
    with pytest.raises(MessageError):  # right topic, wrong model
        decode_message("naila/devices/d1/command", wire)

    answer = SignalingDescription(type="answer", sdp="v=0", device_id="d1", session_id="s1")
    decode_message("naila/devices/d1/signaling/answer", encode(answer))
    with pytest.raises(MessageError, match="type"):
        decode_message("naila/devices/d1/signaling/offer", encode(answer))

    upload = WebUpload(session_id="s1", media_type="audio", format="wav", filename="a.wav", data=b"RIFF")
    decode_message("naila/uploads/s1/audio", encode(upload))
    with pytest.raises(MessageError, match="upload_kind"):
        decode_message("naila/uploads/s1/image", encode(upload))

    alert = Alert(alert_type="motion", zone="yard", confidence=0.7, source_device="cam")
    decode_message(topics.alert("yard", "motion"), encode(alert))
    decode_message(topics.ALERTS_ALL, encode(alert))
    with pytest.raises(MessageError, match="zone"):
        decode_message(topics.alert("porch", "motion"), encode(alert))


def test_outbound_uses_the_policy_table() -> None:
    status = offline_status("d1")
    out = outbound(topics.device_status("d1"), status)
    assert (out.topic, out.qos, out.retain) == ("naila/devices/d1/status", 1, True)
    assert decode(DeviceStatus, out.payload) == status
    event = DeviceEvent(event="button", device_id="d1")
    assert outbound(topics.device_events("d1"), event).qos == 0
    with pytest.raises(MessageError, match="carries DeviceStatus"):
        outbound(topics.device_status("d1"), event)
    with pytest.raises(MessageError, match="device_id"):
        outbound(topics.device_status("d2"), status)
