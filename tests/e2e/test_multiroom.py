"""Several real devices (aiortc, echo-cancelled memory sound cards) hear one person: one answer.

Real stack: mosquitto, the AI server with the shipped models and the hub as processes. The
kitchen device hears the question at full level; the hall device hears the same speech 14 dB
quieter and 40 ms later, as a device in the next room would. Exactly one turn must follow,
on the kitchen device, and the hall device must be told to stand down (counted by the hub).
Two different questions on two devices at once are both answered: that case is
test_voice_e2e.py::test_two_devices_have_independent_conversations, run with arbitration on.
"""

from __future__ import annotations

import asyncio
import re
import time

import pytest

from naila.harness import start_device
from naila.stack import Stack, hub_read

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def arbitration_counts(hub_url: str) -> dict[str, float]:
    text = hub_read(hub_url, "/metrics").decode()
    return {m.group(1): float(m.group(2))
            for m in re.finditer(r'^naila_hub_arbitration_total\{outcome="(\w+)"\} ([0-9.e+]+)$', text, re.MULTILINE)}


async def test_one_question_heard_in_two_rooms_is_answered_once_by_the_nearer_device(stack: Stack) -> None:
    kitchen = await start_device("mr-kitchen", stack.hub_url)
    hall = await start_device("mr-hall", stack.hub_url)
    try:
        before = arbitration_counts(stack.hub_url)
        k0, h0 = len(kitchen.turns()), len(hall.turns())
        question = "How many legs does a spider have?"
        kitchen.say(question)
        hall.say(question, gain_db=-14.0, delay_s=0.04)
        turn = await kitchen.wait_turn(k0, within_s=90)
        assert "spider" in turn["transcript"].lower() or "legs" in turn["transcript"].lower(), turn
        deadline = time.monotonic() + 5.0  # a second answer would have come by now
        while time.monotonic() < deadline:
            assert len(hall.turns()) == h0, f"the hall device answered too: {hall.turns()[h0:]}"
            await asyncio.sleep(0.2)
        after = arbitration_counts(stack.hub_url)
        assert after.get("lost", 0) - before.get("lost", 0) >= 1, after
        assert after.get("won", 0) - before.get("won", 0) >= 1, after
    finally:
        await asyncio.gather(kitchen.stop(), hall.stop())
