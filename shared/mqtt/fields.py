"""Reusable field types for the MQTT payload models, each carrying its own limits.

Why here and not inline: the same rule (what a device id may contain, how long free text may be,
how base64 media is checked) must be identical in every message, and a reviewer should be able
to read the whole input policy on one screen.
"""

from __future__ import annotations

import base64
import binascii
import math
import uuid
from datetime import UTC, datetime
from ipaddress import ip_address
from typing import Annotated, Final, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BeforeValidator,
    Field,
    JsonValue,
    PlainSerializer,
    StringConstraints,
    ValidationInfo,
)
from pydantic_core import PydanticCustomError

from shared.ids import ID_RULE
from shared.mqtt.limits import (
    MAX_ERROR_LEN,
    MAX_LABEL_LEN,
    MAX_TEXT_LEN,
    MAX_TOKEN_LEN,
    MEDIA_MAX_UPLOAD_SIZE,
)
from shared.mqtt.topics import is_safe_segment

#: Key in the pydantic validation context holding the decoded-media byte limit for this decode.
MEDIA_LIMIT_CONTEXT_KEY: Final = "max_media_bytes"


def utc_now() -> datetime:
    """Now, timezone-aware in UTC: the default for every ``timestamp``."""
    return datetime.now(UTC)


def new_request_id() -> str:
    """A fresh ``request_id`` for commands and media requests (a valid :data:`Token`)."""
    return f"req_{uuid.uuid4().hex}"


def _safe_segment(value: str) -> str:
    if not is_safe_segment(value):
        raise PydanticCustomError(
            "unsafe_segment",
            f"must be {ID_RULE}",
        )
    return value


#: An id that is (or may become) a topic level: device_id, session_id, zone, alert_type, room.
SafeId = Annotated[str, AfterValidator(_safe_segment)]

#: A short machine identifier that never goes into a topic: request_id, conversation_id, command,
#: event name, media format, capability. ``:`` is allowed for ids like ``conv:2024:1``.
Token = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_TOKEN_LEN, pattern=r"^[A-Za-z0-9_.:\-]+$")
]

#: A short single-line human-readable label: firmware version, object label, scene type.
Label = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_LABEL_LEN, pattern=r"^[^\x00-\x1f\x7f]+$")
]


def _filename(value: str) -> str:
    if "/" in value or "\\" in value or value in (".", ".."):
        raise PydanticCustomError("unsafe_filename", "must be a bare file name without path separators")
    return value


#: A client-supplied file name: a label that cannot climb out of a directory.
Filename = Annotated[Label, AfterValidator(_filename)]

#: Free text (chat, upload context, broadcast, scene description); may contain newlines.
Text = Annotated[str, StringConstraints(max_length=MAX_TEXT_LEN)]
#: Free text that must say something.
NonEmptyText = Annotated[str, StringConstraints(min_length=1, max_length=MAX_TEXT_LEN)]
#: An error message in a reply.
ErrorText = Annotated[str, StringConstraints(min_length=1, max_length=MAX_ERROR_LEN)]

#: ISO-8601 with a UTC offset ("2024-01-15T10:30:00Z"); naive times are ambiguous across devices.
#: Declare as ``timestamp: Timestamp = Field(default_factory=utc_now)`` (the mypy plugin needs the
#: default on the field itself).
Timestamp = AwareDatetime

#: A probability.
Confidence = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]

#: Pixel dimensions.
Pixels = Annotated[int, Field(ge=1, le=65535)]

MediaType = Literal["image", "audio", "video"]


def _ip(value: str) -> str:
    try:
        ip_address(value)
    except ValueError:
        raise PydanticCustomError("ip_address", "must be an IPv4 or IPv6 address") from None
    return value


#: An IP address kept as the string the device sent.
IpAddress = Annotated[str, StringConstraints(max_length=45), AfterValidator(_ip)]


def _finite_json(value: JsonValue) -> JsonValue:
    # The JSON parser accepts NaN/Infinity, which are not JSON and would re-encode as null.
    stack: list[JsonValue] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            raise PydanticCustomError("finite_number", "must not contain NaN or Infinity")
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return value


def _finite_json_dict(value: dict[str, JsonValue]) -> dict[str, JsonValue]:
    _finite_json(list(value.values()))
    return value


#: Free-form parameters / results: any JSON object (its size is bounded by the payload limit).
JsonDict = Annotated[dict[str, JsonValue], AfterValidator(_finite_json_dict)]


def _bbox(value: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
    if not all(math.isfinite(v) for v in value):
        raise PydanticCustomError("finite_number", "must contain finite numbers")
    if value[2] < 0 or value[3] < 0:
        raise PydanticCustomError("bbox", "width and height must not be negative")
    return value


#: ``[x, y, width, height]`` in pixels from the top-left corner (spec §8.11's example is x,y,w,h:
#: ``[450, 200, 100, 120]`` cannot be two corners).
BBox = Annotated[tuple[float, float, float, float], AfterValidator(_bbox)]


def _media_limit(info: ValidationInfo) -> int:
    context = info.context
    if isinstance(context, dict):
        limit = context.get(MEDIA_LIMIT_CONTEXT_KEY)
        if isinstance(limit, int):
            return limit
    return MEDIA_MAX_UPLOAD_SIZE


def _media_data(value: object, info: ValidationInfo) -> object:
    """Base64 text (JSON, or a str in Python) -> bytes; raw bytes (Python only) pass through.

    Strict standard base64 with padding (no line breaks, no URL-safe alphabet), at least one byte,
    at most the decode's ``max_media_bytes``. The size is checked from the length before decoding
    so an oversized blob is refused without allocating it.
    """
    limit = _media_limit(info)
    if isinstance(value, bytearray | memoryview):
        value = bytes(value)
    if isinstance(value, str):
        if len(value) > 4 * ((limit + 2) // 3):
            raise PydanticCustomError(
                "media_too_large",
                "{chars} base64 characters decode to more than the {limit}-byte media limit",
                {"chars": len(value), "limit": limit},
            )
        try:
            value = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise PydanticCustomError("base64", "must be standard padded base64") from None
    if isinstance(value, bytes):
        if not value:
            raise PydanticCustomError("media_empty", "must not be empty")
        if len(value) > limit:
            raise PydanticCustomError(
                "media_too_large",
                "{size} bytes exceeds the {limit}-byte media limit",
                {"size": len(value), "limit": limit},
            )
    return value


def _b64encode(value: bytes) -> str:
    return base64.b64encode(value).decode("ascii")


#: A media blob: base64 on the wire, ``bytes`` in Python.
MediaData = Annotated[
    bytes,
    BeforeValidator(_media_data),
    PlainSerializer(_b64encode, return_type=str, when_used="json"),
]

__all__ = [
    "MEDIA_LIMIT_CONTEXT_KEY",
    "BBox",
    "Confidence",
    "ErrorText",
    "Filename",
    "IpAddress",
    "JsonDict",
    "Label",
    "MediaData",
    "MediaType",
    "NonEmptyText",
    "Pixels",
    "SafeId",
    "Text",
    "Timestamp",
    "Token",
    "new_request_id",
    "utc_now",
]
