"""Command handling against a fake device and a fake publisher (no broker)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from device_agent.camera import Snapshot
from device_agent.commands import CommandFailed, CommandHandler
from device_agent.recorder import Clip
from shared.mqtt import CommandResponse, MediaUpload, OutboundMessage, decode, encode, topics
from shared.mqtt.commands import COMMANDS, build_command

pytestmark = pytest.mark.unit


class FakeDevice:
    def __init__(self, camera: bool = True) -> None:
        self.volume = 100
        self.muted = False
        self.restarts = 0
        self.camera = camera
        self.status_publishes = 0
        self.snapshot_args: tuple[int, tuple[int, int] | None] | None = None
        self.camera_on = True
        self.has_microphone = True
        self.record_args: tuple[str, float, str] | None = None
        self.listening_mode = "wake_word"

    def set_listening_mode(self, mode: str) -> None:
        self.listening_mode = mode

    def set_camera_enabled(self, enabled: bool) -> None:
        if not self.camera:
            raise CommandFailed("this device has no camera")
        self.camera_on = enabled

    def set_microphone_enabled(self, enabled: bool) -> None:
        self.muted = not enabled

    async def record(self, media_type: str, duration_s: float, fmt: str) -> Clip:
        self.record_args = (media_type, duration_s, fmt)
        if media_type == "video" and not self.camera_on:
            raise CommandFailed("the camera is off (privacy)")
        return Clip(b"OggS fake", media_type, fmt, round(duration_s * 1000), sample_rate=48_000)

    def set_volume(self, level: int) -> None:
        self.volume = level

    def set_mic_muted(self, muted: bool) -> None:
        self.muted = muted

    def restart_stream(self) -> None:
        self.restarts += 1

    async def snapshot(self, quality: int, size: tuple[int, int] | None) -> Snapshot | None:
        self.snapshot_args = (quality, size)
        return Snapshot(b"\xff\xd8fakejpeg\xff\xd9", *(size or (640, 480))) if self.camera else None

    async def publish_status(self) -> dict[str, Any]:
        self.status_publishes += 1
        return {"volume": self.volume, "muted": self.muted}


class FakePublisher:
    def __init__(self) -> None:
        self.sent: list[OutboundMessage] = []

    async def __call__(self, msg: OutboundMessage) -> None:
        self.sent.append(msg)

    def responses(self) -> list[CommandResponse]:
        return [decode(CommandResponse, m.payload) for m in self.sent if m.topic.endswith("/command/response")]


@pytest.fixture
def setup() -> tuple[CommandHandler, FakeDevice, FakePublisher]:
    dev, pub = FakeDevice(), FakePublisher()
    return CommandHandler("kitchen", dev, pub), dev, pub


def cmd(command: str, request_id: str = "req_1", **params: Any) -> bytes:
    return json.dumps({"command": command, "params": params, "request_id": request_id}).encode()


async def test_volume_sets_the_level_and_replies_with_the_request_id(setup: Any) -> None:
    handler, dev, pub = setup
    resp = await handler.on_command(cmd("volume", "req_42", level=35))
    assert resp.ok and resp.request_id == "req_42" and resp.result == {"volume": 35}
    assert dev.volume == 35 and dev.status_publishes == 1  # retained status follows the change
    (sent,) = pub.sent
    assert sent.topic == topics.device_command_response("kitchen") and sent.qos == 1 and not sent.retain
    assert decode(CommandResponse, sent.payload) == resp


@pytest.mark.parametrize(
    ("params", "why"),
    [({}, "missing"), ({"level": 101}, "0-100"), ({"level": "50"}, "int"), ({"level": True}, "int")],
)
async def test_bad_volume_is_an_error_reply(setup: Any, params: dict[str, Any], why: str) -> None:
    handler, dev, _pub = setup
    resp = await handler.on_command(cmd("volume", **params))
    assert not resp.ok and why in (resp.error or "") and dev.volume == 100
    assert handler.errors["failed"] == 1


async def test_mute_and_restart(setup: Any) -> None:
    handler, dev, _pub = setup
    assert (await handler.on_command(cmd("mute", muted=True))).result == {"muted": True}
    assert dev.muted
    assert (await handler.on_command(cmd("restart_stream"))).ok
    assert dev.restarts == 1
    assert handler.handled == {"mute": 1, "restart_stream": 1}


async def test_snapshot_publishes_a_media_upload_with_the_request_id(setup: Any) -> None:
    handler, dev, pub = setup
    resp = await handler.on_command(cmd("snapshot", "req_snap", quality=70, resolution="320x240"))
    assert resp.ok and resp.result["width"] == 320
    upload_msg = next(m for m in pub.sent if m.topic == topics.media_snapshot("kitchen"))
    upload = decode(MediaUpload, upload_msg.payload)
    assert upload.request_id == "req_snap" and upload.format == "jpeg" and upload.media_type == "image"
    assert upload.data.startswith(b"\xff\xd8") and (upload.width, upload.height) == (320, 240)
    assert dev.snapshot_args == (70, (320, 240))


async def test_snapshot_without_a_camera_is_an_error() -> None:
    pub = FakePublisher()
    handler = CommandHandler("kitchen", FakeDevice(camera=False), pub)
    resp = await handler.on_command(cmd("snapshot"))
    assert not resp.ok and "no camera" in (resp.error or "")


async def test_media_request_snapshot(setup: Any) -> None:
    handler, _dev, pub = setup
    req = {"request_type": "snapshot", "request_id": "req_456", "params": {"format": "jpeg", "quality": 85}}
    await handler.on_media_request(json.dumps(req).encode())
    (msg,) = pub.sent
    assert msg.topic == topics.media_snapshot("kitchen")
    assert decode(MediaUpload, msg.payload).request_id == "req_456"
    await handler.on_media_request(b"garbage")
    assert len(pub.sent) == 1 and handler.errors == {"malformed": 1}


async def test_a_recording_request_is_answered_with_a_clip_on_media_recording(setup: Any) -> None:
    handler, dev, pub = setup
    await handler.on_media_request(b'{"request_type": "recording", "request_id": "r2"}')
    (msg,) = pub.sent
    upload = decode(MediaUpload, msg.payload)
    assert msg.topic == topics.media_recording("kitchen") and upload.request_id == "r2"
    assert (upload.media_type, upload.format, upload.duration_ms, upload.sample_rate) == ("audio", "opus", 5000, 48_000)
    assert dev.record_args == ("audio", 5.0, "opus")  # the defaults of a bare request
    await handler.on_media_request(json.dumps({"request_type": "recording", "request_id": "r3",
                                               "params": {"media_type": "video", "duration_ms": 1500}}).encode())
    assert dev.record_args == ("video", 1.5, "webm") and handler.handled["recording"] == 2


async def test_a_recording_that_cannot_be_made_gets_an_error_result_with_its_request_id(setup: Any) -> None:
    handler, dev, pub = setup
    dev.camera_on = False
    bad = [
        ({"media_type": "video"}, "recording: the camera is off (privacy)"),
        ({"duration_ms": 10}, "duration_ms must be at least 100"),
        ({"duration_ms": "long"}, "must be int"),
    ]
    for n, (params, why) in enumerate(bad):
        req = {"request_type": "recording", "request_id": f"rec-{n}", "params": params}
        await handler.on_media_request(json.dumps(req).encode())
        resp = pub.responses()[-1]
        assert resp.request_id == f"rec-{n}" and not resp.ok and why in (resp.error or "")
    assert not [m for m in pub.sent if m.topic == topics.media_recording("kitchen")]
    assert handler.errors == {"failed": 3}


async def test_privacy_commands_switch_and_refresh_the_status(setup: Any) -> None:
    handler, dev, pub = setup
    resp = await handler.on_command(cmd("camera", "p1", enabled=False))
    assert resp.ok and resp.result == {"camera_enabled": False} and dev.camera_on is False
    resp = await handler.on_command(cmd("microphone", "p2", enabled=False))
    assert resp.ok and resp.result == {"microphone_enabled": False} and dev.muted is True
    assert dev.status_publishes == 2  # each change republished the retained status
    for params, why in [({}, "missing parameter 'enabled'"), ({"enabled": "off"}, "must be bool")]:
        resp = await handler.on_command(cmd("camera", "p3", **params))
        assert not resp.ok and resp.request_id == "p3" and why in (resp.error or "")
    no_cam = CommandHandler("kitchen", FakeDevice(camera=False), pub)
    resp = await no_cam.on_command(cmd("camera", "p4", enabled=True))
    assert not resp.ok and resp.error == "this device has no camera"


async def test_listening_mode_command_switches_the_mode_and_refreshes_the_status(setup: Any) -> None:
    handler, dev, pub = setup
    resp = await handler.on_command(cmd("listening_mode", "l1", mode="always"))
    assert resp.ok and resp.result == {"listening_mode": "always"} and dev.listening_mode == "always"
    assert dev.status_publishes == 1
    bad: list[tuple[dict[str, Any], str]] = [
        ({}, "missing parameter 'mode'"),
        ({"mode": "never"}, "input should be 'wake_word'"),
        ({"mode": "always", "loud": True}, "unknown parameter 'loud'"),
    ]
    for params, why in bad:
        resp = await handler.on_command(cmd("listening_mode", "l2", **params))
        assert not resp.ok and resp.request_id == "l2" and why in (resp.error or "")
    assert dev.listening_mode == "always" and handler.errors == {"failed": 3}
    plain = CommandHandler("kitchen", PlainDevice(), pub)
    resp = await plain.on_command(cmd("listening_mode", "l3", mode="always"))
    assert not resp.ok and resp.error == "this device cannot change its listening mode"


async def test_unknown_command_is_answered_and_counted(setup: Any) -> None:
    handler, _dev, _pub = setup
    resp = await handler.on_command(cmd("self_destruct", "req_x"))
    assert not resp.ok and resp.request_id == "req_x" and "unknown command" in (resp.error or "")
    assert handler.errors == {"unknown": 1}


@pytest.mark.parametrize(
    ("payload", "request_id"),
    [
        (b"{not json", "unknown"),
        (b"", "unknown"),
        (b'{"command": "volume", "request_id": "req_7", "params": "loud"}', "req_7"),
        (b'{"params": {}, "request_id": "req_8"}', "req_8"),
        (b'{"command": "volume", "request_id": "bad id with spaces"}', "unknown"),
        (b"[1, 2, 3]", "unknown"),
        (b"\xff\xfe\x00", "unknown"),
    ],
)
async def test_malformed_command_gets_an_error_reply_never_a_crash(
    setup: Any, payload: bytes, request_id: str
) -> None:
    handler, _dev, pub = setup
    resp = await handler.on_command(payload)
    assert not resp.ok and resp.request_id == request_id and "malformed" in (resp.error or "")
    assert pub.responses() == [resp]
    assert handler.errors["malformed"] == 1


async def test_a_crashing_device_still_gets_a_reply() -> None:
    class Broken(FakeDevice):
        def restart_stream(self) -> None:
            raise RuntimeError("kaput")

    pub = FakePublisher()
    handler = CommandHandler("kitchen", Broken(), pub)
    resp = await handler.on_command(cmd("restart_stream"))
    assert not resp.ok and "internal error" in (resp.error or "") and handler.errors["internal"] == 1


async def test_publish_failure_is_counted_not_raised() -> None:
    async def failing(msg: OutboundMessage) -> None:
        raise ConnectionError("broker gone")

    handler = CommandHandler("kitchen", FakeDevice(), failing)
    resp = await handler.on_command(cmd("restart_stream"))
    assert resp.ok and handler.errors["publish"] == 1



class PlainDevice:
    """A DeviceControl without the privacy switches or a recorder (older implementations, benches)."""

    def set_volume(self, level: int) -> None: ...

    def set_mic_muted(self, muted: bool) -> None: ...

    def restart_stream(self) -> None: ...

    async def snapshot(self, quality: int, size: tuple[int, int] | None) -> Snapshot | None:
        return None

    async def publish_status(self) -> dict[str, Any]:
        return {}


async def test_a_device_without_switches_or_recorder_says_so() -> None:
    pub = FakePublisher()
    handler = CommandHandler("kitchen", PlainDevice(), pub)
    resp = await handler.on_command(cmd("camera", "c1", enabled=False))
    assert not resp.ok and resp.error == "this device has no camera"
    await handler.on_media_request(b'{"request_type": "recording", "request_id": "r9"}')
    assert pub.responses()[-1].error == "recording: this device has no recorder"


async def test_every_command_of_the_table_has_a_handler(setup: Any) -> None:
    handler, _dev, _pub = setup
    switch: dict[str, Any] = {"enabled": True}
    needs: dict[str, dict[str, Any]] = {
        "volume": {"level": 5},
        "mute": {"muted": False},
        "camera": switch,
        "microphone": switch,
        "listening_mode": {"mode": "push_to_talk"},
    }
    for name in COMMANDS:
        resp = await handler.on_command(encode(build_command(name, request_id=f"t-{name}", **needs.get(name, {}))))
        assert resp.ok, (name, resp.error)
        assert "unknown command" not in (resp.error or ""), name
    assert handler.errors["unknown"] == 0
