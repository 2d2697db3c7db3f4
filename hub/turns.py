"""Completed conversation turns of the last hour: GET /turns (the demo and e2e tests read it) and
the dashboard's latency chart, whose p50/p95 per stage over the hour are computed here.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Callable, Sequence
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


# The dashboard's stages: each is the step from the previous milestone (all are ms from the end of
# speech), so the stages of a turn add up to its end of speech to the speaker. A milestone a turn
# lacks adds nothing.
STAGE_MILESTONES = (
    ("stt", "stt_ms"),
    ("llm", "llm_first_token_ms"),
    ("sentence", "first_sentence_ms"),
    ("tts", "tts_first_audio_ms"),
    ("playout", "hub_end_to_playout_ms"),
)
HOUR_S = 3600.0
MAX_TURNS = 2000  # a hard cap on the hour's turns: a busy household stays in bounded memory


def stages_of(timing: dict[str, int]) -> list[int]:
    """The turn's stage steps, in STAGE_MILESTONES' order (0 for a missing milestone)."""
    prev, out = 0, []
    for _, key in STAGE_MILESTONES:
        v = timing.get(key, 0)
        if v <= 0:
            out.append(0)
            continue
        out.append(max(0, v - prev))
        prev = max(prev, v)
    return out


def percentile(values: Sequence[int], p: float) -> int | None:
    """Nearest-rank percentile (p in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(p / 100 * len(ordered)) - 1))]


class TurnLog:
    """The completed turns of the last ``window_s`` (at most ``size``) across all devices, oldest first.

    ``clock``: seconds, monotonic (a controllable one in tests); a turn leaves the log ``window_s``
    after it was added, or earlier when ``size`` newer ones came.
    """

    def __init__(
        self, size: int = MAX_TURNS, *, window_s: float = HOUR_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._turns: deque[tuple[float, TurnRecord]] = deque(maxlen=size)
        self._listeners: list[Callable[[TurnRecord], None]] = []
        self.window_s = window_s
        self.clock = clock

    def _expire(self) -> None:
        oldest = self.clock() - self.window_s
        while self._turns and self._turns[0][0] < oldest:
            self._turns.popleft()

    def add(self, turn: TurnRecord) -> None:
        if not turn.finished_at:
            turn.finished_at = utc_iso()
        self._turns.append((self.clock(), turn))
        self._expire()
        # Runs on the media path: a failing listener is logged and never reaches the session.
        for listener in self._listeners:
            try:
                listener(turn)
            except Exception:
                log.exception("turn listener failed")

    def add_listener(self, listener: Callable[[TurnRecord], None]) -> None:
        """Be told about every completed turn as it is recorded (the web dashboard shows them live)."""
        self._listeners.append(listener)

    def recent(self, device_id: str | None = None, limit: int | None = None) -> list[TurnRecord]:
        """The hour's turns (of ``device_id``), oldest first; the newest ``limit`` when given."""
        self._expire()
        turns = [t for _, t in self._turns if device_id is None or t.device_id == device_id]
        return turns[-limit:] if limit is not None else turns

    def latency(self) -> dict[str, object]:
        """p50 and p95 (ms) of each stage and of the total over the window's turns with timings.

        A stage's percentiles count only the turns that reached it; ``total`` is end of speech
        to the last milestone reached (the stages' sum).
        """
        rows = [stages_of(t.timing) for t in self.recent()]
        rows = [r for r in rows if any(r)]
        stages: dict[str, dict[str, int | None]] = {}
        for i, (name, _) in enumerate(STAGE_MILESTONES):
            values = [r[i] for r in rows if r[i] > 0]
            stages[name] = {"p50": percentile(values, 50), "p95": percentile(values, 95), "count": len(values)}
        totals = [sum(r) for r in rows]
        stages["total"] = {"p50": percentile(totals, 50), "p95": percentile(totals, 95), "count": len(totals)}
        return {"window_s": self.window_s, "turns": len(rows), "stages": stages}

    def __len__(self) -> int:
        self._expire()
        return len(self._turns)
