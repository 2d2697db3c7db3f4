"""Timers on a hand-moved clock: they ring after exactly their time, pause/resume/add/remove
arithmetic, stop and barge-in end the ringing, and a restart restores them from the store file.
The one fake is the player (what would reach a device); everything else is the real code."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from ai_server.assist import reminders as reminders_mod
from ai_server.assist import timers as timers_mod
from ai_server.assist.clock import ManualClock
from ai_server.assist.core import AssistContext, AssistReply, AssistServices, IntentMatch, IntentRegistry
from ai_server.assist.ringing import Unreachable
from ai_server.assist.timers import Timers, say_duration
from ai_server.store.timers import AlarmStore

ZONE = ZoneInfo("Europe/Berlin")
T0 = dt.datetime(2026, 3, 10, 14, 0, tzinfo=ZONE)
SPOKEN_S = 2.0  # how long the fake device takes to play one ring (chime + words)


class FakePlayer:
    """Records what would be played; each play holds for SPOKEN_S on the test's clock."""

    def __init__(self) -> None:
        self.played: list[tuple[dt.datetime, str, str]] = []
        self.tasks: list[asyncio.Task[None]] = []
        self.unreachable: set[str] = set()
        self.clock: ManualClock | None = None

    def play(self, target: str, text: str, *, sound: bool, hold: Callable[[float], Awaitable[None]]
             ) -> list[asyncio.Task[None]]:
        if target in self.unreachable:
            raise Unreachable(f"no hub stream carries device {target}")
        assert self.clock is not None and sound
        self.played.append((self.clock.now(), target, text))
        task = asyncio.get_running_loop().create_task(hold(SPOKEN_S))
        self.tasks.append(task)
        return [task]


class Rig:
    def __init__(self, tmp: Path, start: dt.datetime = T0) -> None:
        self.clock = ManualClock(start)
        self.player = FakePlayer()
        self.player.clock = self.clock
        self.registry = IntentRegistry()
        self.services = AssistServices(self.registry, self.clock.now, str(tmp))
        self.timers: Timers = timers_mod.install(self.services, player=self.player, clock=self.clock.clock)
        self.reminders = reminders_mod.install(self.services, timers=self.timers)

    def ctx(self, device: str = "kitchen-pi", room: str = "kitchen") -> AssistContext:
        return AssistContext(now=self.clock.now(), device_id=device, room=room)

    async def say(self, intent: str, device: str = "kitchen-pi", room: str = "kitchen", **slots: Any) -> AssistReply:
        reply = await self.registry.handle(IntentMatch(intent, slots), self.ctx(device, room))
        assert reply is not None
        return reply

    def close(self) -> None:
        self.timers.close()
        self.reminders.close()
        assert self.timers.store is not None
        self.timers.store.close()


@pytest.fixture
async def rig(tmp_path: Path) -> Any:
    r = Rig(tmp_path)
    yield r
    r.close()


def test_durations_are_said_in_words() -> None:
    assert say_duration(600) == "10 minutes"
    assert say_duration(5400) == "1 hour and 30 minutes"
    assert say_duration(3725) == "1 hour, 2 minutes and 5 seconds"
    assert say_duration(1) == "1 second"


async def test_a_ten_minute_timer_rings_after_exactly_ten_minutes(rig: Rig) -> None:
    reply = await rig.say("HassStartTimer", minutes=10)
    assert reply.text == "Timer set for 10 minutes."
    await rig.clock.advance(599.5)
    assert rig.player.played == []
    await rig.clock.advance(0.5)
    assert rig.player.played == [(T0 + dt.timedelta(minutes=10), "kitchen-pi", "Your 10 minute timer is done.")]


async def test_a_named_timer_answers_and_rings_with_its_name(rig: Rig) -> None:
    reply = await rig.say("HassStartTimer", name="Pasta", minutes=8)
    assert reply.text == "Pasta timer set for 8 minutes."
    await rig.clock.advance(180)
    status = await rig.say("HassTimerStatus", name="pasta")
    assert status.text == "5 minutes left on the pasta timer."
    await rig.clock.advance(300)
    assert rig.player.played[0][2] == "Your pasta timer is done."


@pytest.mark.parametrize("slots", [{"minutes": 10}, {"name": "the Pasta timer", "minutes": 8},
                                   {"hours": 1, "minutes": 30}, {"seconds": 45}])
async def test_the_start_preview_is_what_setting_the_timer_says_and_sets_nothing(rig: Rig, slots: Any) -> None:
    """Issue 20: the pipeline synthesises the preview while END is awaited, so it must be the
    sentence the handler says, and computing it must not set a timer."""
    match = IntentMatch("HassStartTimer", slots)
    preview = rig.registry.preview(match, rig.ctx())
    assert preview is not None and rig.timers.timers == {}
    assert (await rig.say("HassStartTimer", **slots)).text == preview


async def test_no_preview_where_the_timer_would_not_be_set(rig: Rig) -> None:
    for slots in ({"hours": 25}, {"minutes": 0}, {"minutes": 5, "conversation_command": "turn off the lights"}):
        assert rig.registry.preview(IntentMatch("HassStartTimer", slots), rig.ctx()) is None, slots
    assert rig.registry.preview(IntentMatch("HassCancelTimer", {}), rig.ctx()) is None


async def test_ringing_repeats_with_pauses_until_the_ring_limit(rig: Rig) -> None:
    await rig.say("HassStartTimer", seconds=3)
    await rig.clock.advance(3 + 60 + 10)
    starts = [t for t, _, _ in rig.player.played]
    # Every cycle: 2 s of sound then 2 s of quiet (ASSIST_RING_PAUSE_S), within 60 s (ASSIST_RING_MAX_S).
    assert len(starts) == 15
    assert all((b - a).total_seconds() == pytest.approx(4.0) for a, b in itertools.pairwise(starts))
    assert (starts[-1] - starts[0]).total_seconds() < 60
    assert rig.timers.ringer.rings == {}
    assert rig.timers.ringer.ended[-1].why == "max"


async def test_stop_from_the_device_or_its_room_ends_the_ringing(rig: Rig) -> None:
    await rig.say("HassStartTimer", seconds=3)
    await rig.clock.advance(10)
    rung = len(rig.player.played)
    assert rung >= 2
    other_room = await rig.say("NailaStop", device="office-pi", room="office")
    assert other_room.text == "Nothing is ringing."
    reply = await rig.say("NailaStop", device="hall-pi", room="kitchen")  # another device in the same room
    assert reply.text == "Stopped."
    await rig.clock.advance(30)
    assert len(rig.player.played) == rung
    assert rig.timers.ringer.ended[-1].why == "stopped"


async def test_stop_the_timer_while_it_rings_stops_it(rig: Rig) -> None:
    await rig.say("HassStartTimer", seconds=3)
    await rig.clock.advance(5)
    reply = await rig.say("HassCancelTimer")
    assert reply.text == "Stopped."


async def test_a_barge_in_on_the_device_ends_the_ringing(rig: Rig) -> None:
    await rig.say("HassStartTimer", seconds=3)
    await rig.clock.advance(3.5)
    assert len(rig.player.played) == 1
    rig.player.tasks[-1].cancel()  # what the hub's INTERRUPT does to the ring's turn
    await rig.clock.advance(2)
    # "Okay Nabu" barged in and silenced it; the "stop" that follows is answered as done.
    assert (await rig.say("NailaStop")).text == "Stopped."
    await rig.clock.advance(20)
    assert len(rig.player.played) == 1
    assert rig.timers.ringer.ended[-1].why == "barge-in"
    assert (await rig.say("NailaStop")).text == "Nothing is ringing."


async def test_pause_resume_add_and_remove_time(rig: Rig) -> None:
    await rig.say("HassStartTimer", name="eggs", minutes=10)
    await rig.clock.advance(120)
    assert (await rig.say("HassPauseTimer")).text == "Eggs timer paused with 8 minutes left."
    await rig.clock.advance(3600)  # paused: nothing rings, nothing moves
    assert rig.player.played == []
    assert (await rig.say("HassTimerStatus")).text == "8 minutes left on the eggs timer (paused)."
    assert (await rig.say("HassUnpauseTimer")).text == "Eggs timer resumed with 8 minutes left."
    reply = await rig.say("HassIncreaseTimer", minutes=2)
    assert reply.text == "Added 2 minutes to the eggs timer; 10 minutes left."
    reply = await rig.say("HassDecreaseTimer", minutes=5, seconds=30)
    assert reply.text == "Removed 5 minutes and 30 seconds from the eggs timer; 4 minutes and 30 seconds left."
    resumed_at = rig.clock.now()
    await rig.clock.advance(269)
    assert rig.player.played == []
    await rig.clock.advance(1)
    assert rig.player.played[0][0] == resumed_at + dt.timedelta(seconds=270)


async def test_cancel_which_timer_and_cancel_all(rig: Rig) -> None:
    await rig.say("HassStartTimer", name="pasta", minutes=8)
    await rig.say("HassStartTimer", minutes=10)
    await rig.say("HassStartTimer", minutes=5, device="office-pi", room="office")
    assert (await rig.say("HassCancelTimer")).text == "Which one? You have a pasta timer and a 10 minute timer."
    assert (await rig.say("HassCancelTimer", start_minutes=10)).text == "10 minute timer cancelled."
    assert (await rig.say("HassCancelTimer", name="rice")).text == "There is no rice timer."
    assert (await rig.say("HassCancelAllTimers")).text == "Timer cancelled."
    # The office's timer is the office's.
    assert (await rig.say("HassTimerStatus", device="office-pi", room="office")).text == \
        "5 minutes left on the 5 minute timer."
    await rig.clock.advance(600)
    assert {p[1] for p in rig.player.played} == {"office-pi"}


async def test_bad_durations_get_a_clear_answer(rig: Rig) -> None:
    assert (await rig.say("HassStartTimer")).text == "How long should the timer be?"
    assert (await rig.say("HassStartTimer", hours=30)).text == "Timers can be at most 24 hours long."
    assert "couldn't understand" in (await rig.say("HassStartTimer", minutes="lots")).text
    assert rig.timers.timers == {}


async def test_an_unreachable_device_is_retried_then_its_room_rings(rig: Rig) -> None:
    rig.player.unreachable.add("kitchen-pi")
    await rig.say("HassStartTimer", seconds=3)
    await rig.clock.advance(3.1)
    # The device's stream is gone: the ring goes to its room's speakers instead.
    assert rig.player.played[0][1] == "kitchen"


async def test_timers_survive_a_restart(tmp_path: Path) -> None:
    first = Rig(tmp_path)
    await first.say("HassStartTimer", name="pasta", minutes=8)
    await first.say("HassStartTimer", minutes=30)
    await first.say("HassStartTimer", name="bread", minutes=20)
    await first.say("HassPauseTimer", name="bread")
    await first.clock.advance(60)
    first.close()  # the AI server stops; 10 minutes later it starts again
    later = Rig(tmp_path, start=T0 + dt.timedelta(minutes=11))
    try:
        await later.clock.settle()
        # The pasta timer fell due 3 minutes ago (< ASSIST_TIMER_MISSED_S): it rings at once.
        assert later.player.played[0][1:] == ("kitchen-pi", "Your pasta timer is done.")
        status = await later.say("HassTimerStatus")
        assert status.text == "19 minutes left on the 30 minute timer; 20 minutes left on the bread timer (paused)."
        await later.clock.advance(19 * 60)
        assert later.player.played[-1][2] == "Your 30 minute timer is done."
    finally:
        later.close()
    # Much later, a timer is reported missed instead of ringing.
    third = Rig(tmp_path, start=T0 + dt.timedelta(hours=5))
    try:
        await third.say("HassUnpauseTimer", name="bread")
        third.close()
        fourth = Rig(tmp_path, start=T0 + dt.timedelta(hours=6))
        await fourth.clock.settle()
        assert fourth.player.played == []
        status = await fourth.say("HassTimerStatus")
        assert status.text == "Your bread timer ended at 19:20 while I was offline. There are no timers running."
        fourth.close()
    finally:
        third.timers.close()


async def test_the_store_file_holds_absolute_due_times(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    try:
        await rig.say("HassStartTimer", name="tea", minutes=4)
        rows = AlarmStore(tmp_path).timers()
        assert [(r.name, r.due) for r in rows] == [("tea", T0 + dt.timedelta(minutes=4))]
    finally:
        rig.close()


def test_the_chime_is_two_clear_tones() -> None:
    import numpy as np

    from ai_server.assist.sounds import CHIME_TONES_HZ, chime, seconds

    rate = 22050
    pcm = np.frombuffer(chime(rate), dtype="<i2").astype(float)
    assert 1.0 < seconds(chime(rate), rate) < 2.0
    spectrum = np.abs(np.fft.rfft(pcm))
    freqs = np.fft.rfftfreq(pcm.size, 1 / rate)
    top = {round(float(f), -1) for f in freqs[np.argsort(spectrum)[-40:]]}
    assert all(any(abs(t - f) < 15 for t in top) for f in CHIME_TONES_HZ)
    assert np.abs(pcm).max() < 32767 * 0.6  # no clipping, not a fire alarm
