"""Timers that really run: start, cancel, status, pause, resume, add or remove time; they ring.

Handlers for Home Assistant's timer intents (HassStartTimer, HassCancelTimer, HassCancelAllTimers,
HassTimerStatus, HassPauseTimer, HassUnpauseTimer, HassIncreaseTimer, HassDecreaseTimer) and our
NailaStop ("stop": silences what rings on the asker's device or in its room).

A timer belongs to the asker (the device that set it, else the chat session) and its room. Which
timer a request means: the asker's own timers (else its room's), narrowed by name and by the
duration it was set for ("cancel the 10 minute timer"); several left for a command that needs one
is answered with a question, never guessed.

When a timer ends it rings on the asker's device (ai_server/assist/ringing.py). Persistence: each
running timer is stored with its absolute due time (a paused one with what was left), so after an
AI server restart it rings when due; one that fell due while the server was down rings at once
if at most ``missed_after_s`` (ASSIST_TIMER_MISSED_S) ago, else it is dropped as missed (logged,
counted as ``timers_missed``) and the asker hears about it at its next timer question.

Several AI servers (issue 21): the timers other servers own are seen through :class:`RemoteTimers`
(ai_server/assist/replica.py mirrors them from the broker), so "how long is left on my timer" and
"cancel the timer" find them wherever the question is answered; changing one (pause, add time) is
left to its owner. A server that adopts a dead server's timer takes it in with :meth:`Timers.adopt`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Protocol

from ai_server.assist.clock import Clock
from ai_server.assist.core import AssistContext, AssistReply, AssistServices, IntentMatch, IntentRegistry
from ai_server.assist.ringing import Player, Ringer
from ai_server.store.timers import AlarmStore, TimerRow
from shared.contract import TIMER_MAX_S

if TYPE_CHECKING:
    from ai_server.metrics import Metrics

log = logging.getLogger(__name__)

MAX_TIMER_S: Final = float(TIMER_MAX_S)
MAX_TIMERS_PER_ASKER: Final = 20
STOP_INTENT: Final = "NailaStop"


def say_duration(seconds: float) -> str:
    """"1 hour and 30 minutes", "2 minutes and 5 seconds", "3 seconds" (rounded to whole seconds)."""
    total = max(0, round(seconds))
    h, rest = divmod(total, 3600)
    m, s = divmod(rest, 60)
    parts = [f"{v} {unit}{'' if v == 1 else 's'}" for v, unit in ((h, "hour"), (m, "minute"), (s, "second")) if v]
    if not parts:
        return "0 seconds"
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _label_duration(seconds: float) -> str:
    """"10 minute", "1 hour 30 minute": the adjective form used in "the 10 minute timer"."""
    return say_duration(seconds).replace(" and ", " ").replace(",", "").replace("hours", "hour").replace(
        "minutes", "minute").replace("seconds", "second")


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"not a number: {value!r}") from None


def duration_of(slots: Mapping[str, Any], prefix: str = "") -> float:
    """Seconds from the hours/minutes/seconds slots (``start_`` ones with ``prefix="start_"``)."""
    return (_number(slots.get(f"{prefix}hours", 0)) * 3600 + _number(slots.get(f"{prefix}minutes", 0)) * 60
            + _number(slots.get(f"{prefix}seconds", 0)))


def _set_sentence(name: str, seconds: float) -> str:
    """The confirmation of a timer set (one home: the handler and its preview say the same)."""
    return f"{name.capitalize() + ' timer' if name else 'Timer'} set for {say_duration(seconds)}."


def _clean_name(value: Any) -> str:
    name = re.sub(r"\s+", " ", str(value or "")).strip().lower()
    return re.sub(r"^(the|my|a|an) ", "", name).removesuffix(" timer").strip()


@dataclass(eq=False)
class Timer:
    id: str
    asker: str
    room: str
    name: str
    set_s: float  # the duration it was set for: "the 10 minute timer"
    duration_s: float  # set_s changed by add/remove time
    due: dt.datetime | None  # while running
    left_s: float | None  # while paused
    created: dt.datetime
    task: asyncio.Task[None] | None = field(default=None, repr=False)
    owner: str = ""  # the AI server that runs it when it is another one's (seen through RemoteTimers)

    @property
    def label(self) -> str:
        return f"{self.name} timer" if self.name else f"{_label_duration(self.set_s)} timer"

    def left(self, now: dt.datetime) -> float:
        if self.due is None:
            return self.left_s or 0.0
        return max(0.0, (self.due - now).total_seconds())

    def row(self) -> TimerRow:
        return TimerRow(self.id, self.asker, self.room, self.name, self.duration_s, self.due, self.left_s,
                        self.created)


class RemoteTimers(Protocol):
    """The timers other AI servers own (their ``owner`` set), and cancelling one of them."""

    def timers(self) -> list[Timer]: ...

    def cancel(self, alarm_id: str) -> bool: ...

    def stop_ringing(self, device: str | None, room: str | None) -> list[str]:
        """Stop what another server rings on ``device`` or in ``room``; the ids stopped."""
        ...


class Timers:
    """Every timer of the household, their tasks, and the intent handlers."""

    def __init__(self, store: AlarmStore | None, clock: Clock, ringer: Ringer, *, missed_after_s: float = 600.0,
                 metrics: Metrics | None = None, on_change: Callable[[], None] | None = None,
                 remote: RemoteTimers | None = None) -> None:
        """``on_change``: called after every change of a timer (set, changed, cancelled, done); ``remote``:
        the other AI servers' timers (None: this server is the only one)."""
        self.remote = remote
        self.store = store
        self.on_change = on_change or (lambda: None)
        self.clock = clock
        self.ringer = ringer
        self.missed_after_s = missed_after_s
        self.metrics = metrics
        self.timers: dict[str, Timer] = {}
        self.missed: dict[str, list[str]] = {}  # asker -> what to tell it ("Your pasta timer ended at 14:05 ...")
        # "remind me to call mum in 20 minutes" reads as a timer with a command: reminders take it.
        self.delayed_command: Callable[[str, float, AssistContext, str], AssistReply | None] | None = None

    # ---- lifecycle ---------------------------------------------------------------------------

    def install(self, registry: IntentRegistry) -> None:
        for intent, handler in (
            ("HassStartTimer", self.start), ("HassCancelTimer", self.cancel),
            ("HassCancelAllTimers", self.cancel_all), ("HassTimerStatus", self.status),
            ("HassPauseTimer", self.pause), ("HassUnpauseTimer", self.resume),
            ("HassIncreaseTimer", self.increase), ("HassDecreaseTimer", self.decrease),
            (STOP_INTENT, self.stop),
        ):
            registry.register(intent, handler, preview=self.preview_start if handler == self.start else None)

    def restore(self) -> None:
        """Load the stored timers (at start): schedule them, ring the overdue, drop the missed."""
        if self.store is None:
            return
        for row in self.store.timers():
            self._take(row, row.duration_s)
        log.info("timers: %d restored", len(self.timers))

    def adopt(self, row: TimerRow, set_s: float) -> Timer | None:
        """Take in a timer another AI server owned (it died): stored, scheduled, rung at once when it
        fell due at most ``missed_after_s`` ago; None when it was missed (the asker is told)."""
        timer = self._take(row, set_s)
        if timer is not None and self.store is not None:
            self.store.put_timer(timer.row())
        self.on_change()
        return timer

    def _take(self, row: TimerRow, set_s: float) -> Timer | None:
        now = self.clock.now()
        timer = Timer(row.id, row.asker, row.room, row.name, set_s or row.duration_s, row.duration_s, row.due,
                      row.left_s, row.created)
        if row.due is not None and (now - row.due).total_seconds() > self.missed_after_s:
            if self.store is not None:
                self.store.delete_timer(row.id)
            local = row.due.astimezone(now.tzinfo)
            self.missed.setdefault(row.asker, []).append(
                f"Your {timer.label} ended at {local:%H:%M} while I was offline.")
            self._count("timers_missed")
            log.warning("timer %s (%s) of %s fell due at %s while its server was down: missed", row.id,
                        timer.label, row.asker, row.due.isoformat())
            return None
        self.timers[timer.id] = timer
        if timer.due is not None:
            self._schedule(timer)
        return timer

    def drop(self, timer_id: str) -> bool:
        """Forget a timer without ringing it (another AI server has it now, or it was cancelled there)."""
        timer = self.timers.get(timer_id)
        if timer is None:
            return False
        self._forget(timer)
        return True

    def close(self) -> None:
        for timer in self.timers.values():
            if timer.task is not None:
                timer.task.cancel()
        for ring in list(self.ringer.rings.values()):
            if ring.task is not None:
                ring.task.cancel()

    def _count(self, name: str) -> None:
        if self.metrics is not None:
            self.metrics.count(name)

    def _save(self, timer: Timer) -> None:
        if self.store is not None:
            self.store.put_timer(timer.row())
        self.on_change()

    def _forget(self, timer: Timer) -> None:
        if timer.owner:  # another server's: its owner cancels it when it sees its record cleared
            if self.remote is not None:
                self.remote.cancel(timer.id)
            self.on_change()
            return
        self.timers.pop(timer.id, None)
        if timer.task is not None and timer.task is not asyncio.current_task():
            timer.task.cancel()
        timer.task = None
        if self.store is not None:
            self.store.delete_timer(timer.id)
        self.on_change()

    def cancel_id(self, timer_id: str) -> Timer | None:
        """Cancel the timer ``timer_id`` (the dashboard's Cancel); None when no such timer runs."""
        timer = self.timers.get(timer_id)
        if timer is None:
            return None
        self._forget(timer)
        self._count("timers_cancelled")
        log.info("timer %s (%s) of %s cancelled by id", timer.id, timer.label, timer.asker)
        return timer

    def _schedule(self, timer: Timer) -> None:
        if timer.task is not None:
            timer.task.cancel()
        timer.task = asyncio.get_running_loop().create_task(self._run(timer), name=f"timer-{timer.id}")

    async def _run(self, timer: Timer) -> None:
        assert timer.due is not None
        await self.clock.sleep_until(timer.due)
        self._forget(timer)
        self._count("timers_done")
        text = f"Your {timer.label} is done."
        target = timer.asker if not timer.asker.startswith("chat:") else timer.room
        if not target:
            log.info("timer %s of %s is done, but there is no device to ring on", timer.id, timer.asker)
            return
        log.info("timer %s (%s) of %s is done: ringing on %s", timer.id, timer.label, timer.asker, target)
        self.ringer.ring(timer.id, target, timer.room, text)

    # ---- finding the timer meant -------------------------------------------------------------

    def _all(self) -> list[Timer]:
        """This server's timers and, with several servers, the others' (each id once: ours win)."""
        if self.remote is None:
            return list(self.timers.values())
        return [*self.timers.values(), *(t for t in self.remote.timers() if t.id not in self.timers)]

    def _mine(self, ctx: AssistContext, slots: Mapping[str, Any]) -> list[Timer]:
        every = self._all()
        own = [t for t in every if t.asker == ctx.asker]
        if not own and ctx.room:
            own = [t for t in every if t.room == ctx.room]
        name = _clean_name(slots.get("name"))
        if name:
            own = [t for t in own if t.name == name]
        if any(k in slots for k in ("start_hours", "start_minutes", "start_seconds")):
            wanted = duration_of(slots, "start_")
            own = [t for t in own if abs(t.set_s - wanted) < 1.0]
        area = str(slots.get("area") or "").strip().lower()
        if area:
            own = [t for t in own if t.room.lower() == area] or [t for t in every if t.room.lower() == area]
        return sorted(own, key=lambda t: t.created)

    def _one(self, ctx: AssistContext, match: IntentMatch) -> Timer | AssistReply:
        found = self._mine(ctx, match.slots)
        if len(found) == 1:
            return found[0]
        if not found:
            name = _clean_name(match.slots.get("name"))
            return AssistReply(f"There is no {name} timer." if name else "There is no timer running.", match.intent)
        labels = " and ".join(f"a {t.label}" for t in found[:4])
        return AssistReply(f"Which one? You have {labels}.", match.intent)

    def set_timer(self, asker: str, room: str, name: Any, seconds: float) -> Timer:
        """Start a timer for ``asker`` (it rings there): a voice request and the dashboard's form
        (ai_server/household.py) both come here. ValueError, counted, when it cannot be set."""
        if not 0 < seconds <= MAX_TIMER_S:
            self._count("timers_refused")
            raise ValueError("Timers can be at most 24 hours long." if seconds > 0 else "A timer needs a duration.")
        if sum(1 for t in self.timers.values() if t.asker == asker) >= MAX_TIMERS_PER_ASKER:
            self._count("timers_refused")
            raise ValueError(f"You already have {MAX_TIMERS_PER_ASKER} timers; cancel one first.")
        now = self.clock.now()
        timer = Timer(uuid.uuid4().hex, asker, room, _clean_name(name), seconds, seconds,
                      now + dt.timedelta(seconds=seconds), None, now)
        self.timers[timer.id] = timer
        self._save(timer)
        self._schedule(timer)
        self._count("timers_started")
        log.info("timer %s (%s, %.0f s) set by %s", timer.id, timer.label, seconds, asker)
        return timer

    # ---- handlers ----------------------------------------------------------------------------

    async def start(self, match: IntentMatch, ctx: AssistContext) -> AssistReply:
        try:
            seconds = duration_of(match.slots)
        except ValueError as exc:
            self._count("timers_refused")
            return AssistReply(f"Sorry, I couldn't understand that duration ({exc}).", match.intent)
        command = str(match.slots.get("conversation_command") or "")
        if command:
            done = self.delayed_command(command, seconds, ctx, match.intent) if self.delayed_command else None
            return done or AssistReply("I can't run a command on a timer yet.", match.intent)
        if seconds <= 0:
            return AssistReply("How long should the timer be?", match.intent)
        try:
            timer = self.set_timer(ctx.asker, ctx.room or "", match.slots.get("name"), seconds)
        except ValueError as exc:
            return AssistReply(str(exc), match.intent)
        return AssistReply(_set_sentence(timer.name, seconds), match.intent,
                           data={"timer_id": timer.id, "seconds": seconds, "name": timer.name})

    def preview_start(self, match: IntentMatch, ctx: AssistContext) -> str | None:
        """What :meth:`start` will say when the timer can be set, without setting it (the pipeline
        synthesises it while END is awaited); None when it would say something else."""
        try:
            seconds = duration_of(match.slots)
        except ValueError:
            return None
        if match.slots.get("conversation_command") or not 0 < seconds <= MAX_TIMER_S:
            return None
        return _set_sentence(_clean_name(match.slots.get("name")), seconds)

    async def cancel(self, match: IntentMatch, ctx: AssistContext) -> AssistReply:
        if not self._mine(ctx, match.slots):  # "stop the timer" while it rings: it is done, so silence it
            stopped = [r.key for r in self.ringer.stop(device=ctx.device_id, room=ctx.room)] or self._stop_remote(ctx)
            if stopped:
                return AssistReply("Stopped.", match.intent, data={"stopped": stopped})
        found = self._one(ctx, match)
        if isinstance(found, AssistReply):
            return found
        self._forget(found)
        self._count("timers_cancelled")
        return AssistReply(f"{found.label.capitalize()} cancelled.", match.intent, data={"timer_id": found.id})

    async def cancel_all(self, match: IntentMatch, ctx: AssistContext) -> AssistReply:
        found = self._mine(ctx, match.slots)
        for timer in found:
            self._forget(timer)
        self._count("timers_cancelled")
        stopped = [r.key for r in self.ringer.stop(device=ctx.device_id, room=ctx.room)] or self._stop_remote(ctx)
        if not found:
            return AssistReply("Stopped." if stopped else "There are no timers to cancel.", match.intent)
        n = len(found)
        return AssistReply("Timer cancelled." if n == 1 else f"All {n} timers cancelled.", match.intent)

    async def status(self, match: IntentMatch, ctx: AssistContext) -> AssistReply:
        told = self.missed.pop(ctx.asker, [])
        found = self._mine(ctx, match.slots)
        now = self.clock.now()
        if not found:
            name = _clean_name(match.slots.get("name"))
            text = f"There is no {name} timer." if name else "There are no timers running."
        else:
            parts = []
            for t in found[:5]:
                paused = " (paused)" if t.due is None else ""
                parts.append(f"{say_duration(t.left(now))} left on the {t.label}{paused}")
            text = "; ".join(parts) + "."
            text = text[0].upper() + text[1:]
        return AssistReply(" ".join([*told, text]), match.intent,
                           data={"timers": [{"id": t.id, "name": t.name, "left_s": t.left(now),
                                             "paused": t.due is None} for t in found]})

    def _changeable(self, ctx: AssistContext, match: IntentMatch) -> Timer | AssistReply:
        """The one timer meant, if this server runs it: another server's can be cancelled from here, not changed."""
        found = self._one(ctx, match)
        if isinstance(found, Timer) and found.owner:
            self._count("timers_refused")
            return AssistReply(f"The {found.label} runs on another of my servers: I can cancel it from here, "
                               "but not change it. Please try again in a moment.", match.intent)
        return found

    async def pause(self, match: IntentMatch, ctx: AssistContext) -> AssistReply:
        found = self._changeable(ctx, match)
        if isinstance(found, AssistReply):
            return found
        if found.due is None:
            return AssistReply(f"The {found.label} is already paused.", match.intent)
        found.left_s = found.left(self.clock.now())
        found.due = None
        if found.task is not None:
            found.task.cancel()
            found.task = None
        self._save(found)
        return AssistReply(f"{found.label.capitalize()} paused with {say_duration(found.left_s)} left.",
                           match.intent)

    async def resume(self, match: IntentMatch, ctx: AssistContext) -> AssistReply:
        found = self._changeable(ctx, match)
        if isinstance(found, AssistReply):
            return found
        if found.due is not None:
            return AssistReply(f"The {found.label} is already running.", match.intent)
        left = found.left_s or 0.0
        found.due = self.clock.now() + dt.timedelta(seconds=left)
        found.left_s = None
        self._save(found)
        self._schedule(found)
        return AssistReply(f"{found.label.capitalize()} resumed with {say_duration(left)} left.", match.intent)

    async def increase(self, match: IntentMatch, ctx: AssistContext) -> AssistReply:
        return await self._change(match, ctx, +1)

    async def decrease(self, match: IntentMatch, ctx: AssistContext) -> AssistReply:
        return await self._change(match, ctx, -1)

    async def _change(self, match: IntentMatch, ctx: AssistContext, sign: int) -> AssistReply:
        try:
            delta = duration_of(match.slots)
        except ValueError as exc:
            return AssistReply(f"Sorry, I couldn't understand that duration ({exc}).", match.intent)
        if delta <= 0:
            return AssistReply("By how much?", match.intent)
        found = self._changeable(ctx, match)
        if isinstance(found, AssistReply):
            return found
        now = self.clock.now()
        left = min(MAX_TIMER_S, max(0.0, found.left(now) + sign * delta))
        found.duration_s = max(0.0, found.duration_s + sign * delta)
        if found.due is None:
            found.left_s = left
        else:
            found.due = now + dt.timedelta(seconds=left)
            self._schedule(found)  # earlier or later: the sleeper must wake at the new time
        self._save(found)
        verb = "Added" if sign > 0 else "Removed"
        prep = "to" if sign > 0 else "from"
        return AssistReply(f"{verb} {say_duration(delta)} {prep} the {found.label}; {say_duration(left)} left.",
                           match.intent)

    def _stop_remote(self, ctx: AssistContext) -> list[str]:
        """What another AI server rings on this device or in this room (an alarm it owns), stopped."""
        return self.remote.stop_ringing(ctx.device_id, ctx.room) if self.remote is not None else []

    async def stop(self, match: IntentMatch, ctx: AssistContext) -> AssistReply:
        stopped = [r.key for r in self.ringer.stop(device=ctx.device_id, room=ctx.room)] or self._stop_remote(ctx)
        if not stopped:
            if self.ringer.silenced_lately(device=ctx.device_id, room=ctx.room):
                return AssistReply("Stopped.", match.intent)
            return AssistReply("Nothing is ringing.", match.intent)
        return AssistReply("Stopped.", match.intent, data={"stopped": stopped})


def install(services: AssistServices, *, player: Player, metrics: Metrics | None = None,
            clock: Clock | None = None, store: AlarmStore | None = None,
            on_change: Callable[[], None] | None = None, remote: RemoteTimers | None = None,
            restore: bool = True) -> Timers:
    """Register the timer intents and restore the stored timers (needs a running event loop).

    ``store`` defaults to the one in ``services.data_dir``; ``clock`` to ``services.now`` with
    ``asyncio.sleep``; ``on_change`` is told of every change of a timer or ring. ``restore=False``
    leaves the stored timers to the caller (the replica restores them once it knows which of them
    another server took over while this one was down)."""
    settings = services.settings
    clock = clock or Clock(services.now)
    if store is None:
        store = AlarmStore(services.data_dir)
    ringer = Ringer(player, clock, max_s=getattr(settings, "assist_ring_max_s", 60.0),
                    pause_s=getattr(settings, "assist_ring_pause_s", 2.0), metrics=metrics, on_change=on_change)
    timers = Timers(store, clock, ringer, missed_after_s=getattr(settings, "assist_timer_missed_s", 600.0),
                    metrics=metrics, on_change=on_change, remote=remote)
    timers.install(services.registry)
    if restore:
        timers.restore()
    return timers
