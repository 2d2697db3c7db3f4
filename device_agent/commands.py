"""What the device does with MQTT commands and media requests (no broker here: a publisher is injected).

Commands (``naila/devices/{id}/command``, reply on ``.../command/response`` with the request_id):

============== ===================================== ==========================================
command        params                                effect / result
============== ===================================== ==========================================
volume         ``{"level": 0-100}``                  speaker volume; ``{"volume": level}``
mute           ``{"muted": bool}``                   microphone mute (privacy); ``{"muted": b}``
restart_stream ``{}``                                redial the hub now
snapshot       ``{"quality": 1-100,                  JPEG published on ``media/snapshot`` as a
                 "resolution": "WxH"}`` (optional)   MediaUpload with the same request_id
status         ``{}``                                republish the retained status; its fields
camera         ``{"enabled": bool}``                 privacy switch: off closes the camera, the
                                                     stream carries black frames; ``{"camera_enabled": b}``
microphone     ``{"enabled": bool}``                 privacy switch (same as ``mute`` inverted);
                                                     ``{"microphone_enabled": b}``
============== ===================================== ==========================================

Both switches show in the retained status (``camera_enabled``, ``microphone_enabled``) and are
kept across reconnects (and restarts with ``DEVICE_STATE_FILE``).

Media requests (``.../media/request``): ``snapshot`` as above; ``recording`` with
``{"media_type": "audio"|"video", "duration_ms": 100-DEVICE_RECORDING_MAX_S, "format": "opus"|"wav"|"webm"}``
(defaults: audio if the device has a microphone, 5000 ms, opus / webm) publishes a
:class:`MediaUpload` on ``media/recording`` (spec §8.6). A media request that cannot be served
is answered on ``.../command/response`` with its request_id, ``ok: false`` and the reason.

Every payload is untrusted: a malformed or unknown command gets an error reply (request_id
recovered from the raw JSON when possible, else ``"unknown"``), a log line and a counter, and
never raises.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, runtime_checkable

from device_agent.camera import Snapshot
from device_agent.recorder import Clip
from shared.mqtt import (
    Command,
    CommandResponse,
    MediaRequest,
    MediaUpload,
    MessageError,
    OutboundMessage,
    Payload,
    build,
    decode,
    outbound,
    topics,
)
from shared.mqtt.recover import recover_id

log = logging.getLogger(__name__)

_RESOLUTION = re.compile(r"^(\d{2,5})x(\d{2,5})$")

Publisher = Callable[[OutboundMessage], Awaitable[None]]


class DeviceControl(Protocol):
    """The agent as seen by commands."""

    def set_volume(self, level: int) -> None: ...

    def set_mic_muted(self, muted: bool) -> None: ...

    def restart_stream(self) -> None: ...

    async def snapshot(self, quality: int, size: tuple[int, int] | None) -> Snapshot | None:
        """A JPEG from the camera, or None when the device has none."""
        ...

    async def publish_status(self) -> dict[str, Any]:
        """Republish the retained status; returns its fields."""
        ...


@runtime_checkable
class MediaControl(DeviceControl, Protocol):
    """A device that also has the privacy switches and makes clips (the agent; issue 22)."""

    @property
    def has_microphone(self) -> bool: ...

    def set_camera_enabled(self, enabled: bool) -> None:
        """The camera privacy switch; raises CommandFailed when there is no camera."""
        ...

    def set_microphone_enabled(self, enabled: bool) -> None:
        """The microphone privacy switch; raises CommandFailed when there is no microphone."""
        ...

    async def record(self, media_type: str, duration_s: float, fmt: str) -> Clip:
        """A clip of the microphone or camera; raises CommandFailed when it cannot be made."""
        ...


class CommandFailed(Exception):
    """A command was understood but cannot be done (becomes an error reply)."""


class UnknownCommand(CommandFailed):
    """The command name is not one this device knows."""


def _param(params: dict[str, Any], name: str, kind: type, default: Any = ...) -> Any:
    if name not in params:
        if default is ...:
            raise CommandFailed(f"missing parameter {name!r}")
        return default
    value = params[name]
    # bool is an int in Python: do not accept true as a volume level.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise CommandFailed(f"parameter {name!r} must be {kind.__name__}, got {type(value).__name__}")
    return value


def _recover_request_id(payload: Payload) -> str:
    """Best effort: the request_id of a payload that failed validation, so the sender can match the error."""
    return recover_id(payload, "request_id") or "unknown"


class CommandHandler:
    """Decodes commands / media requests, acts on a :class:`DeviceControl`, publishes replies."""

    def __init__(self, device_id: str, control: DeviceControl, publish: Publisher) -> None:
        self.device_id = device_id
        self.control = control
        self.publish = publish
        self.response_topic = topics.device_command_response(device_id)
        self.snapshot_topic = topics.media_snapshot(device_id)
        self.recording_topic = topics.media_recording(device_id)
        self.handled: Counter[str] = Counter()  # command name -> successful runs
        self.errors: Counter[str] = Counter()  # reason -> count ("malformed", "unknown", "failed", ...)

    async def on_command(self, payload: Payload) -> CommandResponse:
        try:
            cmd = decode(Command, payload)
        except MessageError as exc:
            self.errors["malformed"] += 1
            log.warning("malformed command dropped: %s", exc)
            return await self._reply(_recover_request_id(payload), error=f"malformed command: {exc}")
        log.info("command %s (request %s) params=%s", cmd.command, cmd.request_id, cmd.params)
        try:
            result = await self._run(cmd)
        except UnknownCommand as exc:
            self.errors["unknown"] += 1
            log.warning("unknown command %r (request %s)", cmd.command, cmd.request_id)
            return await self._reply(cmd.request_id, error=str(exc))
        except CommandFailed as exc:
            self.errors["failed"] += 1
            log.warning("command %s (request %s) failed: %s", cmd.command, cmd.request_id, exc)
            return await self._reply(cmd.request_id, error=str(exc))
        except Exception as exc:  # a bug or a device error: reply, log, keep running
            self.errors["internal"] += 1
            log.exception("command %s (request %s) crashed", cmd.command, cmd.request_id)
            return await self._reply(cmd.request_id, error=f"internal error: {type(exc).__name__}")
        self.handled[cmd.command] += 1
        return await self._reply(cmd.request_id, result=result)

    async def _run(self, cmd: Command) -> dict[str, Any]:
        p = dict(cmd.params)
        if cmd.command == "volume":
            level = _param(p, "level", int)
            if not 0 <= level <= 100:
                raise CommandFailed(f"volume level must be 0-100, got {level}")
            self.control.set_volume(level)
            await self._refresh_status()
            return {"volume": level}
        if cmd.command == "mute":
            muted = _param(p, "muted", bool)
            self.control.set_mic_muted(muted)
            await self._refresh_status()
            return {"muted": muted}
        if cmd.command == "restart_stream":
            self.control.restart_stream()
            return {}
        if cmd.command == "snapshot":
            return await self._snapshot(cmd.request_id, p)
        if cmd.command == "status":
            return await self.control.publish_status()
        if cmd.command == "camera":
            enabled = _param(p, "enabled", bool)
            self._media("camera").set_camera_enabled(enabled)
            await self._refresh_status()
            return {"camera_enabled": enabled}
        if cmd.command == "microphone":
            enabled = _param(p, "enabled", bool)
            self._media("microphone").set_microphone_enabled(enabled)
            await self._refresh_status()
            return {"microphone_enabled": enabled}
        raise UnknownCommand(f"unknown command {cmd.command!r}")

    async def _refresh_status(self) -> None:
        """Keep the retained status (volume, muted) in step with a change; best effort."""
        try:
            await self.control.publish_status()
        except Exception as exc:
            log.warning("could not republish the status: %s", exc)

    async def on_media_request(self, payload: Payload) -> None:
        try:
            req = decode(MediaRequest, payload)
        except MessageError as exc:
            self.errors["malformed"] += 1
            log.warning("malformed media request dropped: %s", exc)
            return
        try:
            if req.request_type == "snapshot":
                await self._snapshot(req.request_id, dict(req.params))
            else:
                await self._recording(req.request_id, dict(req.params))
            self.handled[req.request_type] += 1
            return
        except CommandFailed as exc:
            self.errors["failed"] += 1
            log.warning("media request %s (%s) failed: %s", req.request_id, req.request_type, exc)
            error = f"{req.request_type}: {exc}"
        except Exception as exc:
            self.errors["internal"] += 1
            log.exception("media request %s crashed", req.request_id)
            error = f"{req.request_type}: internal error: {type(exc).__name__}"
        # The requester waits for the media topic: tell it why nothing will come, instead of a timeout.
        await self._reply(req.request_id, error=error)

    def _media(self, what: str) -> MediaControl:
        if not isinstance(self.control, MediaControl):
            raise CommandFailed(f"this device has no {what}")
        return self.control

    async def _recording(self, request_id: str, params: dict[str, Any]) -> None:
        control = self._media("recorder")
        media_type = _param(params, "media_type", str, "")
        if not media_type:
            media_type = "audio" if control.has_microphone else "video"
        duration_ms = _param(params, "duration_ms", int, 5000)
        if duration_ms < 100:
            raise CommandFailed(f"duration_ms must be at least 100, got {duration_ms}")
        fmt = _param(params, "format", str, "opus" if media_type == "audio" else "webm").lower()
        clip = await control.record(media_type, duration_ms / 1000, fmt)
        upload = build(
            MediaUpload,
            request_id=request_id,
            media_type=clip.media_type,
            format=clip.format,
            data=clip.data,
            duration_ms=clip.duration_ms,
            sample_rate=clip.sample_rate,
            width=clip.width,
            height=clip.height,
        )
        await self.publish(outbound(self.recording_topic, upload))
        log.info("%s recording %s, %d ms (%d bytes) published for request %s", clip.media_type, clip.format,
                 clip.duration_ms, len(clip.data), request_id)

    async def _snapshot(self, request_id: str, params: dict[str, Any]) -> dict[str, Any]:
        quality = _param(params, "quality", int, 85)
        if not 1 <= quality <= 100:
            raise CommandFailed(f"quality must be 1-100, got {quality}")
        fmt = _param(params, "format", str, "jpeg")
        if fmt.lower() not in ("jpeg", "jpg"):
            raise CommandFailed(f"only jpeg snapshots are supported, not {fmt!r}")
        size = None
        resolution = _param(params, "resolution", str, "")
        if resolution:
            m = _RESOLUTION.match(resolution)
            if m is None:
                raise CommandFailed(f"resolution must look like 640x480, got {resolution!r}")
            size = (int(m.group(1)), int(m.group(2)))
            if not (16 <= size[0] <= 4096 and 16 <= size[1] <= 4096):
                raise CommandFailed(f"resolution {resolution} is out of range")
        snap = await self.control.snapshot(quality, size)
        if snap is None:
            raise CommandFailed("this device has no camera")
        upload = build(
            MediaUpload,
            request_id=request_id,
            media_type="image",
            format="jpeg",
            data=snap.jpeg,
            width=snap.width,
            height=snap.height,
        )
        await self.publish(outbound(self.snapshot_topic, upload))
        self.handled["snapshot_upload"] += 1
        log.info("snapshot %dx%d (%d bytes) published for request %s", snap.width, snap.height,
                 len(snap.jpeg), request_id)
        return {"topic": self.snapshot_topic, "bytes": len(snap.jpeg), "width": snap.width, "height": snap.height}

    async def _reply(
        self, request_id: str, *, result: dict[str, Any] | None = None, error: str | None = None
    ) -> CommandResponse:
        if error is not None:
            response = build(CommandResponse, request_id=request_id, ok=False, error=error[:1000])
        else:
            response = build(CommandResponse, request_id=request_id, ok=True, result=result or {})
        try:
            await self.publish(outbound(self.response_topic, response))
        except Exception:
            self.errors["publish"] += 1
            log.exception("could not publish the reply to request %s", request_id)
        return response
