"""JSON <-> model for MQTT payloads, with size limits and one error type.

Why a wrapper around pydantic: callers must get :class:`MessageError` with a one-line message for
*every* bad payload (so a handler is ``try: decode(...) except MessageError: log; drop``), the
size limit must be applied before parsing, and the base64 media limit is a per-call setting
(``MediaSettings.media_max_upload_size``) rather than a constant.
"""

from __future__ import annotations

from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic_core import ErrorDetails

from shared.mqtt.errors import MessageError
from shared.mqtt.fields import MEDIA_LIMIT_CONTEXT_KEY
from shared.mqtt.limits import CONTROL_MAX_PAYLOAD_BYTES, MEDIA_MAX_UPLOAD_SIZE, media_payload_limit


class NailaMessage(BaseModel):
    """Base of every payload model.

    * ``extra="ignore"``: a newer peer may add fields; older code keeps working.
    * ``strict=True``: no coercion, so ``"online": "false"`` is an error rather than ``True``.
    * ``frozen=True``: a decoded message is shared between tasks; copy with ``model_copy(update=...)``.

    Constructing a model in Python with bad values raises ``pydantic.ValidationError`` (also a
    ``ValueError``): that is a bug in the caller, not bad input. (Overriding ``__init__`` to
    convert it would make pydantic route JSON validation through ``__init__`` and lose JSON-mode
    parsing.) Everything from the network goes through :func:`decode` and raises :class:`MessageError`.
    Strict mode means Python callers pass real types: ``datetime`` timestamps, ``tuple`` bboxes,
    model instances for nested models.
    """

    model_config = ConfigDict(extra="ignore", strict=True, frozen=True)

    #: Largest accepted JSON payload for this message, bytes (media models compute theirs).
    max_payload_bytes: ClassVar[int] = CONTROL_MAX_PAYLOAD_BYTES
    #: True when the message carries a base64 ``data`` blob whose size follows the media limit.
    carries_media: ClassVar[bool] = False

    @classmethod
    def payload_limit(cls, max_media_bytes: int = MEDIA_MAX_UPLOAD_SIZE) -> int:
        """The byte limit :func:`decode` / :func:`encode` apply to this message type by default."""
        if cls.carries_media:
            return media_payload_limit(max_media_bytes)
        return cls.max_payload_bytes


M = TypeVar("M", bound=NailaMessage)

#: What ``decode`` accepts: aiomqtt's ``Message.payload`` type, so it can be passed straight in.
Payload = bytes | bytearray | memoryview | str | int | float | None


def decode(
    model_cls: type[M],
    payload: Payload,
    *,
    max_bytes: int | None = None,
    max_media_bytes: int = MEDIA_MAX_UPLOAD_SIZE,
) -> M:
    """Parse and validate a JSON payload into ``model_cls``.

    ``max_bytes`` overrides the payload limit (default: :meth:`NailaMessage.payload_limit`);
    ``max_media_bytes`` bounds a decoded base64 ``data`` field. Raises :class:`MessageError`.
    """
    name = model_cls.__name__
    raw: bytes | bytearray
    if isinstance(payload, str):
        try:
            raw = payload.encode("utf-8")
        except UnicodeEncodeError:
            raise MessageError(f"{name}: payload is not valid UTF-8 text") from None
    elif isinstance(payload, bytes | bytearray):
        raw = payload
    elif isinstance(payload, memoryview):
        raw = payload.tobytes()
    else:
        raise MessageError(f"{name}: payload must be JSON bytes or str, got {type(payload).__name__}")
    limit = model_cls.payload_limit(max_media_bytes) if max_bytes is None else max_bytes
    if len(raw) > limit:
        raise MessageError(f"{name}: payload is {len(raw)} bytes, over the {limit}-byte limit")
    if not raw.strip():
        raise MessageError(f"{name}: payload is empty (a cleared retained message?)")
    try:
        return model_cls.model_validate_json(raw, context={MEDIA_LIMIT_CONTEXT_KEY: max_media_bytes})
    except ValidationError as exc:
        raise _to_message_error(name, exc) from None


def build(model_cls: type[M], /, **fields: Any) -> M:
    """Construct ``model_cls(**fields)`` raising :class:`MessageError` instead of ``ValidationError``.

    For values that came from outside the program (an HTTP form, a config file, model output).
    """
    try:
        return model_cls(**fields)
    except ValidationError as exc:
        raise _to_message_error(model_cls.__name__, exc) from None


def encode(model: NailaMessage, *, max_bytes: int | None = None) -> bytes:
    """Compact UTF-8 JSON for publishing; refuses (MessageError) what receivers would refuse as too big."""
    data = type(model).__pydantic_serializer__.to_json(model)
    limit = model.payload_limit() if max_bytes is None else max_bytes
    if len(data) > limit:
        raise MessageError(
            f"{type(model).__name__}: encoded payload is {len(data)} bytes, over the {limit}-byte limit"
        )
    return data


def _to_message_error(name: str, exc: ValidationError) -> MessageError:
    errors = exc.errors(include_url=False, include_context=False)
    first = errors[0]
    more = f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
    field = ".".join(str(p) for p in first["loc"]) or None
    return MessageError(f"{name}{'.' + field if field else ''}: {_explain(first)}{more}", field=field)


def _explain(error: ErrorDetails) -> str:
    kind = error["type"]
    if kind == "json_invalid":
        return "payload is not valid JSON: " + error["msg"].removeprefix("Invalid JSON: ")
    if kind == "missing":
        return "missing required field"
    if kind in ("model_type", "model_attributes_type", "dict_type") and not error["loc"]:
        return f"payload must be a JSON object, got {_json_type(error['input'])}"
    msg = error["msg"].removeprefix("Value error, ")
    msg = msg[:1].lower() + msg[1:]
    if not error["loc"]:  # a whole-model rule (e.g. "error is required when ok is false")
        return msg
    return f"{msg} (got {_json_type(error['input'])} {_short(error['input'])})"


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    return _JSON_TYPES.get(type(value), type(value).__name__)


_JSON_TYPES: dict[type, str] = {
    bool: "boolean",
    int: "number",
    float: "number",
    str: "string",
    list: "array",
    dict: "object",
}


def _short(value: object) -> str:
    if isinstance(value, str | bytes) and len(value) > 60:
        return repr(value[:60]) + f"...({len(value)} long)"
    if isinstance(value, dict | list | tuple):
        return f"of {len(value)} item{'' if len(value) == 1 else 's'}"
    return repr(value)
