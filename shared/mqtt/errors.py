"""The one error type of the MQTT layer.

Everything that arrives over MQTT is untrusted input from the LAN. Handlers should be able to
write ``except MessageError`` once, log one line and drop the message, instead of knowing about
``json.JSONDecodeError``, ``pydantic.ValidationError``, ``binascii.Error`` and friends.
"""

from __future__ import annotations


class MessageError(ValueError):
    """A topic or payload is malformed, unsafe, too large or of the wrong shape.

    ``str(err)`` is a single line saying what was wrong and where (``field`` names the offending
    field path, e.g. ``"analysis.objects.0.bbox"``, or is ``None`` when the problem is not tied to
    one field, such as invalid JSON or an oversized payload).
    """

    def __init__(self, message: str, *, field: str | None = None) -> None:
        # Keep the message one line whatever was interpolated into it: handlers log it as is.
        one_line = " ".join(message.splitlines())
        super().__init__(one_line)
        self.field = field
