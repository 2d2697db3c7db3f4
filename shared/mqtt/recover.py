"""An id from a payload that was refused, so the sender can still match the error reply to its request.

A payload refused for its size, its JSON or its schema is never parsed, but the answer should carry the
``request_id`` (device commands) or ``conversation_id`` (chat, uploads) the sender is waiting on.
``bytes.find`` scans even a 67 MB upload in milliseconds; only the short text after the key goes through
the regular expression, and only a plain token is taken (never free text from a refused message).
"""

from __future__ import annotations

import re
from functools import cache
from typing import Final

from shared.mqtt.codec import Payload

#: What a recovered id may be: the characters and length of request and conversation ids.
ID_TOKEN: Final = rb"[A-Za-z0-9_.:\-]{1,128}"

#: How far after the key its value is looked for (``"key" : "<128 characters>"`` with some spaces).
_WINDOW: Final = 200


@cache
def _value_after(field: str) -> re.Pattern[bytes]:
    return re.compile(rb'"' + re.escape(field.encode()) + rb'"\s*:\s*"(' + ID_TOKEN + rb')"')


def recover_id(payload: Payload, field: str) -> str | None:
    """The string value of ``field`` (its first occurrence) when it is a plain id token, else None."""
    if isinstance(payload, str):
        data = payload.encode("utf-8", "replace")
    elif isinstance(payload, bytes | bytearray | memoryview):
        data = bytes(payload)
    else:
        return None
    at = data.find(b'"' + field.encode() + b'"')
    if at < 0:
        return None
    match = _value_after(field).match(data, at, at + _WINDOW)
    return match.group(1).decode("ascii") if match else None
