"""Recent completed conversation turns, for GET /turns (the demo and e2e tests read it)."""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from shared.contract import pb
from shared.timestamps import utc_iso

log = logging.getLogger("naila.hub.turns")

TIMING_FIELDS = (
    "stt_ms",
    "llm_first_token_ms",
    "first_sentence_ms",
    "tts_first_audio_ms",
    "first_frame_sent_ms",
    "total_ms",
)


@dataclass
class TurnRecord:
    """One user utterance and the assistant's reply, as the hub saw it.

    ``timing`` holds the AI server's TurnTiming fields (ms from END on its clock) plus the
    hub's own, on the hub's monotonic clock from the moment END was written upstream:
    ``hub_end_to_transcript_ms``, ``hub_end_to_first_audio_ms`` (first reply audio
    received) and ``hub_end_to_playout_ms`` (first reply sample handed to WebRTC).
    """

    device_id: str
    conversation_id: str
    transcript: str = ""
    reply_text: str = ""
    timing: dict[str, int] = field(default_factory=dict)
    error_code: str = "NONE"
    error_message: str = ""
    interrupted: bool = False
    finished_at: str = ""
    # When END went upstream, on the hub's clock (time.monotonic in production: one clock for
    # every process of the machine, so benchmarks can line it up with device-side times).
    hub_end_monotonic: float = 0.0

    def to_json(self) -> dict[str, object]:
        return {
            "device_id": self.device_id,
            "conversation_id": self.conversation_id,
            "transcript": self.transcript,
            "reply_text": self.reply_text,
            "timing": dict(self.timing),
            "error_code": self.error_code,
            "error_message": self.error_message,
            "interrupted": self.interrupted,
            "finished_at": self.finished_at,
            "hub_end_monotonic": self.hub_end_monotonic,
        }


def timing_to_dict(t: pb.TurnTiming) -> dict[str, int]:
    return {name: int(getattr(t, name)) for name in TIMING_FIELDS}


def error_name(code: int) -> str:
    try:
        return str(pb.ErrorCode.Name(code))  # type: ignore[arg-type]
    except ValueError:
        return f"UNKNOWN_{code}"


class TurnLog:
    """Ring buffer of the last ``size`` completed turns across all devices, oldest first."""

    def __init__(self, size: int = 50) -> None:
        self._turns: deque[TurnRecord] = deque(maxlen=size)
        self._listeners: list[Callable[[TurnRecord], None]] = []

    def add(self, turn: TurnRecord) -> None:
        if not turn.finished_at:
            turn.finished_at = utc_iso()
        self._turns.append(turn)
        # Runs on the media path: a failing listener is logged and never reaches the session.
        for listener in self._listeners:
            try:
                listener(turn)
            except Exception:
                log.exception("turn listener failed")

    def add_listener(self, listener: Callable[[TurnRecord], None]) -> None:
        """Be told about every completed turn as it is recorded (the web dashboard shows them live)."""
        self._listeners.append(listener)

    def recent(self, device_id: str | None = None) -> list[TurnRecord]:
        return [t for t in self._turns if device_id is None or t.device_id == device_id]

    def __len__(self) -> int:
        return len(self._turns)
