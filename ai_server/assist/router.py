"""The intent fast path: the pipeline's router (``Pipeline.router``) and the typed chat's first stop.

Every transcript is recognised (hassil, ~2 ms) before the LLM is asked. A recognised intent with a
registered handler is carried out once the turn is committed and its reply is the spoken answer (no
LLM). No match, no handler, or a handler that says ``handled=False`` is a fall-through: the LLM
answers as before. With Home Assistant's conversation agent installed
(``HomeAssistantConversation``, HA_CONVERSATION_FALLBACK) an unmatched request is offered to it first.

Counted in the pipeline's metrics (``naila_ai_events``): ``intent_turns`` and ``intent:<Intent>``
for answered commands, ``intent_fall_throughs`` for recognised-but-declined ones and
``intent_errors``; the turn's timing has no ``llm_first_token`` for a command turn.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import datetime

from ai_server.assist.core import AssistContext, AssistReply, IntentMatch, IntentRegistry
from ai_server.assist.intents import Recognizer
from ai_server.metrics import Metrics
from ai_server.pipeline import PreviewedAction, ReadOnlyAction, Turn
from shared.errors import one_line

log = logging.getLogger("naila.assist")

CONVERSATION_INTENT = "HomeAssistantConversation"  # ai_server.assist.home_assistant's agent hand-off
FAILED = "Sorry, I couldn't do that."


class AssistRouter:
    def __init__(self, registry: IntentRegistry, recognizer: Recognizer, metrics: Metrics,
                 now: Callable[[], datetime]) -> None:
        self.registry = registry
        self.recognizer = recognizer
        self.metrics = metrics
        self.now = now
        self.recognize_ms = 0.0  # the last recognition's cost (tests, bench)

    def recognize(self, text: str, room: str | None = None) -> IntentMatch | None:
        """The intent ``text`` asks for with a handler here, or None (no match, or nobody handles it)."""
        start = time.perf_counter()
        match = self.recognizer.recognize(text, self.registry.slot_rows(), room=room)
        self.recognize_ms = (time.perf_counter() - start) * 1000.0
        if match is not None and not self.registry.handles(match.intent):
            log.debug("intent %s has no handler: the LLM answers %r", match.intent, text)
            self.metrics.count("intent_unhandled")
            return None
        return match

    # -- the pipeline's router -------------------------------------------------------------------
    def route(self, turn: Turn) -> Callable[[], Awaitable[str | None]] | None:
        """Recognise only (a preemptive turn may still be discarded); the handler runs in the action,
        which for a read-only intent (the time, a sum) is a ReadOnlyAction: it runs before END."""
        match = self.recognize(turn.transcript, turn.room or None)
        if match is None and self.registry.handles(CONVERSATION_INTENT):
            match = IntentMatch(CONVERSATION_INTENT, {}, turn.transcript)
        if match is None:
            return None
        turn.mark("intent")
        found = match

        async def act() -> str | None:
            reply = await self.run(found, self._context(turn))
            return None if reply is None else reply.text

        if self.registry.read_only(found.intent):
            return ReadOnlyAction(act)
        try:
            preview = self.registry.preview(found, self._context(turn))
        except Exception:  # a preview is only a guess: a bug in one costs the head start, not the turn
            log.exception("intent %s: preview failed", found.intent)
            preview = None
        return PreviewedAction(act, preview) if preview else act

    def _context(self, turn: Turn) -> AssistContext:
        return AssistContext(now=self.now(), device_id=turn.device_id, room=turn.room or None)

    # -- typed chat ------------------------------------------------------------------------------
    async def answer(self, text: str, ctx: AssistContext) -> AssistReply | None:
        """A typed request's answer by code, or None: the LLM answers. ``ctx.now`` is replaced by the
        household's clock (ASSIST_TIMEZONE)."""
        ctx = dataclasses.replace(ctx, now=self.now())
        match = self.recognize(text, ctx.room)
        if match is None and self.registry.handles(CONVERSATION_INTENT):
            match = IntentMatch(CONVERSATION_INTENT, {}, text)
        return None if match is None else await self.run(match, ctx)

    async def run(self, match: IntentMatch, ctx: AssistContext) -> AssistReply | None:
        """Run the handler: its reply, or None when it declines (the LLM answers). A handler that raises
        is logged and counted and the asker hears that it failed: the LLM must not pretend it worked."""
        try:
            reply = await self.registry.handle(match, ctx)
        except Exception as exc:
            log.exception("intent %s failed for %s: %s", match.intent, ctx.asker, one_line(exc))
            self.metrics.count("intent_errors")
            return AssistReply(FAILED, match.intent, data={"error": one_line(exc)})
        if reply is None or not reply.handled or not reply.text.strip():
            self.metrics.count("intent_fall_throughs")
            return None
        self.metrics.count("intent_turns")
        self.metrics.count(f"intent:{match.intent}")
        return reply


# Device control Home Assistant answers (ai_server.assist.home_assistant replaces these when HA_URL
# and HA_TOKEN are set). Without it the assistant says so plainly rather than letting the LLM pretend.
DEVICE_INTENTS = (
    "HassTurnOn", "HassTurnOff", "HassLightSet", "HassGetState", "HassClimateGetTemperature",
    "HassClimateSetTemperature", "HassClimateSetFanMode", "HassSetPosition", "HassFanSetSpeed",
    "HassMediaNext", "HassMediaPrevious", "HassMediaPause", "HassMediaUnpause", "HassMediaPlayerMute",
    "HassMediaPlayerUnmute", "HassMediaSearchAndPlay", "HassSetVolume", "HassSetVolumeRelative",
    "HassVacuumStart", "HassVacuumReturnToBase", "HassVacuumCleanArea", "HassLawnMowerStartMowing",
    "HassLawnMowerDock",
)  # fmt: skip
NO_HOME_ASSISTANT = "I can't control devices: Home Assistant isn't set up."


async def no_home_assistant(match: IntentMatch, ctx: AssistContext) -> AssistReply:
    if match.slots.get("domain") == "person":
        # Home Assistant's "who is {zone}" takes any words as the zone: "who is the president of the
        # united states" is a question for the LLM, "who is in the living room" one for the cameras.
        return AssistReply("", match.intent, handled=False)
    return AssistReply(NO_HOME_ASSISTANT, match.intent, data={"home_assistant": False})


def install_defaults(registry: IntentRegistry) -> None:
    """Register "Home Assistant isn't set up" for every device-control intent nobody handles yet."""
    for intent in DEVICE_INTENTS:
        if not registry.handles(intent):
            registry.register(intent, no_home_assistant)
