"""One utterance's audio, and transcription that starts before END arrives.

The hub only sends END after ~300 ms of VAD silence, and every hangover frame goes
upstream. So the speech is usually over well before END: as soon as the tail of the
buffer has been quiet for ``speculate_ms`` we transcribe what we have in the background.
At END, if nothing voiced arrived after that snapshot, its result is the transcript (or
we wait for the run already under way, which started earlier than a fresh one could).
If the user spoke again after the snapshot, the result is stale and we transcribe the
whole buffer again.

The session starts a held reply from that transcript only once the quiet has lasted its own,
longer threshold (LLM_PREEMPTIVE_QUIET_MS, :meth:`quiet_for`): transcribing early costs one
Whisper run when the quiet was only a stop inside a word, a reply started on it would cost an
LLM evaluation too, and the early transcript is ready when the reply may start.

"Quiet" is judged per 20 ms frame: more than 30 dB below the loudest frame of this
utterance, or below -60 dBFS; that holds for clean espeak audio and for a room's noise.

Length cap (issue 18, H4): an utterance keeps at most ``max_s`` seconds (AI_MAX_UTTERANCE_S).
Audio beyond it is dropped, not appended, so memory stays flat however long a TV keeps the hub's
VAD voiced; the turn is answered from the kept part. Reaching the cap counts as the end of speech
for the background transcription (one last run over the kept audio, so END finds it ready), and
neither that run nor the final transcription ever sees more than the cap.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ai_server.stt import STTBackend
from shared.audio import HUB_RATE, Int16Array, pcm_to_int16, rms_dbfs

log = logging.getLogger(__name__)

FRAME_SAMPLES = HUB_RATE // 50  # 20 ms
DEFAULT_MAX_S = 30.0  # AI_MAX_UTTERANCE_S's default
QUIET_BELOW_PEAK_DB = 30.0
QUIET_FLOOR_DBFS = -60.0


def _retrieve(task: asyncio.Task[str]) -> None:
    """Mark an unused run's exception as seen (it is logged, not raised)."""
    if not task.cancelled() and task.exception() is not None:
        log.debug("speculative transcription failed: %s", task.exception())


@dataclass
class _Run:
    upto: int  # samples covered by this transcription
    task: asyncio.Task[str]


@dataclass
class Utterance:
    """Audio of one utterance (START .. END) for one device."""

    stt: STTBackend
    speculate_ms: int = 0
    max_s: float = DEFAULT_MAX_S  # audio kept, s; the rest is dropped
    dropped_samples: int = 0  # audio that arrived after the cap
    _chunks: list[Int16Array] = field(default_factory=list)
    samples: int = 0
    _tail: Int16Array = field(default_factory=lambda: np.zeros(0, dtype=np.int16))
    _analysed: int = 0  # samples already judged voiced/quiet
    _peak_db: float = -120.0
    _last_voiced_end: int = 0  # sample index just after the last voiced frame
    _run: _Run | None = None
    speculative_runs: int = 0
    reused: bool = False
    # Called when a background transcription ends (the session may then start the reply early).
    on_speculation_done: Callable[[], None] | None = None

    @property
    def max_samples(self) -> int:
        return int(self.max_s * HUB_RATE)

    @property
    def capped(self) -> bool:
        """The utterance holds ``max_s`` of audio: whatever comes now is dropped."""
        return self.samples >= self.max_samples

    @property
    def held_bytes(self) -> int:
        """Audio bytes this utterance holds (bounded by the cap)."""
        return sum(c.nbytes for c in self._chunks) + self._tail.nbytes

    def add(self, pcm: bytes) -> None:
        room = self.max_samples - self.samples
        if room <= 0:
            self.dropped_samples += len(pcm) // 2
            self._maybe_speculate()  # a run still busy when the cap was reached may be done now
            return
        if not pcm:
            return
        x = pcm_to_int16(pcm)
        if x.size > room:
            self.dropped_samples += x.size - room
            x = x[:room]
        x = x.copy()
        self._chunks.append(x)
        self.samples += x.size
        self._analyse(x)
        self._maybe_speculate()

    def audio(self) -> Int16Array:
        if not self._chunks:
            return np.zeros(0, dtype=np.int16)
        if len(self._chunks) > 1:
            self._chunks = [np.concatenate(self._chunks)]
        return self._chunks[0]

    @property
    def heard_speech(self) -> bool:
        return self._last_voiced_end > 0

    @property
    def quiet_ms(self) -> int:
        """How long the audio so far has been quiet since the last voiced frame (0 before any speech)."""
        if not self.heard_speech:
            return 0
        return (self._analysed - self._last_voiced_end) * 1000 // HUB_RATE

    def quiet_for(self, ms: int) -> bool:
        """The speech may be over: quiet for ``ms`` since the last voiced frame, or at the length cap
        (nothing more is kept). Gates both the background transcription and the held reply."""
        return self.capped or self.quiet_ms >= ms

    def _analyse(self, x: Int16Array) -> None:
        buf = np.concatenate([self._tail, x]) if self._tail.size else x
        n_frames = buf.size // FRAME_SAMPLES
        for i in range(n_frames):
            frame = buf[i * FRAME_SAMPLES : (i + 1) * FRAME_SAMPLES]
            db = rms_dbfs(frame)
            self._peak_db = max(self._peak_db, db)
            self._analysed += FRAME_SAMPLES
            if db >= max(self._peak_db - QUIET_BELOW_PEAK_DB, QUIET_FLOOR_DBFS):
                self._last_voiced_end = self._analysed
        self._tail = buf[n_frames * FRAME_SAMPLES :]

    def _maybe_speculate(self) -> None:
        if self.speculate_ms <= 0 or not self.heard_speech:
            return
        if not self.quiet_for(self.speculate_ms):
            return
        run = self._run
        if run is not None and (run.upto >= self._last_voiced_end or not run.task.done()):
            return  # already covers this speech, or one is still running (CPU is scarce)
        if self.capped and run is not None and run.upto >= self.samples:
            return  # the whole kept audio is transcribed: nothing new can arrive
        upto = self.samples
        task = asyncio.get_running_loop().create_task(self.stt.transcribe(self.audio()[:upto].copy()))
        task.add_done_callback(_retrieve)
        if self.on_speculation_done is not None:
            listener = self.on_speculation_done
            task.add_done_callback(lambda _t: listener())
        self._run = _Run(upto, task)
        self.speculative_runs += 1

    async def transcript(self) -> str:
        """The final transcript, reusing the background run when nothing was said after it
        (``reused`` tells which this call did: a held reply thrown away may have reused an earlier one)."""
        self.reused = False
        run = self._run
        if run is not None and run.upto >= self._last_voiced_end:
            try:
                text = await asyncio.shield(run.task)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.debug("speculative run failed; transcribing again")
            else:
                self.reused = True
                return text
        if not self.heard_speech:
            return ""  # nothing above the noise floor: no need to wake Whisper
        return await self.stt.transcribe(self.audio())

    @property
    def speculation_ready(self) -> bool:
        """The background transcription finished, succeeded, and covers all speech heard so far."""
        run = self._run
        return (
            run is not None
            and run.upto >= self._last_voiced_end
            and run.task.done()
            and not run.task.cancelled()
            and run.task.exception() is None
        )

    @property
    def spoke_after_speculation(self) -> bool:
        """Voiced audio arrived after the background run's snapshot (its transcript is stale)."""
        return self._run is not None and self._last_voiced_end > self._run.upto

    def discard(self) -> None:
        """Barge-in or superseded: a background run's result is no longer wanted."""
        if self._run is not None:
            self._run.task.cancel()
