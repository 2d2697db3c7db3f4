"""Voice activity state machine: turns 20 ms frames into START / CONTINUE / END / INTERRUPT.

Silence -> MaybeSpeech -> Speaking -> MaybeSilence -> Silence, as in the streaming spec.

The machine is pure: no asyncio, no wall clock. Time is the frame count (each frame is
``frame_ms`` long), so tests drive it frame by frame and production feeds it frames as they
arrive. What counts as "voiced" comes from a pluggable :class:`VoiceDetector` (webrtcvad or
Silero, :data:`VAD_ENGINES`).

When a pause ends a turn: without a model, ``hangover_frames`` of silence. With ``check_frames``
set (an end-of-turn model, hub/end_of_turn.py), the machine asks a question after that many
silent frames: it hands out a :class:`TurnCheck` (the utterance's recent audio) through
:meth:`VadStateMachine.take_check`; the caller runs the model elsewhere and later feeds its
P(complete) back with :meth:`VadStateMachine.verdict`. The answer sets how long this pause may
last (:meth:`VadConfig.tier`): P >= ``end_threshold`` ends the turn at once, P >=
``hangover_threshold`` after the ordinary hangover, anything lower (or no answer yet) only after
``fallback_frames``. Confident answers save the hangover; doubtful ones cost no cut-off that the
plain hangover would not have made; only "incomplete" waits for the long fallback. The verdict's
late arrival is explicit, so tests drive it frame by frame like the rest.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from shared.audio import Int16Array
from shared.config import HubSettings
from shared.registry import Registry


class VoiceDetector(Protocol):
    """Decides whether one frame (16 kHz mono int16, 20 ms) contains speech."""

    def is_speech(self, frame: Int16Array) -> bool: ...

    def reset(self) -> None:
        """Forget any state carried between frames (a new session)."""
        ...


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
END_MODEL = "model"  # the end-of-turn model judged the turn complete before the hangover ran out
END_MAX_LENGTH = "max_length"  # HUB_MAX_UTTERANCE_S of speech without a pause long enough to end the turn

# What an end-of-turn verdict does to the pause (VadConfig.tier); also the hub's metric labels.
TIER_END = "complete"  # confident: END at once
TIER_HANGOVER = "likely"  # END after the ordinary hangover
TIER_FALLBACK = "incomplete"  # END only after the long fallback, unless speech resumes


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
    check_frames: int = 0  # 0 = silence alone ends a turn; else ask the end-of-turn model after this many
    check_window_frames: int = 400  # the utterance audio a check carries: its last 8 s (Smart Turn's input)
    # With a model: the silence that ends a turn the model doubts (or has not judged yet); 0 = the hangover.
    fallback_frames: int = 0
    end_threshold: float = 0.5  # P(complete) that ends the turn as soon as the verdict arrives
    hangover_threshold: float = 0.5  # P(complete) that ends it after hangover_frames (>= end_threshold: no such tier)

    @property
    def longest_pause_frames(self) -> int:
        """Silence that ends a turn whatever the model says (before its verdict, or when it doubts)."""
        return max(self.hangover_frames, self.fallback_frames) if self.check_frames else self.hangover_frames

    def tier(self, probability: float) -> str:
        """What a verdict of P(complete) = ``probability`` does: TIER_END, TIER_HANGOVER or TIER_FALLBACK."""
        if probability >= self.end_threshold:
            return TIER_END
        if probability >= self.hangover_threshold:
            return TIER_HANGOVER
        return TIER_FALLBACK

    def pause_limit(self, probability: float) -> int:
        """Silent frames that end the turn after a verdict of ``probability`` (0 = at once)."""
        tier = self.tier(probability)
        return 0 if tier == TIER_END else self.hangover_frames if tier == TIER_HANGOVER else self.longest_pause_frames

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
        check_ms: int = 0,
        fallback_ms: int = 0,
        end_threshold: float = 0.5,
        hangover_threshold: float = 0.5,
    ) -> VadConfig:
        return cls(
            onset_frames=max(1, onset_frames),
            hangover_frames=max(1, -(-hangover_ms // frame_ms)),
            preroll_frames=max(0, preroll_ms // frame_ms),
            barge_in_frames=max(1, barge_in_frames),
            frame_samples=sample_rate * frame_ms // 1000,
            frame_ms=frame_ms,
            max_utterance_frames=max(0, round(max_utterance_ms / frame_ms)),
            check_frames=max(0, -(-check_ms // frame_ms)),
            fallback_frames=max(0, -(-fallback_ms // frame_ms)),
            end_threshold=end_threshold,
            hangover_threshold=hangover_threshold,
        )


@dataclass(frozen=True, eq=False)
class TurnCheck:
    """A question for the end-of-turn model: is the turn over, given the utterance so far?

    ``audio`` ends with the pause's first ``check_frames`` silent frames; ``frame_index`` is the
    frame that raised the question. Compared by identity: a verdict answers one check only.
    """

    audio: Int16Array
    frame_index: int


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

    def __init__(self, detector: VoiceDetector, config: VadConfig) -> None:
        self.detector = detector
        self.config = config
        self.state = VadState.SILENCE
        self._preroll: deque[Int16Array] = deque(maxlen=max(1, config.preroll_frames))
        self._onset: list[Int16Array] = []
        self._silent = 0
        self._index = 0  # frames fed so far
        self._utterance_frames = 0  # frames sent in the open utterance (onset + CONTINUE)
        # End-of-turn checks: the open utterance's recent audio, the check not yet taken by the
        # caller, and the one whose verdict would still count (cleared when speech resumes).
        self._heard: deque[Int16Array] = deque(maxlen=max(1, config.check_window_frames))
        self._new_check: TurnCheck | None = None
        self._asked: TurnCheck | None = None
        self._limit = config.longest_pause_frames  # silent frames that end this pause (a verdict may lower it)

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
        self._forget_checks()
        self.detector.reset()

    def take_check(self) -> TurnCheck | None:
        """The end-of-turn question the last :meth:`process` raised, once (None if none)."""
        check, self._new_check = self._new_check, None
        return check

    def is_current(self, check: TurnCheck) -> bool:
        """Whether a verdict on ``check`` would still count (same pause, turn not ended)."""
        return check is self._asked

    def verdict(self, check: TurnCheck, probability: float) -> list[VadEvent]:
        """The model's P(complete) for ``check``, if it is still the same pause: END now when the
        pause has already lasted as long as that answer allows (:meth:`VadConfig.pause_limit`),
        else the pause's new limit. Nothing if stale (speech resumed, the turn already ended, or
        the machine was reset)."""
        if check is not self._asked:
            return []
        self._asked = None
        self._limit = min(self._limit, self.config.pause_limit(probability))
        if self._silent >= self._limit:
            return [self._end(self._index - 1, END_MODEL)]
        return []

    def _forget_checks(self) -> None:
        self._heard.clear()
        self._new_check = None
        self._asked = None
        self._limit = self.config.longest_pause_frames

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
        checking = self.config.check_frames > 0
        if checking:
            self._heard.append(frame)
        if voiced:
            self._silent = 0
            self.state = VadState.SPEAKING
            self._asked = self._new_check = None  # the speaker went on: an answer about that pause is stale
            self._limit = self.config.longest_pause_frames
        else:
            self._silent += 1
            self.state = VadState.MAYBE_SILENCE
            if self._silent >= self._limit:
                # The hangover (no model, or the model's "likely" verdict) or the fallback.
                events.append(self._end(index, END_SILENCE))
                return events
            if checking and self._silent == self.config.check_frames:
                check = TurnCheck(np.concatenate(self._heard), index)
                self._new_check = self._asked = check
        if cap and self._utterance_frames >= cap:
            events.append(self._end(index, END_MAX_LENGTH))
        return events

    def _end(self, index: int, reason: str) -> VadEvent:
        self.state = VadState.SILENCE
        self._silent = 0
        self._utterance_frames = 0
        self._forget_checks()
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
        if self.config.check_frames > 0:
            self._heard.clear()
            self._heard.extend(frames)
        self._onset = []
        self._silent = 0
        self.state = VadState.SPEAKING
        events: list[VadEvent] = []
        if is_playing:
            events.append(VadEvent(VadEventKind.INTERRUPT, _EMPTY, index))
        events.append(VadEvent(VadEventKind.START, audio, first_index))
        return events


#: AUDIO_VAD_MODE -> a factory of one stream's detector (each session gets its own: detectors keep state).
VAD_ENGINES: Registry[[HubSettings], VoiceDetector] = Registry("VAD")


@VAD_ENGINES.register("webrtc")
def _webrtc(settings: HubSettings) -> VoiceDetector:
    return WebRtcVoiceDetector(settings.hub_vad_aggressiveness)


@VAD_ENGINES.register("silero")
def _silero(settings: HubSettings) -> VoiceDetector:
    from hub.silero import SileroVoiceDetector  # onnxruntime is loaded only when chosen

    return SileroVoiceDetector(settings.hub_model_dir)


def make_detector(mode: str, settings: HubSettings) -> VoiceDetector:
    """The configured detector (AUDIO_VAD_MODE). Raises ValueError (one line) for an unknown
    engine or a missing model file."""
    return VAD_ENGINES.build(mode, settings)
