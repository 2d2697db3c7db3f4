"""The device command table (shared/mqtt/commands.py): params round-trip, bad params, wire bytes."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.mqtt import Command, MessageError, build, decode, encode
from shared.mqtt.commands import (
    COMMANDS,
    CommandParams,
    ListeningModeParams,
    MuteParams,
    NoParams,
    RecordingParams,
    SnapshotParams,
    SwitchParams,
    VolumeParams,
    build_command,
    command_from,
    parse_params,
    parse_result,
    validate_params,
)

pytestmark = pytest.mark.unit

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

sides = st.integers(min_value=16, max_value=4096)
resolutions = st.just("") | st.builds(lambda w, h: f"{w}x{h}", sides, sides)


def some_of(model: type[CommandParams], **fields: st.SearchStrategy[Any]) -> st.SearchStrategy[CommandParams]:
    """``model`` with any subset of the optional ``fields`` given (what a sender may leave out)."""
    return st.fixed_dictionaries({}, optional=fields).map(lambda given: model(**given))


#: A strategy per params model of the table (and the media request models).
PARAMS: dict[type[CommandParams], st.SearchStrategy[CommandParams]] = {
    NoParams: st.just(NoParams()),
    VolumeParams: st.builds(VolumeParams, level=st.integers(min_value=0, max_value=100)),
    MuteParams: st.builds(MuteParams, muted=st.booleans()),
    SwitchParams: st.builds(SwitchParams, enabled=st.booleans()),
    ListeningModeParams: st.builds(ListeningModeParams, mode=st.sampled_from(["wake_word", "always", "push_to_talk"])),
    SnapshotParams: some_of(
        SnapshotParams,
        quality=st.integers(min_value=1, max_value=100),
        resolution=resolutions,
        format=st.sampled_from(["jpeg", "jpg", "JPEG"]),
    ),
    RecordingParams: some_of(
        RecordingParams,
        media_type=st.sampled_from(["", "audio", "video"]),
        duration_ms=st.integers(min_value=100, max_value=10**7),
        format=st.sampled_from(["", "opus", "wav", "webm"]),
    ),
}


COMMAND_NAMES = ("volume", "mute", "restart_stream", "snapshot", "status", "camera", "microphone", "listening_mode")


def test_every_command_has_a_params_strategy() -> None:
    assert {spec.params for spec in COMMANDS.values()} <= set(PARAMS)
    assert set(COMMANDS) == set(COMMAND_NAMES)


@pytest.mark.parametrize("name", list(COMMANDS))
@SETTINGS
@given(data=st.data())
def test_params_round_trip_through_the_wire(name: str, data: st.DataObject) -> None:
    params = data.draw(PARAMS[COMMANDS[name].params])
    given_fields = params.model_dump(exclude_unset=True)
    sent = build_command(name, request_id="req_1", **given_fields)
    assert sent.params == given_fields  # only what the sender gave goes on the wire
    received = decode(Command, encode(sent))
    assert received == sent and parse_params(received) == params
    assert parse_params(received, COMMANDS[name].params) == params


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("volume", {"level": 30}),
        ("mute", {"muted": True}),
        ("restart_stream", {}),
        ("snapshot", {"quality": 70, "resolution": "320x240"}),
        ("status", {}),
        ("camera", {"enabled": False}),
        ("microphone", {"enabled": True}),
        ("listening_mode", {"mode": "always"}),
    ],
)
def test_the_wire_bytes_are_those_of_the_untyped_command(name: str, params: dict[str, Any]) -> None:
    before = build(Command, command=name, params=dict(params), request_id="req_9")
    assert encode(build_command(name, request_id="req_9", **params)) == encode(before)
    assert encode(command_from(name, params, request_id="req_9")) == encode(before)


@pytest.mark.parametrize(
    ("name", "params", "field", "says"),
    [
        ("volume", {}, "level", "volume: missing parameter 'level'"),
        ("volume", {"level": 101}, "level", "volume: level must be 0-100, got 101"),
        ("volume", {"level": "50"}, "level", "volume: parameter 'level' must be int, got str"),
        ("volume", {"level": True}, "level", "volume: parameter 'level' must be int, got bool"),
        ("volume", {"level": 50.0}, "level", "volume: parameter 'level' must be int, got float"),
        ("mute", {"muted": "yes"}, "muted", "mute: parameter 'muted' must be bool (true or false), got str"),
        ("camera", {"enabled": True, "colour": "red"}, "colour", "camera: unknown parameter 'colour'"),
        ("restart_stream", {"now": True}, "now", "restart_stream: unknown parameter 'now'"),
        ("snapshot", {"quality": 0}, "quality", "snapshot: quality must be 1-100, got 0"),
        ("snapshot", {"resolution": "big"}, "resolution", "snapshot: resolution must look like 640x480, got 'big'"),
        ("snapshot", {"resolution": "8x8000"}, "resolution", "snapshot: resolution must look like 640x480"),
        ("snapshot", {"resolution": "10x480"}, "resolution", "snapshot: resolution 10x480 is out of range"),
        ("snapshot", {"format": "png"}, "format", "snapshot: only jpeg snapshots are supported, not 'png'"),
        ("listening_mode", {}, "mode", "listening_mode: missing parameter 'mode'"),
        ("listening_mode", {"mode": "whenever"}, "mode", "listening_mode: parameter 'mode': input should be 'wake_"),
        ("listening_mode", {"mode": 1}, "mode", "listening_mode: parameter 'mode': input should be"),
        ("dance", {}, "command", "unknown command 'dance'"),
    ],
)
def test_bad_params_are_a_one_line_error_naming_the_field(
    name: str, params: dict[str, Any], field: str, says: str
) -> None:
    with pytest.raises(MessageError) as sender_side:
        command_from(name, params)
    assert str(sender_side.value).startswith(says) and sender_side.value.field == field
    assert "\n" not in str(sender_side.value)
    # The device reads the same: a command that skipped the sender's check is refused alike.
    with pytest.raises(MessageError) as device_side:
        parse_params(build(Command, command=name, params=params, request_id="r"))
    assert str(device_side.value) == str(sender_side.value)


def test_several_problems_are_counted_in_the_one_line() -> None:
    with pytest.raises(MessageError, match=r"^snapshot: .* \(and 2 more problems\)$"):
        command_from("snapshot", {"quality": "hi", "format": 1, "extra": None})


def test_media_request_params_have_no_command_prefix() -> None:
    with pytest.raises(MessageError, match=r"^duration_ms must be at least 100, got 10$"):
        validate_params(RecordingParams, {"duration_ms": 10})
    assert validate_params(RecordingParams, {}) == RecordingParams()
    assert validate_params(SnapshotParams, {"resolution": "1280x720"}).size == (1280, 720)
    assert SnapshotParams().size is None


def test_asking_for_another_model_than_the_tables_is_a_bug() -> None:
    with pytest.raises(TypeError, match="VolumeParams"):
        parse_params(build_command("mute", muted=True), VolumeParams)


def test_results_are_read_with_the_tables_models() -> None:
    assert parse_result("volume", {"volume": 30}) == COMMANDS["volume"].result(volume=30)
    assert parse_result("camera", {"camera_enabled": False, "newer_field": 1}).model_dump() == {"camera_enabled": False}
    assert parse_result("listening_mode", {"listening_mode": "always"}).model_dump() == {"listening_mode": "always"}
    status = parse_result("status", {"device_id": "pi", "online": True})
    assert status.model_dump() == {"device_id": "pi", "online": True}  # the device's status fields, as sent
    with pytest.raises(MessageError, match=r"^snapshot result: missing parameter 'bytes'"):
        parse_result("snapshot", {"topic": "t", "width": 1, "height": 1})


def test_a_request_id_is_made_when_none_is_given() -> None:
    first, second = build_command("status"), build_command("status")
    assert first.request_id != second.request_id
    assert json.loads(encode(first))["params"] == {}
