"""Reminders: "remind me to take out the trash tomorrow at 8 am", spoken on the asker's device when due.

Our own intents (home-assistant-intents has none; sentences in ``sentences/reminders.yaml``):
NailaRemind, NailaListReminders, NailaCancelReminder, NailaCancelAllReminders. The NailaRemind
wildcard holds task and time together; :func:`split_reminder` finds the time expression in it
and dateparser reads that relative to :attr:`AssistContext.now` (the household's zone).

When due, the chime and "Reminder: take out the trash." play once on the asker's device (through
the timers' :class:`~ai_server.assist.ringing.Ringer`, which retries while the device is
unreachable and falls back to its room). Reminders are stored with their absolute due time and
restored after a restart like timers (ASSIST_TIMER_MISSED_S decides late vs. missed). With several
AI servers the others' reminders are listed and cancelled through :class:`RemoteReminders`, and a dead
server's are taken in with :meth:`Reminders.adopt` (ai_server/assist/replica.py).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import importlib
import logging
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Protocol

from ai_server.assist.clock import Clock
from ai_server.assist.core import AssistContext, AssistReply, AssistServices, IntentMatch, IntentRegistry
from ai_server.assist.ringing import Ringer
from ai_server.store.timers import AlarmStore, ReminderRow

if TYPE_CHECKING:
    from ai_server.assist.timers import Timers
    from ai_server.metrics import Metrics

log = logging.getLogger(__name__)

MAX_REMINDERS_PER_ASKER: Final = 100
MAX_AHEAD: Final = dt.timedelta(days=366)
# Where a time expression may start inside the reminder's words.
_TIME_START = re.compile(
    r"\b(in|at|on|by|tomorrow|tonight|today|this|next|noon|midnight|monday|tuesday|wednesday|thursday|friday"
    r"|saturday|sunday|\d{1,2}(:\d\d)?\s*(am|pm|a\.m\.|p\.m\.))\b", re.IGNORECASE)
_CLOCKISH = re.compile(r"\d|noon|midnight|morning|afternoon|evening|night|minute|hour|second", re.IGNORECASE)
_LEAD = re.compile(r"^(to|about|that|of)\s+", re.IGNORECASE)


def parse_when(text: str, now: dt.datetime) -> dt.datetime | None:
    """An absolute time for ``text`` ("tomorrow at 8 am", "in 20 minutes") after ``now``, or None."""
    text = text.strip().rstrip(".").strip()
    text = re.sub(r"^at (\d{1,2})$", r"at \1:00", text, flags=re.IGNORECASE)  # "at 5" is not May
    if not text:
        return None
    zone = getattr(now.tzinfo, "key", None) or now.strftime("%z") or "UTC"
    parse: Any = importlib.import_module("dateparser").parse  # untyped library: no stubs
    when: dt.datetime | None = parse(text, languages=["en"], settings={
        "RELATIVE_BASE": now.replace(tzinfo=None), "PREFER_DATES_FROM": "future", "TIMEZONE": zone,
        "RETURN_AS_TIMEZONE_AWARE": True,
    })
    if when is None:
        return None
    if not _CLOCKISH.search(text) and when.hour == 0 and when.minute == 0:
        when = when.replace(hour=9)  # "on friday": in the morning, not at midnight
    return when.astimezone(now.tzinfo)


def split_reminder(words: str, now: dt.datetime) -> tuple[str, dt.datetime] | None:
    """("take out the trash", due) from "to take out the trash tomorrow at 8 am" or "in 20 minutes to call mum"."""
    words = re.sub(r"\s+", " ", words).strip().rstrip(".?!")
    # Time first: "in 20 minutes to call mum", "tomorrow at 8 am to take out the trash".
    for m in re.finditer(r"\s(to|about|that)\s", words):
        when = parse_when(words[: m.start()], now)
        task = words[m.end():].strip()
        if when is not None and task:
            return task, when
    # Task first: the earliest place where the rest of the sentence is a time.
    words = _LEAD.sub("", words)
    for m in _TIME_START.finditer(words):
        task = words[: m.start()].strip()
        if not task:
            continue
        when = parse_when(words[m.start():], now)
        if when is not None:
            return _LEAD.sub("", task), when
    return None


def _words(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z0-9']+", text.lower()) if w not in {"the", "a", "an", "my", "to", "reminder"}}


def say_when(due: dt.datetime, now: dt.datetime) -> str:
    """"at 8:00 tomorrow", "at 14:20", "on Friday 13 March at 9:00"."""
    due = due.astimezone(now.tzinfo)  # stored ones come back in UTC
    clock = f"{due:%H:%M}".lstrip("0") if due.hour else f"{due:%H:%M}"
    days = (due.date() - now.date()).days
    if days == 0:
        return f"at {clock}"
    if days == 1:
        return f"tomorrow at {clock}"
    if days < 7:
        return f"on {due:%A} at {clock}"
    return f"on {due:%A} {due.day} {due:%B} at {clock}"


@dataclass(eq=False)
class Reminder:
    id: str
    asker: str
    room: str
    task: str
    due: dt.datetime
    created: dt.datetime
    job: asyncio.Task[None] | None = field(default=None, repr=False)
    owner: str = ""  # the AI server that runs it when it is another one's (seen through RemoteReminders)


class RemoteReminders(Protocol):
    """The reminders other AI servers own (their ``owner`` set), and cancelling one of them."""

    def reminders(self) -> list[Reminder]: ...

    def cancel(self, alarm_id: str) -> bool: ...


class Reminders:
    def __init__(self, store: AlarmStore | None, clock: Clock, ringer: Ringer, *, missed_after_s: float = 600.0,
                 metrics: Metrics | None = None, on_change: Callable[[], None] | None = None,
                 remote: RemoteReminders | None = None) -> None:
        self.remote = remote
        self.store = store
        self.on_change = on_change or (lambda: None)  # after a reminder is set, cancelled or due
        self.clock = clock
        self.ringer = ringer
        self.missed_after_s = missed_after_s
        self.metrics = metrics
        self.reminders: dict[str, Reminder] = {}
        self.missed: dict[str, list[str]] = {}

    def install(self, registry: IntentRegistry) -> None:
        registry.register("NailaRemind", self.remind)
        registry.register("NailaListReminders", self.list)
        registry.register("NailaCancelReminder", self.cancel)
        registry.register("NailaCancelAllReminders", self.cancel_all)

    def _count(self, name: str) -> None:
        if self.metrics is not None:
            self.metrics.count(name)

    def restore(self) -> None:
        if self.store is None:
            return
        for row in self.store.reminders():
            self._take(row)
        log.info("reminders: %d restored", len(self.reminders))

    def adopt(self, row: ReminderRow) -> Reminder | None:
        """Take in a reminder another AI server owned (it died); None when it was missed (the asker is told)."""
        reminder = self._take(row)
        if reminder is not None and self.store is not None:
            self.store.put_reminder(row)
        return reminder

    def _take(self, row: ReminderRow) -> Reminder | None:
        if (self.clock.now() - row.due).total_seconds() > self.missed_after_s:
            if self.store is not None:
                self.store.delete_reminder(row.id)
            self.missed.setdefault(row.asker, []).append(f"I missed a reminder while I was offline: {row.task}.")
            self._count("reminders_missed")
            log.warning("reminder %s of %s fell due at %s while its server was down: missed", row.id, row.asker,
                        row.due.isoformat())
            return None
        reminder = Reminder(row.id, row.asker, row.room, row.task, row.due, row.created)
        self._schedule(reminder)
        return reminder

    def drop(self, reminder_id: str) -> bool:
        """Forget a reminder without saying it (another AI server has it now, or it was cancelled there)."""
        reminder = self.reminders.get(reminder_id)
        if reminder is None:
            return False
        self._forget(reminder)
        return True

    def close(self) -> None:
        for r in self.reminders.values():
            if r.job is not None:
                r.job.cancel()

    def _schedule(self, reminder: Reminder) -> None:
        self.reminders[reminder.id] = reminder
        reminder.job = asyncio.get_running_loop().create_task(self._run(reminder), name=f"reminder-{reminder.id}")
        self.on_change()

    def _forget(self, reminder: Reminder) -> None:
        if reminder.owner:  # another server's: its owner cancels it when it sees its record cleared
            if self.remote is not None:
                self.remote.cancel(reminder.id)
            self.on_change()
            return
        self.reminders.pop(reminder.id, None)
        if reminder.job is not None and reminder.job is not asyncio.current_task():
            reminder.job.cancel()
        if self.store is not None:
            self.store.delete_reminder(reminder.id)
        self.on_change()

    def cancel_id(self, reminder_id: str) -> Reminder | None:
        """Cancel the reminder ``reminder_id`` (the dashboard's Cancel); None when there is none."""
        reminder = self.reminders.get(reminder_id)
        if reminder is None:
            return None
        self._forget(reminder)
        self._count("reminders_cancelled")
        log.info("reminder %s of %s cancelled by id", reminder.id, reminder.asker)
        return reminder

    async def _run(self, reminder: Reminder) -> None:
        await self.clock.sleep_until(reminder.due)
        self._forget(reminder)
        self._count("reminders_due")
        target = reminder.asker if not reminder.asker.startswith("chat:") else reminder.room
        if not target:
            log.info("reminder %s of %s is due, but there is no device to say it on", reminder.id, reminder.asker)
            return
        self.ringer.ring(f"reminder-{reminder.id}", target, reminder.room, f"Reminder: {reminder.task}.",
                         repeat=False)

    def add(self, ctx: AssistContext, task: str, due: dt.datetime) -> Reminder:
        reminder = Reminder(uuid.uuid4().hex, ctx.asker, ctx.room or "", task, due, ctx.now)
        if self.store is not None:
            self.store.put_reminder(ReminderRow(reminder.id, reminder.asker, reminder.room, task, due, ctx.now))
        self._schedule(reminder)
        self._count("reminders_set")
        log.info("reminder %s set by %s for %s", reminder.id, ctx.asker, due.isoformat())
        return reminder

    def _refuse(self, ctx: AssistContext, intent: str) -> AssistReply | None:
        if sum(1 for r in self.reminders.values() if r.asker == ctx.asker) >= MAX_REMINDERS_PER_ASKER:
            self._count("reminders_refused")
            return AssistReply(f"You already have {MAX_REMINDERS_PER_ASKER} reminders; cancel some first.", intent)
        return None

    # ---- handlers ----------------------------------------------------------------------------

    async def remind(self, match: IntentMatch, ctx: AssistContext) -> AssistReply:
        words = str(match.slots.get("reminder") or "")
        parsed = split_reminder(words, ctx.now)
        if parsed is None and not re.match(r"\s*(to|about|that|in|at|on|tomorrow)\b", words):
            # "remind me what we talked about", "remind me who wrote hamlet": a question, not a
            # reminder without a time; the LLM (or the history) answers it.
            self._count("reminders_declined")
            return AssistReply("", match.intent, handled=False)
        if parsed is None:
            self._count("reminders_unparsed")
            log.info("reminder not understood: no time found in %d characters", len(words))
            return AssistReply("Sorry, I couldn't tell what and when to remind you. Try: remind me to call mum "
                               "tomorrow at 9 am.", match.intent)
        task, due = parsed
        return self._set(match.intent, ctx, task, due)

    def _set(self, intent: str, ctx: AssistContext, task: str, due: dt.datetime) -> AssistReply:
        if due <= ctx.now:
            return AssistReply(f"That time has passed already ({say_when(due, ctx.now)}).", intent)
        if due - ctx.now > MAX_AHEAD:
            return AssistReply("Reminders can be at most a year ahead.", intent)
        refused = self._refuse(ctx, intent)
        if refused is not None:
            return refused
        reminder = self.add(ctx, task, due)
        return AssistReply(f"I'll remind you to {task} {say_when(due, ctx.now)}.", intent,
                           data={"reminder_id": reminder.id, "task": task, "due": due.isoformat()})

    def remind_in(self, command: str, seconds: float, ctx: AssistContext, intent: str) -> AssistReply | None:
        """"remind me to call mum in 20 minutes" (hassil reads it as a timer with a command): a reminder."""
        m = re.match(r"^\s*remind me\s+(?:to\s+|about\s+)?(.+)$", command, re.IGNORECASE)
        if m is None:
            return None
        return self._set(intent, ctx, m.group(1).strip().rstrip("."), ctx.now + dt.timedelta(seconds=seconds))

    def _mine(self, ctx: AssistContext) -> list[Reminder]:
        every = list(self.reminders.values())
        if self.remote is not None:  # several servers: the others' too, each id once
            every += [r for r in self.remote.reminders() if r.id not in self.reminders]
        own = [r for r in every if r.asker == ctx.asker]
        return sorted(own, key=lambda r: r.due)

    async def list(self, match: IntentMatch, ctx: AssistContext) -> AssistReply:
        told = self.missed.pop(ctx.asker, [])
        own = self._mine(ctx)
        if not own:
            text = "You have no reminders."
        else:
            items = [f"{r.task} {say_when(r.due, ctx.now)}" for r in own[:5]]
            more = f", and {len(own) - 5} more" if len(own) > 5 else ""
            text = (f"You have {len(own)} reminder{'s' if len(own) > 1 else ''}: " + "; ".join(items) + more + ".")
        return AssistReply(" ".join([*told, text]), match.intent,
                           data={"reminders": [{"id": r.id, "task": r.task, "due": r.due.isoformat()} for r in own]})

    async def cancel(self, match: IntentMatch, ctx: AssistContext) -> AssistReply:
        wanted = _words(str(match.slots.get("reminder_name") or ""))
        own = self._mine(ctx)
        scored = sorted(((len(wanted & _words(r.task)), r) for r in own), key=lambda x: -x[0])
        best = [r for score, r in scored if score and score == scored[0][0]]
        if not best:
            return AssistReply("I couldn't find that reminder.", match.intent)
        if len(best) > 1:
            return AssistReply("Which one? " + "; ".join(r.task for r in best[:3]) + ".", match.intent)
        self._forget(best[0])
        self._count("reminders_cancelled")
        return AssistReply(f"Cancelled the reminder to {best[0].task}.", match.intent,
                           data={"reminder_id": best[0].id})

    async def cancel_all(self, match: IntentMatch, ctx: AssistContext) -> AssistReply:
        own = self._mine(ctx)
        for r in own:
            self._forget(r)
        if not own:
            return AssistReply("You have no reminders.", match.intent)
        return AssistReply(f"Cancelled {len(own)} reminder{'s' if len(own) > 1 else ''}.", match.intent)


def install(services: AssistServices, *, timers: Timers, metrics: Metrics | None = None,
            remote: RemoteReminders | None = None, restore: bool = True) -> Reminders:
    """Register the reminder intents on the timers' clock, store and ringer; restore stored reminders
    (``restore=False``: the caller does, see :func:`ai_server.assist.timers.install`)."""
    reminders = Reminders(timers.store, timers.clock, timers.ringer, missed_after_s=timers.missed_after_s,
                          metrics=metrics, on_change=timers.on_change, remote=remote)
    reminders.install(services.registry)
    timers.delayed_command = reminders.remind_in
    if restore:
        reminders.restore()
    return reminders
