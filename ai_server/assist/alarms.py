"""Timers and reminders together, as the composition root installs them (ai_server/assembly.py).

They share one clock, one store connection and one :class:`~ai_server.assist.ringing.Ringer`
(one device rings for one thing at a time per key, and "stop" silences both).

The dashboard (issue 24) reads them as one list (:meth:`Alarms.board`: what runs, what is paused,
what rings), learns of every change through :class:`AlarmChanges` (a version number to wait on,
not a poll) and cancels one by id (:meth:`Alarms.cancel`: a ringing one stops ringing).

Several AI servers (issue 21): each server's board lists only the alarms it owns, so the hub's merged
list (hub/web/household.py) has each alarm once; :meth:`Alarms.cancel` also cancels one another server
owns (through :class:`RemoteAlarms`, the replica's mirror), so the dashboard's Cancel works on any server.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol

from ai_server.assist import reminders as reminders_mod
from ai_server.assist import timers as timers_mod
from ai_server.assist.core import AssistServices
from ai_server.assist.ringing import StreamPlayer

if TYPE_CHECKING:
    from ai_server.control.speech import Speaker
    from ai_server.pipeline import Pipeline
    from ai_server.session import ConversationSession


#: A ring's key is the timer's id, or "reminder-" and the reminder's id (ai_server/assist/reminders.py).
REMINDER_RING: str = "reminder-"

AlarmKind = Literal["timer", "reminder"]


class AlarmChanges:
    """A change counter: every change of a timer, reminder or ring bumps :attr:`version` and wakes
    the waiters (the dashboard's WatchTimers streams). Called from the event loop only."""

    def __init__(self) -> None:
        self.version = 0
        self._changed = asyncio.Event()

    def __call__(self) -> None:
        self.version += 1
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def wait(self, seen: int) -> int:
        """Return the version once it is past ``seen`` (at once when it already is)."""
        while self.version == seen:
            await self._changed.wait()
        return self.version


@dataclass(frozen=True, slots=True)
class AlarmView:
    """One line of the dashboard's list."""

    id: str
    kind: AlarmKind
    label: str
    asker: str
    room: str
    ends_at: dt.datetime | None  # when it rings; None while paused or ringing
    left_s: float | None  # while paused
    duration_s: float  # a timer's length (0 for a reminder)
    paused: bool = False
    ringing: bool = False


@dataclass(frozen=True, slots=True)
class Cancelled:
    found: bool
    kind: AlarmKind | None = None
    stopped_ringing: bool = False


class RemoteAlarms(timers_mod.RemoteTimers, reminders_mod.RemoteReminders, Protocol):
    """The other AI servers' timers and reminders (ai_server/assist/replica.py :class:`AlarmMirror`)."""

    def kind_of(self, alarm_id: str) -> AlarmKind | None: ...


@dataclass
class Alarms:
    timers: timers_mod.Timers
    reminders: reminders_mod.Reminders
    changes: AlarmChanges = field(default_factory=AlarmChanges)
    remote: RemoteAlarms | None = None

    def board(self) -> list[AlarmView]:
        """Running and paused timers, reminders, and what rings now, soonest first."""
        items: list[AlarmView] = []
        for t in self.timers.timers.values():
            items.append(AlarmView(t.id, "timer", t.label, t.asker, t.room, t.due, t.left_s if t.due is None else None,
                                   t.duration_s, paused=t.due is None))
        for r in self.reminders.reminders.values():
            items.append(AlarmView(r.id, "reminder", r.task, r.asker, r.room, r.due, None, 0.0))
        for ring in self.timers.ringer.rings.values():
            reminder = ring.key.startswith(REMINDER_RING)
            items.append(AlarmView(ring.key.removeprefix(REMINDER_RING), "reminder" if reminder else "timer",
                                   ring.text, ring.device, ring.room, None, None, 0.0, ringing=True))
        far = dt.datetime.max.replace(tzinfo=dt.UTC)
        return sorted(items, key=lambda a: (not a.ringing, a.ends_at or far, a.id))

    def cancel(self, alarm_id: str) -> Cancelled:
        """Cancel the timer or reminder ``alarm_id``; one that rings stops ringing."""
        ringer = self.timers.ringer
        for kind, key in (("timer", alarm_id), ("reminder", REMINDER_RING + alarm_id)):
            if key in ringer.rings:
                ringer.cancel(key)
                return Cancelled(True, "timer" if kind == "timer" else "reminder", stopped_ringing=True)
        if self.timers.cancel_id(alarm_id) is not None:
            return Cancelled(True, "timer")
        if self.reminders.cancel_id(alarm_id) is not None:
            return Cancelled(True, "reminder")
        remote = self.remote.kind_of(alarm_id) if self.remote is not None else None
        if self.remote is not None and remote is not None and self.remote.cancel(alarm_id):
            return Cancelled(True, remote)
        return Cancelled(False)

    def close(self) -> None:
        self.timers.close()
        self.reminders.close()
        if self.timers.store is not None:
            self.timers.store.close()


def install(services: AssistServices, *, pipeline: Pipeline,
            sessions: Callable[[], Iterable[ConversationSession]], speaker: Speaker | None = None,
            remote: RemoteAlarms | None = None) -> Alarms:
    """Register the timer and reminder intents and restore what the store holds (needs a running loop).

    ``speaker`` is the control plane's (rooms, who is online) when MQTT runs; without it a ring goes
    straight onto the hub stream that carries the device. ``remote``: the other AI servers' alarms when
    they are replicated; the stored ones are then restored by the replica (ai_server/assist/replica.py),
    once it knows which of them another server took over while this one was down."""
    player = StreamPlayer(pipeline, sessions, speaker)
    changes = AlarmChanges()
    timers = timers_mod.install(services, player=player, metrics=pipeline.metrics, on_change=changes, remote=remote,
                                restore=remote is None)
    reminders = reminders_mod.install(services, timers=timers, metrics=pipeline.metrics, remote=remote,
                                      restore=remote is None)
    return Alarms(timers, reminders, changes, remote)
