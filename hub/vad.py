"""Voice activity state machine: turns 20 ms frames into START / CONTINUE / END / INTERRUPT.

Silence -> MaybeSpeech -> Speaking -> MaybeSilence -> Silence, as in the streaming spec.

The machine is pure: no asyncio, no wall clock. Time is the frame count (each frame is
``frame_ms`` long), so tests drive it frame by frame and production feeds it frames as they
arrive. What counts as "voiced" comes from a pluggable :class:`VoiceDetector` (webrtcvad
now; a Silero ONNX detector can slot in behind the same protocol), and when a pause ends a
turn comes from a pluggable :class:`EndOfTurnPolicy` (fixed hangover now; an end-of-turn
model can replace it without touching the state machine).
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from shared.audio import Int16Array


class VoiceDetector(Protocol):
    """Decides whether one frame (16 kHz mono int16, 20 ms) contains speech."""

    def is_speech(self, frame: Int16Array) -> bool: ...

    def reset(self) -> None:
        """Forget any state carried between frames (a new session)."""
        ...


class EndOfTurnPolicy(Protocol):
    """Decides, during a pause in speech, whether the speaker's turn is over.

    Called once per unvoiced frame while MaybeSilence with how many consecutive unvoiced
    frames there have been. A learned end-of-turn model would also look at the audio.
    """

    def turn_is_over(self, silent_frames: int, frame: Int16Array) -> bool: ...


class WebRtcVoiceDetector:
    """webrtcvad (libfvad's ancestor) on 16 kHz frames; ``mode`` 0-3, 3 = fewest false positives."""

    def __init__(self, mode: int, sample_rate: int = 16_000) -> None:
        import webrtcvad

        self._mode = mode
        self._rate = sample_rate
        self._vad = webrtcvad.Vad(mode)

    def is_speech(self, frame: Int16Array) -> bool:
        return bool(self._vad.is_speech(frame.astype("<i2", copy=False).tobytes(), self._rate))

    def reset(self) -> None:
        import webrtcvad

        self._vad = webrtcvad.Vad(self._mode)


class HangoverEndOfTurn:
    """The turn is over after ``hangover_frames`` consecutive unvoiced frames."""

    def __init__(self, hangover_frames: int) -> None:
        self.hangover_frames = max(1, hangover_frames)

    def turn_is_over(self, silent_frames: int, frame: Int16Array) -> bool:
        return silent_frames >= self.hangover_frames


class VadState(enum.Enum):
    SILENCE = "silence"
    MAYBE_SPEECH = "maybe_speech"
    SPEAKING = "speaking"
    MAYBE_SILENCE = "maybe_silence"


class VadEventKind(enum.Enum):
    START = "start"
    CONTINUE = "continue"
    END = "end"
    INTERRUPT = "interrupt"


@dataclass(frozen=True)
class VadEvent:
    """One thing to tell the AI server.

    ``audio``: START carries pre-roll + onset frames, CONTINUE one frame, END/INTERRUPT none.
    ``frame_index``: index (0-based, in frames fed so far) of the first frame in ``audio``,
    or of the frame that caused the event when there is no audio; the caller maps it to a
    capture time.
    """

    kind: VadEventKind
    audio: Int16Array
    frame_index: int
    reason: str = ""  # END only: END_SILENCE or END_MAX_LENGTH


END_SILENCE = "silence"
END_MAX_LENGTH = "max_length"  # HUB_MAX_UTTERANCE_S of speech without a pause long enough to end the turn


@dataclass(frozen=True)
class VadConfig:
    """Thresholds in frames, from HubSettings via :meth:`from_ms`."""

    onset_frames: int = 3
    hangover_frames: int = 15
    preroll_frames: int = 10
    barge_in_frames: int = 5
    frame_samples: int = 320
    frame_ms: int = 20
    max_utterance_frames: int = 0  # 0 = no cap; else END after this many frames of one utterance (H4)

    @classmethod
    def from_ms(
        cls,
        *,
        onset_frames: int,
        hangover_ms: int,
        preroll_ms: int,
        barge_in_frames: int,
        frame_ms: int = 20,
        sample_rate: int = 16_000,
        max_utterance_ms: float = 0,
    ) -> VadConfig:
        return cls(
            onset_frames=max(1, onset_frames),
            hangover_frames=max(1, -(-hangover_ms // frame_ms)),
            preroll_frames=max(0, preroll_ms // frame_ms),
            barge_in_frames=max(1, barge_in_frames),
            frame_samples=sample_rate * frame_ms // 1000,
            frame_ms=frame_ms,
            max_utterance_frames=max(0, round(max_utterance_ms / frame_ms)),
        )


_EMPTY: Int16Array = np.zeros(0, dtype=np.int16)


class VadStateMachine:
    """Frame-by-frame speech segmenter with pre-roll and barge-in.

    Feed every frame to :meth:`process` with ``is_playing`` = "the device is playing TTS
    right now". Onset needs ``onset_frames`` consecutive voiced frames, or
    ``barge_in_frames`` while playing (a stricter bar: the device's own speaker leaks into
    its mic), in which case INTERRUPT comes right before START. The START audio is the
    pre-roll (up to ``preroll_frames`` frames heard before the onset) plus the onset frames,
    so the first syllable is not clipped.

    An utterance lasts at most ``max_utterance_frames`` (onset and CONTINUE frames; HUB_MAX_UTTERANCE_S):
    a TV or music near the mic keeps the detector voiced, and the AI server would otherwise
    buffer and re-transcribe without end. The END then carries ``reason=END_MAX_LENGTH``; if
    the sound goes on, a new onset opens the next utterance.
    """

    def __init__(
        self,
        detector: VoiceDetector,
        config: VadConfig,
        end_of_turn: EndOfTurnPolicy | None = None,
    ) -> None:
        self.detector = detector
        self.config = config
        self.end_of_turn: EndOfTurnPolicy = end_of_turn or HangoverEndOfTurn(config.hangover_frames)
        self.state = VadState.SILENCE
        self._preroll: deque[Int16Array] = deque(maxlen=max(1, config.preroll_frames))
        self._onset: list[Int16Array] = []
        self._silent = 0
        self._index = 0  # frames fed so far
        self._utterance_frames = 0  # frames sent in the open utterance (onset + CONTINUE)

    @property
    def in_utterance(self) -> bool:
        """True between START and END (the AI server has an open utterance)."""
        return self.state in (VadState.SPEAKING, VadState.MAYBE_SILENCE)

    @property
    def frames_seen(self) -> int:
        return self._index

    def reset(self) -> None:
        """Back to Silence, forgetting pre-roll and any partial onset (no events)."""
        self.state = VadState.SILENCE
        self._preroll.clear()
        self._onset.clear()
        self._silent = 0
        self._utterance_frames = 0
        self.detector.reset()

    def process(self, frame: Int16Array, is_playing: bool = False) -> list[VadEvent]:
        if frame.size != self.config.frame_samples:
            raise ValueError(f"VAD frame must be {self.config.frame_samples} samples, got {frame.size}")
        index = self._index
        self._index += 1
        voiced = self.detector.is_speech(frame)
        state = self.state

        if state is VadState.SILENCE or state is VadState.MAYBE_SPEECH:
            if not voiced:
                # A false start: its frames become pre-roll for the next onset.
                for f in self._onset:
                    self._push_preroll(f)
                self._onset.clear()
                self._push_preroll(frame)
                self.state = VadState.SILENCE
                return []
            self._onset.append(frame)
            needed = self.config.barge_in_frames if is_playing else self.config.onset_frames
            if len(self._onset) < needed:
                self.state = VadState.MAYBE_SPEECH
                return []
            return self._confirm_onset(index, is_playing)

        # Speaking or MaybeSilence: every frame goes upstream, hangover frames included.
        events = [VadEvent(VadEventKind.CONTINUE, frame, index)]
        self._utterance_frames += 1
        cap = self.config.max_utterance_frames
        if voiced:
            self._silent = 0
            self.state = VadState.SPEAKING
        else:
            self._silent += 1
            self.state = VadState.MAYBE_SILENCE
            if self.end_of_turn.turn_is_over(self._silent, frame):
                events.append(self._end(index, END_SILENCE))
                return events
        if cap and self._utterance_frames >= cap:
            events.append(self._end(index, END_MAX_LENGTH))
        return events

    def _end(self, index: int, reason: str) -> VadEvent:
        self.state = VadState.SILENCE
        self._silent = 0
        self._utterance_frames = 0
        self._preroll.clear()  # already sent as CONTINUE; do not send it twice
        return VadEvent(VadEventKind.END, _EMPTY, index, reason)

    def _push_preroll(self, frame: Int16Array) -> None:
        if self.config.preroll_frames > 0:
            self._preroll.append(frame)

    def _confirm_onset(self, index: int, is_playing: bool) -> list[VadEvent]:
        pre = list(self._preroll)
        frames = pre + self._onset
        first_index = index - len(frames) + 1
        audio = np.concatenate(frames).astype(np.int16, copy=False)
        self._preroll.clear()
        self._utterance_frames = len(self._onset)
        self._onset = []
        self._silent = 0
        self.state = VadState.SPEAKING
        events: list[VadEvent] = []
        if is_playing:
            events.append(VadEvent(VadEventKind.INTERRUPT, _EMPTY, index))
        events.append(VadEvent(VadEventKind.START, audio, first_index))
        return events


def make_detector(mode: str, aggressiveness: int) -> VoiceDetector:
    """The configured detector (AUDIO_VAD_MODE). Raises ValueError for one not built in.

    Silero needs onnxruntime, which the hub's install set deliberately excludes; adding it
    means a class with ``is_speech``/``reset`` that buffers 512-sample windows.
    """
    if mode == "webrtc":
        return WebRtcVoiceDetector(aggressiveness)
    raise ValueError(
        f"AUDIO_VAD_MODE={mode!r}: only 'webrtc' is available in the hub (silero needs onnxruntime)"
    )
