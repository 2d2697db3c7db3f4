"""What the device does with MQTT commands and media requests (no broker here: a publisher is injected).

Commands (``naila/devices/{id}/command``, reply on ``.../command/response`` with the request_id):
the vocabulary, its params and results are the table in shared/mqtt/commands.py; this handler has
one method per entry (``_handlers``), and a name missing from its dict gets the error reply
``unknown command 'x'``.

The privacy switches (``camera``, ``microphone``) and the ``listening_mode`` show in the retained
status (``camera_enabled``, ``microphone_enabled``, ``listening_mode``) and are kept across
reconnects (and restarts with ``DEVICE_STATE_FILE``).

Media requests (``.../media/request``): ``snapshot`` as the command; ``recording`` with
``{"media_type": "audio"|"video", "duration_ms": 100-DEVICE_RECORDING_MAX_S, "format": "opus"|"wav"|"webm"}``
(:class:`~shared.mqtt.commands.RecordingParams`; defaults: audio if the device has a microphone,
5000 ms, opus / webm) publishes a
:class:`MediaUpload` on ``media/recording`` (spec §8.6). A media request that cannot be served
is answered on ``.../command/response`` with its request_id, ``ok: false`` and the reason.

Every payload is untrusted: a malformed or unknown command gets an error reply (request_id
recovered from the raw JSON when possible, else ``"unknown"``), a log line and a counter, and
never raises.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar, runtime_checkable

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
from shared.mqtt.commands import (
    CameraResult,
    CommandParams,
    CommandResult,
    ListeningModeParams,
    ListeningModeResult,
    MicrophoneResult,
    MuteParams,
    MuteResult,
    NoParams,
    RecordingParams,
    SnapshotParams,
    SnapshotResult,
    SwitchParams,
    VolumeParams,
    VolumeResult,
    parse_params,
    validate_params,
)
from shared.mqtt.recover import recover_id

log = logging.getLogger(__name__)

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


@runtime_checkable
class ListeningControl(Protocol):
    """A device whose listening mode can be changed (the agent)."""

    def set_listening_mode(self, mode: str) -> None:
        """Keep ``mode`` (wake_word, always, push_to_talk) and show it in the status."""
        ...


class CommandFailed(Exception):
    """A command was understood but cannot be done (becomes an error reply)."""


class UnknownCommand(CommandFailed):
    """The command name is not one this device knows."""


P = TypeVar("P", bound=CommandParams)


def _params(cmd: Command, model: type[P]) -> P:
    """The command's params as its table model; bad params are the sender's fault: an error reply."""
    try:
        return parse_params(cmd, model)
    except MessageError as exc:
        raise CommandFailed(str(exc)) from None


def _validate(model: type[P], params: dict[str, Any]) -> P:
    """A media request's params as ``model``; CommandFailed (an error reply) when they do not fit."""
    try:
        validated: P = validate_params(model, params)
    except MessageError as exc:
        raise CommandFailed(str(exc)) from None
    return validated


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
        # One handler per entry of shared/mqtt/commands.py's table (a test checks they match).
        self._handlers: dict[str, Callable[[Command], Awaitable[dict[str, Any]]]] = {
            "volume": self._volume,
            "mute": self._mute,
            "restart_stream": self._restart_stream,
            "snapshot": self._snapshot_command,
            "status": self._status,
            "camera": self._camera,
            "microphone": self._microphone,
            "listening_mode": self._listening_mode,
        }

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
        handler = self._handlers.get(cmd.command)
        if handler is None:
            raise UnknownCommand(f"unknown command {cmd.command!r}")
        return await handler(cmd)

    @staticmethod
    def _result(result: CommandResult) -> dict[str, Any]:
        return result.model_dump(mode="json")

    async def _volume(self, cmd: Command) -> dict[str, Any]:
        level = _params(cmd, VolumeParams).level
        self.control.set_volume(level)
        await self._refresh_status()
        return self._result(VolumeResult(volume=level))

    async def _mute(self, cmd: Command) -> dict[str, Any]:
        muted = _params(cmd, MuteParams).muted
        self.control.set_mic_muted(muted)
        await self._refresh_status()
        return self._result(MuteResult(muted=muted))

    async def _restart_stream(self, cmd: Command) -> dict[str, Any]:
        _params(cmd, NoParams)  # {} only: a stray parameter is refused, as for every command
        self.control.restart_stream()
        return {}

    async def _snapshot_command(self, cmd: Command) -> dict[str, Any]:
        return await self._snapshot(cmd.request_id, _params(cmd, SnapshotParams))

    async def _status(self, cmd: Command) -> dict[str, Any]:
        _params(cmd, NoParams)
        return await self.control.publish_status()

    async def _camera(self, cmd: Command) -> dict[str, Any]:
        enabled = _params(cmd, SwitchParams).enabled
        self._media("camera").set_camera_enabled(enabled)
        await self._refresh_status()
        return self._result(CameraResult(camera_enabled=enabled))

    async def _microphone(self, cmd: Command) -> dict[str, Any]:
        enabled = _params(cmd, SwitchParams).enabled
        self._media("microphone").set_microphone_enabled(enabled)
        await self._refresh_status()
        return self._result(MicrophoneResult(microphone_enabled=enabled))

    async def _listening_mode(self, cmd: Command) -> dict[str, Any]:
        mode = _params(cmd, ListeningModeParams).mode
        if not isinstance(self.control, ListeningControl):
            raise CommandFailed("this device cannot change its listening mode")
        self.control.set_listening_mode(mode)
        await self._refresh_status()
        return self._result(ListeningModeResult(listening_mode=mode))

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
                await self._snapshot(req.request_id, _validate(SnapshotParams, req.params))
            else:
                await self._recording(req.request_id, _validate(RecordingParams, req.params))
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

    async def _recording(self, request_id: str, params: RecordingParams) -> None:
        control = self._media("recorder")
        media_type = params.media_type or ("audio" if control.has_microphone else "video")
        fmt = (params.format or ("opus" if media_type == "audio" else "webm")).lower()
        clip = await control.record(media_type, params.duration_ms / 1000, fmt)
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

    async def _snapshot(self, request_id: str, params: SnapshotParams) -> dict[str, Any]:
        snap = await self.control.snapshot(params.quality, params.size)
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
        result = SnapshotResult(topic=self.snapshot_topic, bytes=len(snap.jpeg), width=snap.width, height=snap.height)
        return self._result(result)

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
