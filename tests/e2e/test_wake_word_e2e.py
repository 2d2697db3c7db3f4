"""The wake word on the real stack: mosquitto, the hub (wake_word mode), the AI server with its
real Whisper, LLM and piper; devices are real DeviceAgents with a memory sound card.

One device says "Okay Nabu, how many legs does a spider have?" and gets the answer out loud; a
second device says the same question without the wake word and gets nothing.
"""

from __future__ import annotations

import asyncio

import pytest

from naila.harness import start_device
from naila.stack import Stack, hub_read

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(600)]

STACK_LISTENING_MODE = "wake_word"  # read by tests/e2e/conftest.py's stack fixture
QUESTION = "How many legs does a spider have?"


def labelled(hub_url: str, metric: str, label: str) -> float:
    """One labelled naila_hub_* counter from /metrics (0 when absent)."""
    for line in hub_read(hub_url, "/metrics").decode().splitlines():
        if line.startswith(f"naila_hub_{metric}_total{{") and label in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_only_the_device_that_said_the_wake_word_is_answered(stack: Stack) -> None:
    woken = await start_device("e2e-wake", stack.hub_url)
    plain = await start_device("e2e-plain", stack.hub_url)
    try:
        before = len(woken.turns())
        plain.say(QUESTION, voice="piper")
        start, _ = woken.say(QUESTION, voice="piper", wake_word=True)
        try:
            turn = await woken.wait_turn(before, 120)
        except TimeoutError:
            # Arbitration cannot be it (the plain device never claims in wake_word mode, and a woken
            # claim never loses to a plain one: tests/hub/test_arbitration_wake_word.py): say which
            # step the turn stopped at instead.
            heard = labelled(stack.hub_url, "wake_words", 'outcome="heard"')
            lost = labelled(stack.hub_url, "arbitration", 'outcome="lost"')
            ignored = labelled(stack.hub_url, "utterances_ignored", 'mode="wake_word"')
            pytest.fail(f"no turn for the woken device: wake words heard {heard:.0f}, arbitration "
                        f"stand-downs {lost:.0f}, utterances ignored {ignored:.0f}")
        assert "spider" in turn["transcript"].lower(), turn
        assert "nabu" not in turn["transcript"].lower(), "the wake word went to the AI server"
        assert turn["reply_text"].strip(), turn
        await woken.wait_speaker_quiet(start)
        assert woken.speaker_audio(start).size > 0
        await asyncio.sleep(2.0)  # the plain device's question is long over: still nothing
        assert plain.turns() == [], "speech without the wake word started a turn"
        assert labelled(stack.hub_url, "wake_words", 'outcome="heard"') >= 1
        assert labelled(stack.hub_url, "utterances_ignored", 'mode="wake_word"') >= 1
    finally:
        await asyncio.gather(woken.stop(), plain.stop())
