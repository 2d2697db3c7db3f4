"""Ringing on a device: the chime plus spoken words, again and again, until someone stops it.

A ring is a loop of *cycles*. Each cycle is one unprompted turn on the device that set the timer
(ai_server/control/speech.py :func:`sound_body`): the chime, the words ("Your pasta timer is
done."), held open until the device has played them, then :attr:`Ringer.pause_s` of quiet. It
ends when

* someone says "stop" on that device or in its room (:meth:`Ringer.stop`, the NailaStop intent),
* the device barges in (the hub's INTERRUPT cancels the cycle's turn; a new utterance does too),
* or ``max_s`` (ASSIST_RING_MAX_S) has passed.

When the device cannot be reached (the hub is reconnecting after an AI server restart) a cycle
is retried every ``pause_s`` within the same ``max_s`` window; each failure is logged and counted.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from ai_server.assist.clock import Clock
from ai_server.assist.sounds import chime

if TYPE_CHECKING:
    from ai_server.control.speech import Speaker
    from ai_server.metrics import Metrics
    from ai_server.pipeline import Speech
    from ai_server.session import ConversationSession

log = logging.getLogger(__name__)


class Unreachable(Exception):
    """The device (or room) cannot be played on now; the message says why (one line)."""


class Player(Protocol):
    """Plays the chime and ``text`` once on ``target`` (a device id or a room); the tasks end when
    the device has played it (a cancelled task: the device barged in). Raises :class:`Unreachable`."""

    def play(self, target: str, text: str, *, sound: bool, hold: Callable[[float], Awaitable[None]]
             ) -> list[asyncio.Task[None]]: ...


class StreamPlayer:
    """The AI server's :class:`Player`: through the control plane's Speaker when MQTT runs (it knows
    rooms, who is online and has a speaker), else straight onto the hub stream that carries the
    device (AI_MQTT=false: a device that set a timer by voice is reachable through its stream)."""

    def __init__(self, pipeline: Speech, sessions: Callable[[], Iterable[ConversationSession]],
                 speaker: Speaker | None = None) -> None:
        self.pipeline = pipeline
        self.sessions = sessions
        self.speaker = speaker

    def play(self, target: str, text: str, *, sound: bool, hold: Callable[[float], Awaitable[None]]
             ) -> list[asyncio.Task[None]]:
        from ai_server.control.speech import SpeakError, sound_body

        rate = self.pipeline.tts.sample_rate
        body = sound_body(self.pipeline, chime(rate) if sound else b"", rate, text, hold)
        if self.speaker is not None and (self.speaker.registry.get(target) is not None
                                         or self.speaker.registry.in_room(target)):
            try:
                return [s.task for s in self.speaker.play(target, body)]
            except SpeakError as exc:
                raise Unreachable(str(exc)) from None
        sessions = list(self.sessions())
        carrying = [(s.heard[target], i, s) for i, s in enumerate(sessions) if target in s.heard]
        if carrying:
            streams = [max(carrying, key=lambda c: (c[0], c[1]))[2]]
        elif sessions:
            # A device this server never heard: it adopted the alarm of a server that died (issue 21).
            # Every hub keeps a stream to every server and routes an output by device id; the hubs
            # without that device drop the turn (counted there as unknown-device outputs).
            streams = sessions
        else:
            raise Unreachable(f"no hub stream carries device {target}")
        try:
            return [stream.start_unprompted_turn(target, body) for stream in streams]
        except RuntimeError as exc:  # the stream is closing
            raise Unreachable(str(exc)) from None


@dataclass(eq=False)
class Ring:
    key: str  # the timer's id
    device: str  # where it rings (the asker's device)
    room: str
    text: str
    stopped: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    cycles: int = 0
    why: str = ""  # how it ended: stopped | barge-in | max | unreachable
    ended_at: float = 0.0  # on the ringer's clock (epoch seconds)


class Ringer:
    """Rings in progress, by key; see the module doc."""

    def __init__(self, player: Player, clock: Clock, *, max_s: float = 60.0, pause_s: float = 2.0,
                 metrics: Metrics | None = None, on_change: Callable[[], None] | None = None) -> None:
        """``on_change``: called when a ring starts or ends (the dashboard's timer list shows what rings)."""
        self.player = player
        self.on_change = on_change or (lambda: None)
        self.clock = clock
        self.max_s = max_s
        self.pause_s = pause_s
        self.metrics = metrics
        self.rings: dict[str, Ring] = {}
        self.ended: list[Ring] = []  # the last few, for tests and logs
        self._fallback: Callable[[str], str | None] = lambda device: None

    def set_room_fallback(self, room_of: Callable[[str], str | None]) -> None:
        """Where to ring when the device itself cannot be reached (its room's speakers)."""
        self._fallback = room_of

    def _count(self, name: str) -> None:
        if self.metrics is not None:
            self.metrics.count(name)

    def ring(self, key: str, device: str, room: str, text: str, *, repeat: bool = True) -> Ring:
        """Start ringing ``text`` on ``device``; replaces a ring with the same key. ``repeat=False``
        plays it once (a reminder) but still retries while the device is unreachable."""
        old = self.rings.pop(key, None)
        if old is not None and old.task is not None:
            old.task.cancel()
        ring = Ring(key, device, room, text)
        ring.task = asyncio.get_running_loop().create_task(self._run(ring, repeat), name=f"ring-{key}")
        self.rings[key] = ring
        self._count("rings_started")
        self.on_change()
        return ring

    def stop(self, *, device: str | None, room: str | None) -> list[Ring]:
        """Stop what rings on ``device`` or in ``room``; returns the rings stopped."""
        hit = [r for r in self.rings.values()
               if (device and r.device == device) or (room and r.room and r.room == room)]
        for r in hit:
            self._end(r, "stopped")
        return hit

    def silenced_lately(self, *, device: str | None, room: str | None, within_s: float = 15.0) -> bool:
        """A ring here was cut by a barge-in moments ago: "Okay Nabu" already silenced it, and the
        "stop" that follows is answered as done, not "nothing is ringing"."""
        now = self.clock.now().timestamp()
        return any(r.why == "barge-in" and now - r.ended_at <= within_s
                   and ((device and r.device == device) or (room and r.room and r.room == room))
                   for r in self.ended)

    def cancel(self, key: str) -> None:
        ring = self.rings.get(key)
        if ring is not None:
            self._end(ring, "stopped")

    def _end(self, ring: Ring, why: str) -> None:
        if self.rings.get(ring.key) is ring:
            del self.rings[ring.key]
            ring.why = why
            ring.ended_at = self.clock.now().timestamp()
            ring.stopped.set()
            self.ended = [*self.ended[-15:], ring]
            self._count(f"rings_{why.replace('-', '_')}")
            log.info("ring %s on %s ended (%s) after %d cycle(s)", ring.key, ring.device, why, ring.cycles)
            self.on_change()
        if ring.task is not None and ring.task is not asyncio.current_task():
            ring.task.cancel()

    async def _run(self, ring: Ring, repeat: bool) -> None:
        started = time.monotonic()  # only for the log; the window is on the injected clock
        deadline = self.clock.now().timestamp() + self.max_s
        target = ring.device
        try:
            while self.clock.now().timestamp() < deadline and not ring.stopped.is_set():
                try:
                    tasks = self.player.play(target, ring.text, sound=True, hold=self.clock.sleep)
                except Unreachable as exc:
                    self._count("ring_unreachable")
                    log.warning("ring %s: cannot play on %s: %s", ring.key, target, exc)
                    fallback = self._fallback(ring.device) or ring.room
                    if target == ring.device and fallback and fallback != target:
                        target = fallback  # the device is gone: its room's speakers
                        continue
                    target = ring.device
                    await self.clock.sleep(self.pause_s)
                    continue
                ring.cycles += 1
                # wait, not gather: a stop ends this loop but lets the cycle close its turn (is_final).
                await asyncio.wait(tasks)
                if any(t.cancelled() for t in tasks):
                    self._end(ring, "barge-in")
                    return
                if not repeat:
                    self._end(ring, "played")
                    return
                await self.clock.sleep(self.pause_s)
            self._end(ring, "max" if ring.cycles else "unreachable")
        except asyncio.CancelledError:
            self._end(ring, "stopped")
            raise
        finally:
            log.debug("ring %s ran %.1f s", ring.key, time.monotonic() - started)
