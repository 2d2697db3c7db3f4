"""Speak a text on a device through the hub: TTS audio pushed onto the hub's StreamConversation.

The hub routes every AudioOutput by ``device_id`` to that device's WebRTC session, whether or
not it answers something the device said (hub/server.py ``route_output`` ->
``DeviceSession.on_ai_output``: an AudioOutput with an empty conversation_id is played, and its
is_final closes it like a reply). So the AI server runs the speech as an *unprompted turn* on
the stream that carries the device (ai_server/session.py ``start_unprompted_turn``): same
writer, sequence numbers and barge-in as spoken replies.

Which stream: the one that most recently sent AudioInput for the device (it carries the device's
audio now; ``ConversationSession.heard``). A device that has not spoken yet is unknown to every
stream: with exactly one hub connected (the usual home) that hub's stream is used and the hub routes
by device_id; with several, the only one that sent any audio in the last :data:`RECENT_AUDIO_S`, so
an idle extra stream does not make speech fail for every device that has not spoken. Having spoken
unprompted on a stream does not count: only audio shows where a device is. Failures the AI server
can see (unknown or offline device, no speaker, no hub stream, several hubs and none can be told
apart) raise :class:`SpeakError` before anything is synthesised; a TTS failure later ends the turn
with TTS_FAILED and is logged and counted. A device the hub does not have a session for is only
visible on the hub (it logs and counts "unknown device" outputs).

Unprompted speech makes speakers talk that nobody asked, so each asker has a budget
(:class:`AnnounceLimit`, AI_ANNOUNCE_PER_MIN, finding H1): a spoken announcement or replay is
charged to the device that asked, every typed chat session to one shared key (:data:`CHAT_ASKER`:
session ids are the client's choice, a new one must not bring new budget), ``ControlPlane.broadcast``
to :data:`PLANE_ASKER`. One request costs one token however many speakers it reaches.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Final

from ai_server.clauses import ClauseSplitter
from ai_server.control.metrics import ControlMetrics
from ai_server.control.registry import DeviceRegistry
from ai_server.pipeline import Speech, Turn
from ai_server.session import ConversationSession
from shared.contract import pb
from shared.errors import one_line
from shared.rate_limit import RateLimiter

log = logging.getLogger(__name__)

SPEAKER_CAPABILITY = "speaker"

#: A stream that sent audio this recently counts as live when choosing one for a device none has carried.
RECENT_AUDIO_S: Final = 600.0
#: Announcements an asker may start at once (then AI_ANNOUNCE_PER_MIN refills them).
ANNOUNCE_BURST: Final = 3.0
# The two shared askers: ':' never occurs in a device id, so no device shares their budget.
CHAT_ASKER: Final = ":chat"  # every typed chat session together (see the module doc)
PLANE_ASKER: Final = ":broadcast"  # ControlPlane.broadcast
TOO_MANY: Final = "Too many announcements; try again in a minute."


class SpeakError(Exception):
    """The text cannot be spoken on the target; the message says why (one line)."""


class TooManyAnnouncements(SpeakError):
    """The asker is over its AI_ANNOUNCE_PER_MIN budget."""


class AnnounceLimit:
    """A token bucket per asker on an injected clock: ``per_min`` on average, :data:`ANNOUNCE_BURST` at once."""

    def __init__(self, per_min: float, metrics: ControlMetrics, *, clock: Callable[[], float] = time.monotonic
                 ) -> None:
        self.per_min = per_min
        self.metrics = metrics
        # Askers are device ids the hub authenticated plus two fixed keys: few, but bounded anyway.
        self._buckets = RateLimiter(per_min / 60.0, min(ANNOUNCE_BURST, max(1.0, per_min)), clock=clock,
                                    max_keys=4096)

    def admit(self, asker: str) -> None:
        """Charge one announcement to ``asker``; raises :class:`TooManyAnnouncements` (counted) when over."""
        if self._buckets.allow(asker):
            return
        self.metrics.event("announce_limited")
        log.info("announcement by %s refused: over AI_ANNOUNCE_PER_MIN=%g", asker, self.per_min)
        raise TooManyAnnouncements(f"too many announcements (AI_ANNOUNCE_PER_MIN={self.per_min:g}); "
                                   "try again in a minute")


@dataclass(frozen=True, slots=True)
class Spoken:
    """Speech started on one device; ``task`` ends when its is_final was queued (or it was cancelled)."""

    device_id: str
    task: asyncio.Task[None]


class Speaker:
    def __init__(
        self,
        pipeline: Speech,
        registry: DeviceRegistry,
        metrics: ControlMetrics,
        sessions: Callable[[], Iterable[ConversationSession]],
        *,
        limit: AnnounceLimit | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.pipeline = pipeline
        self.registry = registry
        self.metrics = metrics
        self._sessions = sessions
        self.limit = limit  # None: no budget (unit tests); the control plane passes AI_ANNOUNCE_PER_MIN's
        self.clock = clock  # the time base of ConversationSession.heard

    def admit(self, asker: str) -> None:
        """Charge one announcement to ``asker`` (see :class:`AnnounceLimit`); raises :class:`TooManyAnnouncements`."""
        if self.limit is not None:
            self.limit.admit(asker)

    def targets(self, name: str) -> list[str]:
        """Device ids for ``name``: the device itself, else the online speaker devices of that room."""
        record = self.registry.get(name)
        if record is not None:
            if not record.online:
                raise SpeakError(f"device {name} is offline")
            if SPEAKER_CAPABILITY not in record.capabilities:
                raise SpeakError(f"device {name} has no speaker")
            return [name]
        in_room = [
            d.device_id for d in self.registry.in_room(name) if d.online and SPEAKER_CAPABILITY in d.capabilities
        ]
        if in_room:
            return in_room
        raise SpeakError(f"no online device or room with a speaker called {name}")

    def speak(self, name: str, text: str, *, asker: str | None = None) -> list[Spoken]:
        """Start speaking ``text`` on the device (or room) ``name``; raises :class:`SpeakError`.

        With ``asker`` the speech is charged to its budget once every target was found (a refused
        target costs nothing); without, the caller has charged it (:meth:`admit`)."""
        streams = [(d, self._stream_for(d)) for d in self.targets(name)]  # all found before any starts
        if asker is not None:
            self.admit(asker)
        try:
            started = [Spoken(d, stream.start_unprompted_turn(d, self._body(text))) for d, stream in streams]
        except RuntimeError as exc:  # the stream is closing
            raise SpeakError(str(exc)) from None
        for spoken in started:
            spoken.task.add_done_callback(self._finished)
        self.metrics.event("speech_started")
        log.info("speaking %d characters on %s", len(text), ", ".join(d for d, _ in streams))
        return started

    def play(self, name: str, body: Callable[[Turn], Awaitable[None]]) -> list[Spoken]:
        """Start ``body`` (e.g. :func:`sound_body`: an alarm) as an unprompted turn on the device (or
        room) ``name``; uncharged (the caller decides what a budget is). Raises :class:`SpeakError`."""
        streams = [(d, self._stream_for(d)) for d in self.targets(name)]
        try:
            started = [Spoken(d, stream.start_unprompted_turn(d, body)) for d, stream in streams]
        except RuntimeError as exc:  # the stream is closing
            raise SpeakError(str(exc)) from None
        for spoken in started:
            spoken.task.add_done_callback(self._finished)
        self.metrics.event("sound_started")
        return started

    def _stream_for(self, device_id: str) -> ConversationSession:
        """The stream to speak for ``device_id`` on (see the module doc); raises :class:`SpeakError`."""
        sessions = list(self._sessions())
        if not sessions:
            raise SpeakError("no hub is connected to the AI server")
        carrying = [(s.heard[device_id], i) for i, s in enumerate(sessions) if device_id in s.heard]
        if carrying:
            return sessions[max(carrying)[1]]
        if len(sessions) == 1:
            return sessions[0]
        since = self.clock() - RECENT_AUDIO_S
        live = [s for s in sessions if max(s.heard.values(), default=-float("inf")) >= since]
        if len(live) == 1:
            return live[0]
        raise SpeakError(
            f"cannot tell which of the {len(sessions)} connected hubs carries device {device_id}: none has "
            f"sent its audio, and {len(live) or 'none'} sent any audio in the last {RECENT_AUDIO_S:g} s"
        )

    def _body(self, text: str) -> Callable[[Turn], Awaitable[None]]:
        async def body(turn: Turn) -> None:
            code: pb.ErrorCode.ValueType = pb.NONE
            message = ""
            try:
                await self._synthesise(turn, text)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the text reply already went out; the device just stays silent
                code, message = pb.TTS_FAILED, one_line(exc)
                log.warning("speaking on %s failed: %s", turn.device_id, message)
            self.metrics.event("speech_done" if code == pb.NONE else "speech_failed")
            turn.send(turn.output(is_final=True, reply_text=text, error_code=code, error_message=message))

        return body

    async def _synthesise(self, turn: Turn, text: str) -> None:
        """Clause by clause, as spoken replies are, so a barge-in cuts in between clauses."""
        splitter = ClauseSplitter()
        for clause in [*splitter.push(text), *splitter.flush()]:
            await self.pipeline.speak_clause(turn, clause)

    def _finished(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():  # barge-in, a new utterance, or the stream closed
            self.metrics.event("speech_cancelled")
        elif (exc := task.exception()) is not None:
            self.metrics.event("speech_failed")
            log.warning("speech task failed: %s", one_line(exc))


def sound_body(
    pipeline: Speech, pcm: bytes, rate: int, text: str, hold: Callable[[float], Awaitable[None]],
) -> Callable[[Turn], Awaitable[None]]:
    """An unprompted turn that plays ``pcm`` (16-bit mono at ``rate``), then speaks ``text``, then
    stays open for as long as the device needs to play it all (``hold(seconds)``, on the caller's
    clock) before its is_final: audio is queued faster than real time, and a turn still open is
    what a barge-in (INTERRUPT) cancels, so the caller sees the cancellation (a ringing timer stops)."""

    async def body(turn: Turn) -> None:
        step = max(2, rate * pipeline.chunk_ms // 1000 * 2)
        for start in range(0, len(pcm), step):
            turn.send(turn.output(audio_pcm=pcm[start : start + step], sample_rate=rate))
        played = len(pcm) / 2 / rate
        code: pb.ErrorCode.ValueType = pb.NONE
        message = ""
        if text:
            samples, played_at = [0], [rate]  # counted as the clauses are queued: TTS picks its rate
            sink = turn.sink

            def counting(t: Turn, msg: pb.AudioOutput) -> None:
                if msg.audio_pcm and msg.sample_rate:
                    samples[0] += len(msg.audio_pcm) // 2
                    played_at[0] = msg.sample_rate
                if sink is not None:
                    sink(t, msg)

            turn.sink = counting
            try:
                await pipeline.speak_clause(turn, text)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the sound went out; the words are in reply_text
                code, message = pb.TTS_FAILED, one_line(exc)
                log.warning("speaking on %s failed: %s", turn.device_id, message)
            finally:
                turn.sink = sink
            played += samples[0] / played_at[0]
        await hold(played)
        turn.send(turn.output(is_final=True, reply_text=text, error_code=code, error_message=message))

    return body
