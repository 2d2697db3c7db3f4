"""What the AI server accepts on StreamConversation (issue 18: C1, L2): limits and per-field checks.

Every AudioInput field is checked before it touches any state, because the stream is the one
place a compromised hub (or, without mutual TLS, anyone on the LAN) reaches the models:

* ``device_id``: the project's one device-id rule (:func:`shared.mqtt.is_safe_segment`); it keys
  per-device state, logs and history;
* ``conversation_id`` and ``room``: short, printable (they are echoed to the hub and land in the
  LLM prompt and the history);
* ``event`` and ``codec``: known enum values; Opus is not decoded here;
* ``sample_rate``: one of :data:`SAMPLE_RATES` (0, proto3's "unset", means 16 kHz). A made-up
  rate such as 8 would make the resampler expand each byte 2000-fold;
* ``audio_pcm``: an even number of bytes and at most 1 s at its rate;
* ``chunk_duration_ms``: at most 1 s; ``timestamp_ms`` and ``sequence_num`` are informational
  (any value is harmless: the server never orders or times anything by them).

A refused message raises :class:`BadInput` with a reason from a fixed vocabulary (it becomes a
metric label) and a one-line detail for the log and the hub.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from shared.audio import HUB_RATE
from shared.config import AIServerSettings
from shared.contract import pb
from shared.ids import ID_RULE
from shared.mqtt import is_safe_segment
from shared.rate_limit import RateLimiter

SAMPLE_RATES: Final = frozenset({8000, 16000, 24000, 48000})
MAX_TEXT_FIELD: Final = 128  # conversation_id, room: characters
MAX_CHUNK_MS: Final = 1000
_EVENTS: Final = frozenset(pb.SpeechEvent.values())
_CODECS: Final = frozenset(pb.AudioCodec.values())


@dataclass(frozen=True, slots=True)
class StreamLimits:
    """Caps of the conversation service (AI_MAX_* settings)."""

    max_streams: int = 8
    max_devices_per_stream: int = 512
    max_utterance_s: float = 30.0

    @classmethod
    def from_settings(cls, s: AIServerSettings) -> StreamLimits:
        return cls(s.ai_max_streams, s.ai_max_devices_per_stream, s.ai_max_utterance_s)


class BadInput(ValueError):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def _text(value: str, what: str) -> None:
    if len(value) > MAX_TEXT_FIELD or not value.isprintable():
        raise BadInput(f"bad_{what}", f"{what} must be at most {MAX_TEXT_FIELD} printable characters, "
                                      f"got {value[:40]!r}{'...' if len(value) > 40 else ''}")


def rate_of(msg: pb.AudioInput) -> int:
    return msg.sample_rate or HUB_RATE


def check_audio_input(msg: pb.AudioInput) -> None:
    """Raise :class:`BadInput` unless every field of ``msg`` is acceptable (see the module doc)."""
    if not is_safe_segment(msg.device_id):
        raise BadInput("bad_device_id", f"device_id {msg.device_id[:40]!r} is not {ID_RULE}")
    _text(msg.conversation_id, "conversation_id")
    _text(msg.room, "room")
    if msg.event not in _EVENTS:
        raise BadInput("bad_event", f"event {msg.event} is not a SpeechEvent")
    if msg.codec not in _CODECS:
        raise BadInput("bad_codec", f"codec {msg.codec} is not an AudioCodec")
    if msg.WhichOneof("audio") == "audio_opus" or (msg.codec == pb.OPUS and msg.audio_pcm):
        raise BadInput("unsupported_codec", "Opus input is not supported; send PCM_S16LE")
    if msg.sample_rate and msg.sample_rate not in SAMPLE_RATES:
        raise BadInput("bad_sample_rate", f"sample_rate {msg.sample_rate} is not one of "
                                          f"{sorted(SAMPLE_RATES)}")
    if msg.chunk_duration_ms > MAX_CHUNK_MS:
        raise BadInput("bad_chunk", f"chunk_duration_ms {msg.chunk_duration_ms} is over {MAX_CHUNK_MS}")
    n = len(msg.audio_pcm)
    if n % 2:
        raise BadInput("odd_pcm", f"audio_pcm has {n} bytes, not whole 16-bit samples")
    if n > 2 * rate_of(msg):
        raise BadInput("oversized_pcm", f"audio_pcm has {n} bytes, over 1 s at {rate_of(msg)} Hz")


class LogBudget:
    """Log a reason at most a few times a minute: a hub sending garbage at 50 messages per second
    must not bury the journal. Everything is still counted (the caller's metrics)."""

    def __init__(self, logger: logging.Logger, clock: Callable[[], float] = time.monotonic) -> None:
        self._log = logger
        self._limiter = RateLimiter(1.0 / 30.0, 3, clock=clock, max_keys=256)
        self.suppressed = 0

    def warn(self, reason: str, msg: str, *args: object) -> None:
        if self._limiter.allow(reason):
            tail = f" ({self.suppressed} similar lines suppressed so far)" if self.suppressed else ""
            self._log.warning(msg + tail, *args)
        else:
            self.suppressed += 1
