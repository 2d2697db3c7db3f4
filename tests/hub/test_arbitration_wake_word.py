"""The wake word and arbitration inside the hub's device sessions (fake AI link, real Arbiter).

tests/e2e/test_wake_word_e2e.py has two devices say the same question at about the same moment,
only one with the wake word first. These pin down what arbitration does there: the device that
did not hear the wake word never claims (its START does not pass the gate), so it cannot stand
the woken one down; and where it does claim (it listens always), the woken device still answers.
"""

from __future__ import annotations

import numpy as np
import pytest
from aiortc import RTCPeerConnection

from hub.listening import ALWAYS, WAKE_WORD, ListeningModes
from hub.session import DeviceSession
from shared.contract import pb
from tests.hub.test_session_arbitration import ArbitratedHost, envelope, play, sent

pytestmark = pytest.mark.unit


class WakeAt:
    """A wake-word detector that fires on one frame (the real one is covered in tests/hub/test_listening*.py)."""

    model = "test"

    def __init__(self, frame: int) -> None:
        self.frame = frame
        self.seen = 0

    def process(self, frame: np.ndarray) -> bool:
        self.seen += 1
        return self.seen == self.frame

    def close(self) -> None:
        pass


def sessions(host: ArbitratedHost, modes: dict[str, str]) -> dict[str, DeviceSession]:
    host.listening_modes = ListeningModes(WAKE_WORD, modes)  # type: ignore[attr-defined]
    return {d: DeviceSession(d, RTCPeerConnection(), host) for d in ("kitchen-pi", "living-pi")}  # type: ignore[arg-type]


async def test_a_device_without_the_wake_word_never_claims_so_the_woken_one_answers() -> None:
    host = ArbitratedHost()
    s = sessions(host, {})
    try:
        s["kitchen-pi"]._wake = WakeAt(10)  # type: ignore[assignment]  # "Okay Nabu" just before the question
        env = envelope(2)
        # The living room hears the same question louder: without the wake word it goes nowhere.
        play({s["kitchen-pi"]: (env, 0.3), s["living-pi"]: (env, 1.0)})
        kitchen = sent(host, "kitchen-pi")
        assert kitchen[0] == pb.START and kitchen[-1] == pb.END and kitchen.count(pb.START) == 1
        assert sent(host, "living-pi") == []
        assert host.metrics.arbitration == {"won": 1}  # nothing stood down
        assert host.metrics.utterances_ignored[WAKE_WORD] == 1
    finally:
        for session in s.values():
            await session.close("test")


async def test_the_woken_device_answers_even_when_an_always_listening_one_hears_it_louder() -> None:
    host = ArbitratedHost()
    s = sessions(host, {"living-pi": ALWAYS})
    try:
        s["kitchen-pi"]._wake = WakeAt(10)  # type: ignore[assignment]
        # play() replaces the room's noise with the speech: keep the quiet copy's pauses above it.
        env = [max(a, 300.0) for a in envelope(3)]
        play({s["kitchen-pi"]: (env, 0.3), s["living-pi"]: (env, 1.0)})
        assert sent(host, "kitchen-pi").count(pb.START) == 1
        assert sent(host, "living-pi") == []
        assert host.metrics.arbitration == {"won": 1, "lost": 1}
    finally:
        for session in s.values():
            await session.close("test")
