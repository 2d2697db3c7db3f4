"""The hub → device control channel: one WebRTC data channel beside the audio.

Why a data channel and not MQTT: these messages are tied to one media session and to its
timing. A barge-in ``flush`` must reach the device within milliseconds of the hub's decision,
and the device drops the reply audio it has already buffered (its jitter and playout buffers
hold 100-450 ms that the hub cannot take back). A browser device has no MQTT client, and the
channel closes with the session, so nothing stale is ever delivered. Everything durable
(commands, status, alerts) stays on MQTT as the spec says.

The device opens the channel (``LABEL``, ordered) before its offer, so the offer carries it;
a device without one still works, it just stops later on barge-in. Messages are JSON text:

* ``{"type": "flush", "reason": "barge_in"}`` — stop playing reply audio now;
* ``{"type": "transcript", "text": ...}`` — what the assistant heard (final STT);
* ``{"type": "reply", "text": ...}`` — a clause of the reply as it starts playing;
* ``{"type": "turn_end", "timing": {...}, "error": ..., "interrupted": bool}``;
* ``{"type": "stand_down", "reason": ...}`` — another device heard this utterance better and answers it.
* ``{"type": "listening", "state": "listening" | "idle", "mode": ...}`` — the wake word was heard and the
  hub listens for a turn (the device also hears an earcon), or that wake ended with nobody speaking.

The device → hub direction (issue 19: listening modes; a browser page sends these):

* ``{"type": "listening", "mode": "wake_word" | "always" | "push_to_talk"}`` — the device's listening mode;
* ``{"type": "ptt", "pressed": bool}`` — the push-to-talk button; in push_to_talk mode speech counts
  only while it is held, and releasing it ends the turn.

Unknown types are ignored by receivers (forward compatible).
"""

from __future__ import annotations

import json
import logging
from typing import Any, Final

log = logging.getLogger(__name__)

LABEL: Final = "naila-control"
MAX_MESSAGE_BYTES: Final = 16 * 1024

FLUSH: Final = "flush"
TRANSCRIPT: Final = "transcript"
REPLY: Final = "reply"
TURN_END: Final = "turn_end"
STAND_DOWN: Final = "stand_down"
LISTENING: Final = "listening"  # both directions (see above)
PTT: Final = "ptt"  # device -> hub


def encode(kind: str, **fields: Any) -> str:
    return json.dumps({"type": kind, **fields}, separators=(",", ":"))


def decode(message: str | bytes) -> dict[str, Any] | None:
    """The message as a dict with a string ``type``, or None (logged) when it is not one of ours."""
    if len(message) > MAX_MESSAGE_BYTES:
        log.warning("control channel: %d-byte message dropped", len(message))
        return None
    try:
        data = json.loads(message)
    except (ValueError, UnicodeDecodeError):
        log.warning("control channel: message is not JSON")
        return None
    if not isinstance(data, dict) or not isinstance(data.get("type"), str):
        log.warning("control channel: message has no string 'type'")
        return None
    return data
