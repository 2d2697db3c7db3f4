"""A timer end to end on the real stack: mosquitto, the hub (wake_word mode), the AI server with its
real Whisper and piper; the device is a real DeviceAgent with a memory sound card.

The device says "Okay Nabu. Set a timer for three seconds." (piper voice), hears the confirmation,
and about three seconds later its speaker plays the alarm chime (its two tones found by FFT) and
the timer's name; the ring ends by itself after ASSIST_RING_MAX_S, or earlier on "Okay Nabu. Stop."
"""

from __future__ import annotations

import asyncio
import time

import pytest

from ai_server.stt import WhisperSTT
from naila.harness import SimDevice, chime_starts, start_device
from naila.stack import Stack
from shared.audio import resample

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(600)]

STACK_LISTENING_MODE = "wake_word"  # read by tests/e2e/conftest.py's stack fixture
RING_MAX_S = 12.0
STACK_ENV = {"ASSIST_RING_MAX_S": str(RING_MAX_S), "ASSIST_RING_PAUSE_S": "1"}
SET_TIMER = "Set a timer for three seconds."
HUB_RATE = 16_000
# A person waits for the earcon after the wake word. With 0.5 or 1.0 s the hub cut the command's start
# ("Set a timer" -> "that timer", no intent) although the detector fires 80 ms after the wake word: open bug.
WAKE_PAUSE_S = 2.0


async def wait_chime(dev: SimDevice, since: float, within_s: float) -> float:
    """When (time.monotonic) the chime started on the device's speaker after ``since``."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        audio = dev.speaker_audio(since)
        starts = await asyncio.to_thread(chime_starts, audio, dev.backend.rate)
        if starts:
            return since + starts[0]
        await asyncio.sleep(0.25)
    raise TimeoutError(f"no alarm chime on {dev.device_id}'s speaker within {within_s:.0f}s")


async def set_timer(dev: SimDevice) -> tuple[float, float]:
    """Say the command; returns (end of speech, when the confirmation stopped playing)."""
    before = len(dev.turns())
    _, end = dev.say(SET_TIMER, voice="piper", wake_word=True, wake_pause_s=WAKE_PAUSE_S, delay_s=1.0)
    turn = await dev.wait_turn(before, 60)
    assert "timer" in turn["transcript"].lower() and "nabu" not in turn["transcript"].lower(), turn
    assert "set for 3 seconds" in turn["reply_text"].lower(), turn
    confirmed = await dev.wait_speaker_quiet(end, quiet_s=0.3, within_s=10)
    assert confirmed is not None, "the confirmation was never played"
    return end, confirmed


async def test_a_timer_rings_on_the_device_then_stops_at_the_max(stack: Stack, whisper: WhisperSTT) -> None:
    dev = await start_device("e2e-timer", stack.hub_url)
    try:
        end, confirmed = await set_timer(dev)
        # The confirmation itself is speech only: no chime in it.
        assert not chime_starts(dev.speaker_audio(end, confirmed), dev.backend.rate)
        rang = await wait_chime(dev, confirmed, 15)
        # The timer starts when the command is understood (before the end of the confirmation),
        # and the chime's detection may be up to half a window early.
        assert 2.0 <= rang - end <= 3.0 + 3.0, f"rang {rang - end:.2f}s after the command"
        stopped = await dev.wait_speaker_quiet(rang, quiet_s=3.0, within_s=RING_MAX_S + 15)
        assert stopped is not None
        heard = await whisper.transcribe(resample(dev.speaker_audio(rang, stopped), dev.backend.rate, HUB_RATE))
        assert "timer" in heard.lower() and "done" in heard.lower(), heard
        rings = chime_starts(dev.speaker_audio(rang - 0.5, stopped), dev.backend.rate)
        # One cycle is the chime, the words and a pause: it rang again and again, then stopped.
        assert len(rings) >= 2, rings
        assert stopped - rang <= RING_MAX_S + 6.0, f"still ringing {stopped - rang:.1f}s after the first chime"
        print(f"\ntimer: confirmed {confirmed - end:.2f}s after the command, rang {rang - end:.2f}s after it; "
              f"{len(rings)} chimes, quiet {stopped - rang:.1f}s after the first (max {RING_MAX_S:.0f}s); "
              f"heard {heard!r}")
    finally:
        await dev.stop()


async def test_saying_stop_ends_the_ring_early(stack: Stack) -> None:
    dev = await start_device("e2e-timer-stop", stack.hub_url)
    try:
        _, confirmed = await set_timer(dev)
        rang = await wait_chime(dev, confirmed, 15)
        await asyncio.sleep(1.0)
        _, said = dev.say("Stop.", voice="piper", wake_word=True, wake_pause_s=WAKE_PAUSE_S)
        stopped = await dev.wait_speaker_quiet(said, quiet_s=3.0, within_s=RING_MAX_S + 15)
        assert stopped is not None
        assert stopped - rang < RING_MAX_S - 3.0, f"rang {stopped - rang:.1f}s: 'stop' did not end it"
        assert not chime_starts(dev.speaker_audio(said + 0.5), dev.backend.rate), "it rang again after 'stop'"
        print(f"\nstop: the ring ended {stopped - said:.2f}s after 'stop' ({stopped - rang:.1f}s after the chime)")
    finally:
        await dev.stop()
