"""The device command vocabulary: each command's name, typed params and result, in one table.

Commands travel as a :class:`~shared.mqtt.models.Command` on ``naila/devices/{id}/command``; the
device replies on ``.../command/response`` with the request_id (a
:class:`~shared.mqtt.models.CommandResponse` whose ``result`` holds the fields below).

============== ===================================== ==========================================
command        params                                effect / result
============== ===================================== ==========================================
volume         ``{"level": 0-100}``                  speaker volume; ``{"volume": level}``
mute           ``{"muted": bool}``                   microphone mute (privacy); ``{"muted": b}``
restart_stream ``{}``                                redial the hub now; ``{}``
snapshot       ``{"quality": 1-100,                  JPEG published on ``media/snapshot`` as a
                 "resolution": "WxH",                MediaUpload with the same request_id;
                 "format": "jpeg"}`` (all optional)  ``{"topic", "bytes", "width", "height"}``
status         ``{}``                                republish the retained status; its fields
camera         ``{"enabled": bool}``                 privacy switch: off closes the camera, the
                                                     stream carries black frames; ``{"camera_enabled": b}``
microphone     ``{"enabled": bool}``                 privacy switch (same as ``mute`` inverted);
                                                     ``{"microphone_enabled": b}``
listening_mode ``{"mode": "wake_word"|"always"|      what starts a turn; kept, shown in the
                 "push_to_talk"}``                   status; ``{"listening_mode": mode}``
============== ===================================== ==========================================

The media request ``recording`` (``.../media/request``) has its params here too
(:class:`RecordingParams`); ``snapshot`` media requests take :class:`SnapshotParams`.

Why a table: senders (the AI server, the hub's dashboard) build commands with
:func:`build_command`, which refuses a wrong name or params before anything is published, and the
device reads them with :func:`parse_params`; both use the same models, so the vocabulary cannot
drift. Params are strict (``"50"`` is not a level, ``true`` is not a number) and closed (an unknown
parameter is an error). The wire stays as before: the same ``Command`` envelope, and ``params``
holds exactly the fields the sender gave (defaults are applied by the reader, not sent).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Annotated, Any, Final, Literal, TypeVar, overload

from annotated_types import Ge, Le
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import ErrorDetails

from shared.mqtt.codec import build
from shared.mqtt.errors import MessageError
from shared.mqtt.fields import new_request_id
from shared.mqtt.models import Command

_RESOLUTION = re.compile(r"^(\d{2,5})x(\d{2,5})$")
_MIN_SIDE, _MAX_SIDE = 16, 4096


class CommandParams(BaseModel):
    """Base of every params model: strict types, no unknown parameters, immutable."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class CommandResult(BaseModel):
    """Base of every result model: lenient about extra fields, so a newer device can add some."""

    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)


# --- params ----------------------------------------------------------------------------------


class NoParams(CommandParams):
    """``{}``."""


class VolumeParams(CommandParams):
    level: Annotated[int, Field(ge=0, le=100)]


class MuteParams(CommandParams):
    muted: bool


class SwitchParams(CommandParams):
    """A privacy switch (``camera``, ``microphone``)."""

    enabled: bool


ListeningMode = Literal["wake_word", "always", "push_to_talk"]


class ListeningModeParams(CommandParams):
    """What starts a turn on the device (the hub's listening modes, issue 19)."""

    mode: ListeningMode


class SnapshotParams(CommandParams):
    """A snapshot command or media request (spec §8.5); an empty ``resolution`` keeps the camera's."""

    quality: Annotated[int, Field(ge=1, le=100)] = 85
    resolution: str = ""
    format: str = "jpeg"

    @field_validator("resolution")
    @classmethod
    def _resolution(cls, value: str) -> str:
        if not value:
            return value
        m = _RESOLUTION.match(value)
        if m is None:
            raise ValueError(f"resolution must look like 640x480, got {value!r}")
        if not all(_MIN_SIDE <= int(side) <= _MAX_SIDE for side in m.groups()):
            raise ValueError(f"resolution {value} is out of range")
        return value

    @field_validator("format")
    @classmethod
    def _jpeg_only(cls, value: str) -> str:
        if value.lower() not in ("jpeg", "jpg"):
            raise ValueError(f"only jpeg snapshots are supported, not {value!r}")
        return value

    @property
    def size(self) -> tuple[int, int] | None:
        """(width, height) asked for, or None for the camera's own size."""
        m = _RESOLUTION.match(self.resolution)
        return (int(m.group(1)), int(m.group(2))) if m else None


class RecordingParams(CommandParams):
    """A recording media request (spec §8.6); empty ``media_type`` / ``format`` let the device choose.

    The upper bound of ``duration_ms`` is the device's (DEVICE_RECORDING_MAX_S).
    """

    media_type: Literal["", "audio", "video"] = ""
    duration_ms: Annotated[int, Field(ge=100)] = 5000
    format: str = ""


# --- results ---------------------------------------------------------------------------------


class EmptyResult(CommandResult):
    """``{}``."""


class VolumeResult(CommandResult):
    volume: int


class MuteResult(CommandResult):
    muted: bool


class SnapshotResult(CommandResult):
    """Where the JPEG went and how big it is."""

    topic: str
    bytes: int
    width: int
    height: int


class StatusResult(CommandResult):
    """The device's retained status fields (a :class:`~shared.mqtt.models.DeviceStatus` as JSON)."""

    model_config = ConfigDict(strict=True, extra="allow", frozen=True)


class CameraResult(CommandResult):
    camera_enabled: bool


class MicrophoneResult(CommandResult):
    microphone_enabled: bool


class ListeningModeResult(CommandResult):
    listening_mode: str


# --- the table -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CommandSpec:
    """One command: its name on the wire, what it takes, what it answers and what it does."""

    name: str
    params: type[CommandParams]
    result: type[CommandResult]
    effect: str


COMMANDS: Final[Mapping[str, CommandSpec]] = MappingProxyType(
    {
        spec.name: spec
        for spec in (
            CommandSpec("volume", VolumeParams, VolumeResult, "set the speaker volume"),
            CommandSpec("mute", MuteParams, MuteResult, "mute or unmute the microphone (privacy)"),
            CommandSpec("restart_stream", NoParams, EmptyResult, "redial the hub now"),
            CommandSpec("snapshot", SnapshotParams, SnapshotResult, "publish a JPEG on media/snapshot"),
            CommandSpec("status", NoParams, StatusResult, "republish the retained status"),
            CommandSpec("camera", SwitchParams, CameraResult, "camera privacy switch (off: black frames)"),
            CommandSpec("microphone", SwitchParams, MicrophoneResult, "microphone privacy switch"),
            CommandSpec("listening_mode", ListeningModeParams, ListeningModeResult, "what starts a turn (kept)"),
        )
    }
)

P = TypeVar("P", bound=CommandParams)
R = TypeVar("R", bound=CommandResult)


def spec_for(name: str) -> CommandSpec:
    """The table entry of ``name``; :class:`MessageError` for a command no device knows."""
    spec = COMMANDS.get(name)
    if spec is None:
        raise MessageError(f"unknown command {name[:64]!r}", field="command")
    return spec


def build_command(name: str, /, *, request_id: str | None = None, **params: Any) -> Command:
    """The :class:`Command` for ``name`` with ``params``, checked against the table.

    Raises :class:`MessageError` (one line naming the command and the parameter) for an unknown
    command or bad params. ``request_id`` defaults to a fresh one.
    """
    return command_from(name, params, request_id=request_id)


def command_from(name: str, params: Mapping[str, Any], *, request_id: str | None = None) -> Command:
    """:func:`build_command` for params already in a dict (a caller's JSON); the same checks."""
    spec = spec_for(name)
    checked = validate_params(spec, params)
    # Only what the caller gave goes on the wire (as before): defaults belong to the device.
    wire = checked.model_dump(mode="json", exclude_unset=True)
    return build(Command, command=name, params=wire, request_id=request_id or new_request_id())


@overload
def parse_params(cmd: Command) -> CommandParams: ...


@overload
def parse_params(cmd: Command, model: type[P]) -> P: ...


def parse_params(cmd: Command, model: type[CommandParams] | None = None) -> CommandParams:
    """A received command's params as its table model; :class:`MessageError` when they do not fit.

    ``model`` (the handler's expected type) narrows the result for the type checker; asking for
    another model than the table's is a bug (TypeError).
    """
    spec = spec_for(cmd.command)
    if model is not None and model is not spec.params:
        raise TypeError(f"{cmd.command} takes {spec.params.__name__}, not {model.__name__}")
    checked: CommandParams = validate_params(spec, cmd.params)
    return checked


def validate_params(spec: CommandSpec | type[P], params: Mapping[str, Any]) -> Any:
    """``params`` as the model of ``spec`` (a table entry, or a params model such as RecordingParams)."""
    # A bare model's errors carry no prefix: its caller says what was asked (e.g. "recording: ...").
    model, name = (spec.params, spec.name) if isinstance(spec, CommandSpec) else (spec, "")
    try:
        return model.model_validate(dict(params))
    except ValidationError as exc:
        raise params_error(name, model, exc) from None


def parse_result(name: str, result: Mapping[str, Any]) -> CommandResult:
    """A reply's ``result`` as the table's result model of ``name``; :class:`MessageError` if it does not fit."""
    model = spec_for(name).result
    try:
        return model.model_validate(dict(result))
    except ValidationError as exc:
        raise params_error(f"{name} result", model, exc) from None


# --- one-line errors -------------------------------------------------------------------------

_TYPE_NAMES: Final = {"int_type": "int", "bool_type": "bool (true or false)", "string_type": "str"}


def params_error(name: str, model: type[BaseModel], exc: ValidationError) -> MessageError:
    """The first problem of ``exc`` as ``"<name>: <what>"`` (no prefix for an empty name); one line."""
    errors = exc.errors(include_url=False, include_context=True)
    first = errors[0]
    field = str(first["loc"][0]) if first["loc"] else None
    more = f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
    prefix = f"{name}: " if name else ""
    return MessageError(f"{prefix}{_explain(model, first, field)}{more}", field=field)


def _explain(model: type[BaseModel], error: ErrorDetails, field: str | None) -> str:
    kind, value = error["type"], error["input"]
    if field is None:
        return "params must be a JSON object"
    if kind == "missing":
        return f"missing parameter {field!r}"
    if kind == "extra_forbidden":
        return f"unknown parameter {field!r}"
    if kind in _TYPE_NAMES:
        return f"parameter {field!r} must be {_TYPE_NAMES[kind]}, got {type(value).__name__}"
    if kind in ("greater_than_equal", "less_than_equal"):
        low, high = _bounds(model, field)
        if low is not None and high is not None:
            return f"{field} must be {low}-{high}, got {value!r}"
        if low is not None:
            return f"{field} must be at least {low}, got {value!r}"
        return f"{field} must be at most {high}, got {value!r}"
    if kind == "value_error":  # our validators write the whole sentence
        return str(error["msg"]).removeprefix("Value error, ")
    msg = str(error["msg"])
    return f"parameter {field!r}: {msg[:1].lower() + msg[1:]} (got {value!r:.60})"


def _bounds(model: type[BaseModel], field: str) -> tuple[Any, Any]:
    low = high = None
    for rule in model.model_fields[field].metadata:
        if isinstance(rule, Ge):
            low = rule.ge
        elif isinstance(rule, Le):
            high = rule.le
    return low, high
