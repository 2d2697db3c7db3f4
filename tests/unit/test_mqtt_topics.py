"""The MQTT topic tree: builders, parser, wildcards and the QoS/retain table (spec §5.1, §5.3, §9.1)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.mqtt import MessageError, ParsedTopic, TopicKind, TopicPolicy, topics
from shared.mqtt.topics import (
    TOPIC_POLICY,
    UPLOAD_KINDS,
    UploadKind,
    check_segment,
    is_safe_segment,
    matches,
    parse_topic,
    policy_for,
)

pytestmark = pytest.mark.unit

SETTINGS = settings(max_examples=150, deadline=None)

SAFE_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-"
safe_ids = st.text(alphabet=SAFE_CHARS, min_size=1, max_size=64).filter(lambda s: s not in (".", ".."))
upload_kinds = st.sampled_from(UPLOAD_KINDS)

# Anything that must never become a topic level: empty, too long, or carrying a bad character.
BAD_CHARS = ["/", "+", "#", "\x00", " ", "\n", "\t", "$", "é", "*", "\\", ":"]
unsafe_ids = st.one_of(
    st.just(""),
    st.just("."),
    st.just(".."),
    st.text(alphabet=SAFE_CHARS, min_size=65, max_size=200),
    st.tuples(
        st.text(alphabet=SAFE_CHARS, max_size=20), st.sampled_from(BAD_CHARS), st.text(max_size=20)
    ).map("".join),
    st.text(min_size=1, max_size=80).filter(lambda s: not is_safe_segment(s)),
)

DEVICE_BUILDERS: dict[TopicKind, Callable[[str], str]] = {
    TopicKind.DEVICE_STATUS: topics.device_status,
    TopicKind.DEVICE_COMMAND: topics.device_command,
    TopicKind.DEVICE_COMMAND_RESPONSE: topics.device_command_response,
    TopicKind.SIGNALING_OFFER: topics.signaling_offer,
    TopicKind.SIGNALING_ANSWER: topics.signaling_answer,
    TopicKind.SIGNALING_ICE: topics.signaling_ice,
    TopicKind.MEDIA_SNAPSHOT: topics.media_snapshot,
    TopicKind.MEDIA_RECORDING: topics.media_recording,
    TopicKind.MEDIA_REQUEST: topics.media_request,
    TopicKind.DEVICE_EVENTS: topics.device_events,
}
SESSION_BUILDERS: dict[TopicKind, Callable[[str], str]] = {
    TopicKind.CHAT_REQUEST: topics.chat_request,
    TopicKind.CHAT_REPLY: topics.chat_reply,
}
SUBSCRIPTION_FILTER: dict[TopicKind, str] = {
    TopicKind.DEVICE_STATUS: topics.ALL_DEVICE_STATUS,
    TopicKind.DEVICE_COMMAND: topics.ALL_DEVICE_COMMANDS,
    TopicKind.DEVICE_COMMAND_RESPONSE: topics.ALL_COMMAND_RESPONSES,
    TopicKind.SIGNALING_OFFER: topics.ALL_SIGNALING_OFFERS,
    TopicKind.SIGNALING_ANSWER: topics.ALL_SIGNALING_ANSWERS,
    TopicKind.SIGNALING_ICE: topics.ALL_SIGNALING_ICE,
    TopicKind.MEDIA_SNAPSHOT: topics.ALL_MEDIA_SNAPSHOTS,
    TopicKind.MEDIA_RECORDING: topics.ALL_MEDIA_RECORDINGS,
    TopicKind.DEVICE_EVENTS: topics.ALL_DEVICE_EVENTS,
    TopicKind.UPLOAD: topics.ALL_UPLOADS,
    TopicKind.ALERT: topics.ALL_ZONE_ALERTS,
    TopicKind.CHAT_REQUEST: topics.ALL_CHAT_REQUESTS,
    TopicKind.CHAT_REPLY: topics.ALL_CHAT_REPLIES,
}


@st.composite
def parsed_topics(draw: st.DrawFn) -> ParsedTopic:
    """A random ParsedTopic of any kind with the ids that kind needs."""
    kind = draw(st.sampled_from(list(TopicKind)))
    if kind in DEVICE_BUILDERS:
        return ParsedTopic(kind, device_id=draw(safe_ids))
    if kind in SESSION_BUILDERS:
        return ParsedTopic(kind, session_id=draw(safe_ids))
    if kind is TopicKind.UPLOAD:
        return ParsedTopic(kind, session_id=draw(safe_ids), upload_kind=draw(upload_kinds))
    if kind is TopicKind.ALERT:
        return ParsedTopic(kind, zone=draw(safe_ids), alert_type=draw(safe_ids))
    if kind is TopicKind.HUB_STATUS:
        return ParsedTopic(kind, hub_id=draw(safe_ids))
    if kind is TopicKind.SERVER_PRESENCE:
        return ParsedTopic(kind, server_id=draw(safe_ids))
    if kind is TopicKind.ALARM:
        return ParsedTopic(kind, server_id=draw(safe_ids), alarm_id=draw(safe_ids))
    return ParsedTopic(kind)


# --- examples from the spec ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("topic", "expected"),
    [
        (
            "naila/devices/living_room_hub/status",
            ParsedTopic(TopicKind.DEVICE_STATUS, device_id="living_room_hub"),
        ),
        ("naila/devices/d1/command", ParsedTopic(TopicKind.DEVICE_COMMAND, device_id="d1")),
        ("naila/devices/d1/command/response", ParsedTopic(TopicKind.DEVICE_COMMAND_RESPONSE, device_id="d1")),
        ("naila/devices/d1/signaling/offer", ParsedTopic(TopicKind.SIGNALING_OFFER, device_id="d1")),
        ("naila/devices/d1/signaling/answer", ParsedTopic(TopicKind.SIGNALING_ANSWER, device_id="d1")),
        ("naila/devices/d1/signaling/ice", ParsedTopic(TopicKind.SIGNALING_ICE, device_id="d1")),
        ("naila/devices/d1/media/snapshot", ParsedTopic(TopicKind.MEDIA_SNAPSHOT, device_id="d1")),
        ("naila/devices/d1/media/recording", ParsedTopic(TopicKind.MEDIA_RECORDING, device_id="d1")),
        ("naila/devices/d1/media/request", ParsedTopic(TopicKind.MEDIA_REQUEST, device_id="d1")),
        ("naila/devices/d1/events", ParsedTopic(TopicKind.DEVICE_EVENTS, device_id="d1")),
        ("naila/server/status", ParsedTopic(TopicKind.SERVER_STATUS)),
        ("naila/server/broadcast", ParsedTopic(TopicKind.SERVER_BROADCAST)),
        (
            "naila/uploads/web_session_123/image",
            ParsedTopic(TopicKind.UPLOAD, session_id="web_session_123", upload_kind="image"),
        ),
        ("naila/uploads/s/audio", ParsedTopic(TopicKind.UPLOAD, session_id="s", upload_kind="audio")),
        ("naila/uploads/s/video", ParsedTopic(TopicKind.UPLOAD, session_id="s", upload_kind="video")),
        (
            "naila/alerts/front_door/person_detected",
            ParsedTopic(TopicKind.ALERT, zone="front_door", alert_type="person_detected"),
        ),
        ("naila/alerts/all", ParsedTopic(TopicKind.ALERTS_ALL)),
        ("naila/chat/web-1/request", ParsedTopic(TopicKind.CHAT_REQUEST, session_id="web-1")),
        ("naila/chat/web-1/reply", ParsedTopic(TopicKind.CHAT_REPLY, session_id="web-1")),
        ("naila/hubs/hall/status", ParsedTopic(TopicKind.HUB_STATUS, hub_id="hall")),
        ("naila/servers/gpu-1/status", ParsedTopic(TopicKind.SERVER_PRESENCE, server_id="gpu-1")),
        ("naila/alarms/gpu-1/t1", ParsedTopic(TopicKind.ALARM, server_id="gpu-1", alarm_id="t1")),
    ],
)
def test_parse_spec_topics(topic: str, expected: ParsedTopic) -> None:
    assert parse_topic(topic) == expected
    assert expected.topic == topic


def test_builders_spell_the_spec_tree() -> None:
    assert topics.device_status("x") == "naila/devices/x/status"
    assert topics.device_command("x") == "naila/devices/x/command"
    assert topics.device_command_response("x") == "naila/devices/x/command/response"
    assert topics.signaling_offer("x") == "naila/devices/x/signaling/offer"
    assert topics.signaling_answer("x") == "naila/devices/x/signaling/answer"
    assert topics.signaling_ice("x") == "naila/devices/x/signaling/ice"
    assert topics.media_snapshot("x") == "naila/devices/x/media/snapshot"
    assert topics.media_recording("x") == "naila/devices/x/media/recording"
    assert topics.media_request("x") == "naila/devices/x/media/request"
    assert topics.device_events("x") == "naila/devices/x/events"
    assert topics.SERVER_STATUS == "naila/server/status"
    assert topics.SERVER_BROADCAST == "naila/server/broadcast"
    assert topics.upload("s", "video") == "naila/uploads/s/video"
    assert topics.alert("backyard", "motion") == "naila/alerts/backyard/motion"
    assert topics.ALERTS_ALL == "naila/alerts/all"
    assert topics.chat_request("s") == "naila/chat/s/request"
    assert topics.chat_reply("s") == "naila/chat/s/reply"
    assert topics.device_wildcard("x") == "naila/devices/x/#"


def test_server_subscriptions_of_spec_section_9() -> None:
    assert topics.ALL_DEVICE_STATUS == "naila/devices/+/status"
    assert topics.ALL_SIGNALING_ANSWERS == "naila/devices/+/signaling/answer"
    assert topics.ALL_SIGNALING_ICE == "naila/devices/+/signaling/ice"
    assert topics.ALL_UPLOADS == "naila/uploads/+/+"


@pytest.mark.parametrize(
    "topic",
    [
        "",
        "naila",
        "naila/",
        "naila/devices",
        "naila/devices/d1",
        "naila/devices/d1/",
        "naila/devices/d1/status/",
        "naila/devices/d1/status/extra",
        "naila/devices//status",
        "naila/devices/+/status",
        "naila/devices/#",
        "naila/devices/d 1/status",
        "naila/devices/../status",
        "naila/devices/d1/signaling",
        "naila/devices/d1/signaling/bogus",
        "naila/devices/d1/command/reply",
        "naila/devices/d1/media",
        "other/devices/d1/status",
        "/naila/devices/d1/status",
        "NAILA/devices/d1/status",
        "naila/server",
        "naila/server/status/x",
        "naila/server/other",
        "naila/uploads/s1",
        "naila/uploads/s1/document",
        "naila/uploads/+/image",
        "naila/uploads/s1/image/x",
        "naila/alerts",
        "naila/alerts/zone",
        "naila/alerts/all/x/y",
        "naila/alerts/+/motion",
        "naila/alerts/z/#",
        "naila/chat/s1",
        "naila/chat/s1/answer",
        "naila/chat/s1/request/x",
        "naila/unknown/x/y",
        "naila/devices/" + "a" * 65 + "/status",
        "naila/" + "x/" * 1000,
    ],
)
def test_parse_rejects_unknown_or_malformed(topic: str) -> None:
    with pytest.raises(MessageError):
        parse_topic(topic)


def test_parse_rejects_non_string() -> None:
    with pytest.raises(MessageError, match="must be a string"):
        parse_topic(b"naila/server/status")  # type: ignore[arg-type]


def test_upload_kind_is_checked() -> None:
    with pytest.raises(MessageError, match="upload kind"):
        topics.upload("s1", "document")


def test_error_names_the_segment() -> None:
    with pytest.raises(MessageError, match="device_id") as info:
        topics.device_status("a/b")
    assert info.value.field == "device_id"
    assert "\n" not in str(info.value)
    with pytest.raises(MessageError, match="zone"):
        topics.alert("front door", "motion")
    with pytest.raises(MessageError, match="alert_type"):
        topics.alert("front_door", "#")


def test_build_topic_needs_the_ids() -> None:
    with pytest.raises(MessageError, match="device_id"):
        ParsedTopic(TopicKind.DEVICE_STATUS).topic  # noqa: B018 - the property raises
    with pytest.raises(MessageError, match="upload_kind"):
        ParsedTopic(TopicKind.UPLOAD, session_id="s").topic  # noqa: B018
    with pytest.raises(MessageError, match="session_id"):
        ParsedTopic(TopicKind.CHAT_REPLY).topic  # noqa: B018


# --- properties --------------------------------------------------------------------------------


@SETTINGS
@given(parsed_topics())
def test_build_parse_round_trip(parsed: ParsedTopic) -> None:
    topic = parsed.topic
    assert parse_topic(topic) == parsed
    assert topic.startswith("naila/")
    assert "+" not in topic and "#" not in topic


@SETTINGS
@given(safe_ids, safe_ids, upload_kinds)
def test_builders_round_trip_through_parse(a: str, b: str, kind: UploadKind) -> None:
    for topic_kind, build in DEVICE_BUILDERS.items():
        assert parse_topic(build(a)) == ParsedTopic(topic_kind, device_id=a)
    for topic_kind, build in SESSION_BUILDERS.items():
        assert parse_topic(build(a)) == ParsedTopic(topic_kind, session_id=a)
    expected = ParsedTopic(TopicKind.UPLOAD, session_id=a, upload_kind=kind)
    assert parse_topic(topics.upload(a, kind)) == expected
    assert parse_topic(topics.alert(a, b)) == ParsedTopic(TopicKind.ALERT, zone=a, alert_type=b)


@SETTINGS
@given(unsafe_ids)
def test_every_builder_rejects_unsafe_segments(bad: str) -> None:
    assert not is_safe_segment(bad)
    builders: list[Callable[[], str]] = [
        *(lambda b=b: b(bad) for b in DEVICE_BUILDERS.values()),
        *(lambda b=b: b(bad) for b in SESSION_BUILDERS.values()),
        lambda: topics.upload(bad, "image"),
        lambda: topics.alert(bad, "motion"),
        lambda: topics.alert("front_door", bad),
        lambda: topics.device_wildcard(bad),
        lambda: check_segment(bad),
    ]
    for build in builders:
        with pytest.raises(MessageError):
            build()


@SETTINGS
@given(unsafe_ids.filter(lambda s: "/" not in s))
def test_parse_rejects_unsafe_ids(bad: str) -> None:
    for topic in (
        f"naila/devices/{bad}/status",
        f"naila/uploads/{bad}/image",
        f"naila/alerts/{bad}/motion",
        f"naila/alerts/zone/{bad}",
        f"naila/chat/{bad}/request",
    ):
        with pytest.raises(MessageError):
            parse_topic(topic)


@SETTINGS
@given(st.text(max_size=300))
def test_parse_never_raises_anything_but_message_error(topic: str) -> None:
    try:
        parsed = parse_topic(topic)
    except MessageError:
        return
    assert parsed.topic == topic


@SETTINGS
@given(parsed_topics())
def test_subscription_filters_match_exactly_their_kind(parsed: ParsedTopic) -> None:
    topic = parsed.topic
    for kind, topic_filter in SUBSCRIPTION_FILTER.items():
        assert matches(topic_filter, topic) == (kind is parsed.kind), (topic_filter, topic)
    assert matches(topics.EVERYTHING, topic)


def test_matches_follows_mqtt_rules() -> None:
    assert matches("naila/#", "naila")
    assert matches("naila/devices/d1/#", "naila/devices/d1/signaling/ice")
    assert not matches("naila/devices/+/command", "naila/devices/d1/command/response")
    assert matches("naila/devices/+/command/response", "naila/devices/d1/command/response")
    assert not matches("naila/+", "naila/server/status")
    assert not matches("naila/server/status", "naila/server")


# --- QoS / retain (spec §5.3) -------------------------------------------------------------------


def test_policy_table_covers_every_kind() -> None:
    assert set(TOPIC_POLICY) == set(TopicKind)
    assert all(p.qos in (0, 1, 2) for p in TOPIC_POLICY.values())


@pytest.mark.parametrize(
    ("topic", "qos", "retain"),
    [
        ("naila/devices/d1/signaling/offer", 1, False),
        ("naila/devices/d1/signaling/answer", 1, False),
        ("naila/devices/d1/signaling/ice", 1, False),
        ("naila/devices/d1/command", 1, False),
        ("naila/devices/d1/command/response", 1, False),
        ("naila/devices/d1/status", 1, True),
        ("naila/server/status", 1, True),
        ("naila/alerts/z/motion", 1, False),
        ("naila/alerts/all", 1, False),
        ("naila/devices/d1/events", 0, False),
        ("naila/devices/d1/media/snapshot", 1, False),
        ("naila/devices/d1/media/recording", 1, False),
        ("naila/devices/d1/media/request", 1, False),
        ("naila/uploads/s/image", 1, False),
        ("naila/server/broadcast", 1, False),
        ("naila/chat/s/request", 1, False),
        ("naila/chat/s/reply", 1, False),
    ],
)
def test_policy_matches_spec(topic: str, qos: int, retain: bool) -> None:
    assert policy_for(topic) == TopicPolicy(qos=qos, retain=retain)
    assert policy_for(parse_topic(topic).kind) == TopicPolicy(qos=qos, retain=retain)


def test_policy_for_unknown_topic_raises() -> None:
    with pytest.raises(MessageError):
        policy_for("naila/devices/+/status")


def test_policy_table_is_read_only() -> None:
    with pytest.raises(TypeError):
        TOPIC_POLICY[TopicKind.DEVICE_EVENTS] = TopicPolicy(qos=2, retain=True)  # type: ignore[index]
