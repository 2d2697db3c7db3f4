"""Speak a text on a device through the hub: TTS audio pushed onto the hub's StreamConversation.

The hub routes every AudioOutput by ``device_id`` to that device's WebRTC session, whether or
not it answers something the device said (hub/server.py ``route_output`` ->
``DeviceSession.on_ai_output``: an AudioOutput with an empty conversation_id is played, and its
is_final closes it like a reply). So the AI server runs the speech as an *unprompted turn* on
the stream that carries the device (ai_server/session.py ``start_unprompted_turn``): same
writer, sequence numbers and barge-in as spoken replies.

Which stream: the one whose hub has sent audio for the device; a device that has not spoken
yet is unknown to every stream, so with exactly one hub connected (the usual home) that hub's
stream is used and the hub routes by device_id. Failures the AI server can see (unknown or
offline device, no speaker, no hub stream, several hubs and none knows the device) raise
:class:`SpeakError` before anything is synthesised; a TTS failure later ends the turn with
TTS_FAILED and is logged and counted. A device the hub does not have a session for is only
visible on the hub (it logs and counts "unknown device" outputs).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from ai_server.clauses import ClauseSplitter
from ai_server.control.metrics import ControlMetrics
from ai_server.control.registry import DeviceRegistry
from ai_server.pipeline import Pipeline, Turn, one_line
from ai_server.session import ConversationSession
from shared.contract import pb

log = logging.getLogger(__name__)

SPEAKER_CAPABILITY = "speaker"


class SpeakError(Exception):
    """The text cannot be spoken on the target; the message says why (one line)."""


@dataclass(frozen=True, slots=True)
class Spoken:
    """Speech started on one device; ``task`` ends when its is_final was queued (or it was cancelled)."""

    device_id: str
    task: asyncio.Task[None]


class Speaker:
    def __init__(
        self,
        pipeline: Pipeline,
        registry: DeviceRegistry,
        metrics: ControlMetrics,
        sessions: Callable[[], Iterable[ConversationSession]],
    ) -> None:
        self.pipeline = pipeline
        self.registry = registry
        self.metrics = metrics
        self._sessions = sessions

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

    def speak(self, name: str, text: str) -> list[Spoken]:
        """Start speaking ``text`` on the device (or room) ``name``; raises :class:`SpeakError`."""
        streams = [(d, self._stream_for(d)) for d in self.targets(name)]  # all found before any starts
        try:
            started = [Spoken(d, stream.start_unprompted_turn(d, self._body(text))) for d, stream in streams]
        except RuntimeError as exc:  # the stream is closing
            raise SpeakError(str(exc)) from None
        for spoken in started:
            spoken.task.add_done_callback(self._finished)
        self.metrics.event("speech_started")
        log.info("speaking %d characters on %s", len(text), ", ".join(d for d, _ in streams))
        return started

    def _stream_for(self, device_id: str) -> ConversationSession:
        sessions = list(self._sessions())
        knowing = [s for s in sessions if device_id in s.devices]
        if knowing:
            return knowing[-1]
        if len(sessions) == 1:
            return sessions[0]
        if not sessions:
            raise SpeakError("no hub is connected to the AI server")
        raise SpeakError(f"{len(sessions)} hubs are connected and none has carried device {device_id} yet")

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
