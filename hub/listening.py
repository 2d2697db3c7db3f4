"""Per-device listening modes: which of the VAD's utterances go to the AI server.

* ``always``: every utterance (the hub's behaviour before listening modes existed).
* ``wake_word``: nothing until the wake word fires; then the next utterance (within
  ``armed_frames``, else the wake ends quietly), and after a reply finishes, utterances that
  start within the follow-up window. While a reply plays, only the wake word barges in (or plain
  speech when ``barge_in_plain_speech``).
* ``push_to_talk``: utterances that start while the button is held; releasing it ends the turn.

The gate is pure and runs on the VAD's frame clock (frame indices, 20 ms each), so tests
drive it frame by frame. It decides at START: an utterance whose START it passed has its
CONTINUE / END passed too; one it dropped is dropped whole. The session owns the side
effects (resetting the VAD, the earcon, control messages, INTERRUPT); the gate says what to do.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from hub.vad import VadEvent, VadEventKind
from shared.mqtt import DeviceStatus

log = logging.getLogger("naila.hub.listening")

ALWAYS: Final = "always"
WAKE_WORD: Final = "wake_word"
PUSH_TO_TALK: Final = "push_to_talk"
MODES: Final = (WAKE_WORD, ALWAYS, PUSH_TO_TALK)


def check_mode(mode: str) -> str:
    """``mode`` if it is one of MODES, else ValueError with a one-line reason."""
    if mode not in MODES:
        raise ValueError(f"listening mode {mode!r} is not one of {', '.join(MODES)}")
    return mode


class Phase(enum.Enum):
    IDLE = "idle"  # wake_word: waiting for the wake word
    ARMED = "armed"  # woke: the next utterance is a turn
    TURN = "turn"  # an utterance is going upstream
    REPLY = "reply"  # a turn ended; its reply has not finished playing
    FOLLOW_UP = "follow_up"  # the reply finished; speech without the wake word still counts


@dataclass(frozen=True)
class GateConfig:
    follow_up_frames: int = 400  # HUB_FOLLOW_UP_S
    armed_frames: int = 200  # HUB_WAKE_TIMEOUT_S: woke but nobody spoke
    reply_timeout_frames: int = 1500  # a turn whose reply never comes does not hold the window open
    barge_in_plain_speech: bool = False  # HUB_BARGE_IN_PLAIN_SPEECH


@dataclass(frozen=True)
class Wake:
    """What the session does on a wake word: reset the VAD (the wake word is not sent), earcon,
    tell the page, and, when a reply is playing, barge in."""

    barge_in: bool
    # The wake word opened an utterance that was already going upstream (plain speech in the
    # follow-up window, "Okay Nabu, stop"): the session drops that utterance (INTERRUPT) and the
    # turn starts again after the wake word, so the wake word never reaches STT.
    restart: bool = False


#: A wake word this soon after an open utterance's START restarts it; later it is part of a sentence.
RESTART_FRAMES: Final = 100  # 2 s of 20 ms frames


class ListeningGate:
    def __init__(self, mode: str, config: GateConfig) -> None:
        self.mode = check_mode(mode)
        self.config = config
        self.phase = Phase.IDLE
        self._deadline = 0  # frame index ending ARMED / REPLY / FOLLOW_UP
        self._open = False  # the current VAD utterance's START was passed
        self._started = 0  # frame index of that START
        self.pressed = False
        self.wakes = 0
        self.quiet_wakes = 0  # woke, nobody spoke

    @property
    def wants_wake_word(self) -> bool:
        """Whether the session should run the detector on this frame's audio (wake_word mode only)."""
        # Also during a turn's first seconds: a wake word there restarts the turn (see Wake.restart).
        return self.mode == WAKE_WORD

    def set_mode(self, mode: str) -> None:
        """Switch modes (config, MQTT status or the page); an utterance in flight keeps its decision."""
        if check_mode(mode) != self.mode:
            self.mode = mode
            self.phase = Phase.IDLE
            self.pressed = False

    # ----- inputs -----

    def wake(self, frame: int, playing: bool) -> Wake | None:
        """The detector fired at ``frame``. None when it does not apply (another mode, mid-turn)."""
        if self.mode != WAKE_WORD:
            return None
        restart = self._open
        if restart and frame - self._started > RESTART_FRAMES:
            return None  # deep inside a sentence: someone said the name, not a new request
        self._open = False
        self.wakes += 1
        self.phase = Phase.ARMED
        self._deadline = frame + self.config.armed_frames
        return Wake(barge_in=playing, restart=restart)

    def press(self, pressed: bool) -> bool:
        """The push-to-talk button changed. True when the session must end the open utterance now."""
        if self.mode != PUSH_TO_TALK or pressed == self.pressed:
            return False
        self.pressed = pressed
        if pressed:
            return False
        was_open, self._open = self._open, False
        return was_open

    def reply_done(self, frame: int) -> None:
        """The reply to a turn finished playing (or failed): the follow-up window opens."""
        if self.phase is Phase.REPLY:
            self.phase = Phase.FOLLOW_UP
            self._deadline = frame + self.config.follow_up_frames

    def tick(self, frame: int) -> bool:
        """Expire windows at ``frame``. True when a wake ended with nobody speaking."""
        if self.phase in (Phase.ARMED, Phase.REPLY, Phase.FOLLOW_UP) and frame >= self._deadline:
            quiet = self.phase is Phase.ARMED
            self.phase = Phase.IDLE
            if quiet:
                self.quiet_wakes += 1
            return quiet
        return False

    def allow(self, event: VadEvent, playing: bool) -> bool:
        """Whether this VAD event goes upstream (and INTERRUPT: whether it barges in)."""
        kind = event.kind
        if kind is VadEventKind.INTERRUPT or kind is VadEventKind.START:
            ok = self._may_start(playing)
            if kind is VadEventKind.START:
                self._open = ok
                self._started = event.frame_index
                if ok and self.mode == WAKE_WORD:
                    self.phase = Phase.TURN
            return ok
        if kind is VadEventKind.CONTINUE:
            return self._open
        # END
        was_open, self._open = self._open, False
        if was_open and self.mode == WAKE_WORD and self.phase is Phase.TURN:
            self.phase = Phase.REPLY
            self._deadline = event.frame_index + self.config.reply_timeout_frames
        return was_open

    def _may_start(self, playing: bool) -> bool:
        if self.mode == ALWAYS:
            return True
        if self.mode == PUSH_TO_TALK:
            return self.pressed
        if self.phase is Phase.ARMED:
            return True
        if self.phase in (Phase.REPLY, Phase.FOLLOW_UP):
            # While the reply plays, plain speech barges in only when configured; afterwards,
            # the follow-up window takes it.
            return self.config.barge_in_plain_speech or not playing
        return False


MAX_REPORTED = 10_000  # device-reported modes kept (bounded: status topics come from any device)


class ListeningModes:
    """Each device's effective mode: what the device reports (its MQTT status, or the browser page
    over the control channel) over HUB_LISTENING_MODES over HUB_LISTENING_MODE."""

    def __init__(self, default: str, per_device: dict[str, str]) -> None:
        self.default = check_mode(default)
        self.configured = {d: check_mode(m) for d, m in per_device.items()}
        self.reported: dict[str, tuple[str, str]] = {}  # device -> (mode, source)
        self._listeners: list[Callable[[str, str], None]] = []

    def mode_of(self, device_id: str) -> str:
        return self.source_of(device_id)[0]

    def source_of(self, device_id: str) -> tuple[str, str]:
        """(mode, where it came from: status / page / config / default)."""
        if device_id in self.reported:
            return self.reported[device_id]
        if device_id in self.configured:
            return self.configured[device_id], "config"
        return self.default, "default"

    def report(self, device_id: str, mode: str, source: str) -> None:
        """The device chose ``mode`` (ValueError if it is not one); live sessions follow."""
        check_mode(mode)
        if self.reported.get(device_id) == (mode, source):
            return
        self.reported.pop(device_id, None)
        if len(self.reported) >= MAX_REPORTED:
            del self.reported[next(iter(self.reported))]
        self.reported[device_id] = (mode, source)
        log.info("device %s listens in %s mode (%s)", device_id, mode, source)
        for listener in self._listeners:
            listener(device_id, mode)

    def on_change(self, listener: Callable[[str, str], None]) -> None:
        self._listeners.append(listener)

    def on_status(self, status: DeviceStatus) -> None:
        """hub.device_status listener: the status's listening_mode (DEVICE_LISTENING_MODE)."""
        if status.listening_mode:
            self.report(status.device_id, status.listening_mode, "status")
