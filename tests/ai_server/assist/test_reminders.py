"""Reminders on a hand-moved clock: parsing task and time, said when due on the asker's device,
listed, cancelled by words, and restored after a restart."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from ai_server.assist.reminders import split_reminder
from tests.ai_server.assist.test_timers import T0, Rig


@pytest.fixture
async def rig(tmp_path: Path) -> Any:
    r = Rig(tmp_path)
    yield r
    r.close()


@pytest.mark.parametrize(("words", "task", "due"), [
    ("to take out the trash tomorrow at 8 am", "take out the trash", dt.datetime(2026, 3, 11, 8, 0)),
    ("in 20 minutes to call mum", "call mum", dt.datetime(2026, 3, 10, 14, 20)),
    ("to call mum in 20 minutes", "call mum", dt.datetime(2026, 3, 10, 14, 20)),
    ("to put the cake in the oven at 5 pm", "put the cake in the oven", dt.datetime(2026, 3, 10, 17, 0)),
    ("about the dentist on friday", "the dentist", dt.datetime(2026, 3, 13, 9, 0)),
])
def test_task_and_time_are_split(words: str, task: str, due: dt.datetime) -> None:
    parsed = split_reminder(words, T0)
    assert parsed is not None
    assert parsed[0] == task
    assert parsed[1] == due.replace(tzinfo=T0.tzinfo)


def test_no_time_is_no_reminder() -> None:
    assert split_reminder("to take out the trash", T0) is None


async def test_a_reminder_is_said_on_the_asking_device_when_due(rig: Rig) -> None:
    reply = await rig.say("NailaRemind", reminder="to take out the trash tomorrow at 8 am")
    assert reply.text == "I'll remind you to take out the trash tomorrow at 8:00."
    await rig.clock.advance((dt.datetime(2026, 3, 11, 8, 0, tzinfo=T0.tzinfo) - T0).total_seconds() - 1, step=60)
    assert rig.player.played == []
    await rig.clock.advance(1)
    assert rig.player.played == [(dt.datetime(2026, 3, 11, 8, 0, tzinfo=T0.tzinfo), "kitchen-pi",
                                  "Reminder: take out the trash.")]
    await rig.clock.advance(120)
    assert len(rig.player.played) == 1  # said once, not rung
    assert (await rig.say("NailaListReminders")).text == "You have no reminders."


async def test_remind_me_in_minutes_read_as_a_timer_command_is_a_reminder(rig: Rig) -> None:
    reply = await rig.say("HassStartTimer", minutes=20, conversation_command="remind me to call mum")
    assert reply.text == "I'll remind you to call mum at 14:20."
    assert rig.timers.timers == {}
    await rig.clock.advance(20 * 60)
    assert rig.player.played[0][2] == "Reminder: call mum."


async def test_list_and_cancel_by_voice(rig: Rig) -> None:
    await rig.say("NailaRemind", reminder="to take out the trash tomorrow at 8 am")
    await rig.say("NailaRemind", reminder="in 20 minutes to call mum")
    await rig.say("NailaRemind", reminder="to water the plants at 6 pm", device="office-pi", room="office")
    listed = await rig.say("NailaListReminders")
    assert listed.text == "You have 2 reminders: call mum at 14:20; take out the trash tomorrow at 8:00."
    assert (await rig.say("NailaCancelReminder", reminder_name="trash")).text == \
        "Cancelled the reminder to take out the trash."
    assert (await rig.say("NailaCancelReminder", reminder_name="dentist")).text == "I couldn't find that reminder."
    assert (await rig.say("NailaCancelAllReminders")).text == "Cancelled 1 reminder."
    assert (await rig.say("NailaListReminders", device="office-pi", room="office")).text.startswith(
        "You have 1 reminder: water the plants")


async def test_unclear_or_past_times_get_a_clear_answer(rig: Rig) -> None:
    assert (await rig.say("NailaRemind", reminder="to take out the trash")).text.startswith("Sorry, I couldn't tell")
    assert rig.reminders.reminders == {}


async def test_a_question_that_starts_with_remind_me_goes_to_the_llm(rig: Rig) -> None:
    """"remind me what we talked about" is a question, not a reminder without a time."""
    for words in ("what we talked about", "who wrote hamlet"):
        reply = await rig.say("NailaRemind", reminder=words)
        assert reply.handled is False, words
    assert rig.reminders.reminders == {}


async def test_reminders_survive_a_restart(tmp_path: Path) -> None:
    first = Rig(tmp_path)
    await first.say("NailaRemind", reminder="to take out the trash tomorrow at 8 am")
    first.close()
    later = Rig(tmp_path, start=dt.datetime(2026, 3, 11, 7, 0, tzinfo=T0.tzinfo))
    try:
        assert (await later.say("NailaListReminders")).text == \
            "You have 1 reminder: take out the trash at 8:00."
        await later.clock.advance(3600, step=60)
        assert later.player.played[0][2] == "Reminder: take out the trash."
    finally:
        later.close()
