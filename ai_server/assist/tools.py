"""The household actions as OpenAI tools, built from the intent registry (the domain half of the
LLM tools; the engine, ai_server/llm/openai_compat.py, sees only :class:`ai_server.llm.tools.Tools`).

One tool per action family (timers, clock, reminders, devices, cameras, history): its JSON
schema has an ``action`` enum (only the actions whose intent has a handler now) and the
family's slots. A tool call becomes ``IntentMatch(intent, slots)`` -> ``registry.handle`` and
the reply's text is the tool result the model reads back. The same handlers answer the intent
fast path, so a command does the same thing whether hassil or the model recognised it.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import datetime as dt
import logging
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from ai_server.assist.core import AssistContext, AssistReply, IntentMatch, IntentRegistry
from ai_server.assist.time_date import places
from ai_server.llm.tools import ToolCall

log = logging.getLogger(__name__)

_INT = {"type": "integer", "minimum": 0}


@dataclass(frozen=True)
class ToolFamily:
    """One tool: ``actions`` maps the ``action`` enum's values to intent names."""

    name: str
    description: str
    actions: Mapping[str, str]
    slots: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


# Slot names are the intents' own (Home Assistant's: hours/minutes/seconds/name/area/...), so a
# handler reads a tool call exactly like a hassil match. Order matters for small models: they
# fill properties in schema order, and with "hours" first Qwen 0.5B set a 5-minute timer to
# 5 hours; minutes first got it right.
FAMILIES: tuple[ToolFamily, ...] = (
    ToolFamily(
        "timer",
        "Start, cancel, check, pause, resume or change a countdown timer.",
        {
            "start": "HassStartTimer", "cancel": "HassCancelTimer", "cancel_all": "HassCancelAllTimers",
            "status": "HassTimerStatus", "pause": "HassPauseTimer", "resume": "HassUnpauseTimer",
            "add_time": "HassIncreaseTimer", "remove_time": "HassDecreaseTimer",
        },
        {"minutes": _INT, "seconds": _INT, "hours": _INT,
         "name": {"type": "string", "description": "the timer's name, only if the user gave one"}},
    ),
    ToolFamily(
        "clock",
        "The current time or date, here or in another city.",
        {"time": "HassGetCurrentTime", "date": "HassGetCurrentDate"},
        {"place": {"type": "string", "description": "a city, only if the user named one"}},
    ),
    ToolFamily(
        "reminder",
        "Remember to remind the user of something at a time; list or cancel reminders.",
        {"add": "NailaRemind", "list": "NailaListReminders", "cancel": "NailaCancelReminder"},
        {"task": {"type": "string", "description": "what to remind of"},
         "when": {"type": "string", "description": "when, in the user's words, e.g. tomorrow at 9"}},
    ),
    ToolFamily(
        "device",
        "Turn home devices (lights, switches, fans, covers) on or off, set a light, or read a device's state.",
        {"turn_on": "HassTurnOn", "turn_off": "HassTurnOff", "set_light": "HassLightSet", "state": "HassGetState"},
        {"name": {"type": "string", "description": "the device's name"},
         "area": {"type": "string", "description": "the room"},
         "brightness": {"type": "integer", "minimum": 0, "maximum": 100},
         "color": {"type": "string"}},
    ),
    ToolFamily(
        "camera",
        "Look at what a camera sees now.",
        {"look": "NailaLookCamera"},  # handler: install_looking
        {"camera": {"type": "string", "description": "the camera's name or room"}},
    ),
    ToolFamily(
        "history",
        "What happened earlier: past conversations, camera events.",
        {"recall": "NailaHistory"},
        {"query": {"type": "string", "description": "what to look up, e.g. who came to the door yesterday"}},
    ),
)

# ---- the camera and history tools' handlers ----------------------------------------------------
# They take the pipeline's own objects (its Looker, the media history) as parameters, typed by what is
# used, so this module imports neither the pipeline nor the media packages.


class _Seen(Protocol):
    @property
    def prompt(self) -> str: ...  # what a camera sees, for the model
    @property
    def answer(self) -> str: ...  # facts said as they are (stored events, "no camera can see that")


class CameraLooker(Protocol):
    """``ai_server.pipeline.Looker``: the voice pipeline's camera selection (spec §8.10)."""

    async def look(self, device_id: str, room: str, question: str) -> _Seen: ...


class _Found(Protocol):
    @property
    def text(self) -> str: ...


class HistoryLookup(Protocol):
    """``ai_server.media.history.HistoryQuestions``: stored camera events and past conversations."""

    async def look(self, question: str, asker: str) -> _Found | None: ...


CAMERA_INTENT = "NailaLookCamera"
HISTORY_INTENT = "NailaHistory"
NO_VIEW = "No camera can see that right now."
NOTHING_FOUND = "The history has nothing on that: ask about what a camera saw or what was said, and when."


def install_looking(registry: IntentRegistry, *, camera: CameraLooker | None, history: HistoryLookup | None) -> None:
    """Handlers for the camera and history tools: each only when its collaborator exists (no vision, no
    store: the tool is not offered, rather than offered and failing)."""
    if camera is not None:
        looker = camera

        async def look(match: IntentMatch, ctx: AssistContext) -> AssistReply:
            name = str(match.slots.get("camera") or "").strip()
            # The camera's name goes into a question the selection reads as visual and about that camera.
            question = (
                f"What does the {name} camera see right now?"
                if name
                else (match.text.strip() or "What do you see right now?")
            )
            seen = await looker.look(ctx.device_id or "", ctx.room or "", question)
            text = seen.answer.strip() or seen.prompt.strip()
            return AssistReply(text or NO_VIEW, CAMERA_INTENT, data={"seen": bool(text)})

        registry.register(CAMERA_INTENT, look)
    if history is not None:
        store = history

        async def recall(match: IntentMatch, ctx: AssistContext) -> AssistReply:
            query = str(match.slots.get("query") or match.text or "").strip()
            if not query:
                return AssistReply("Error: say what to look up.", HISTORY_INTENT, data={"found": False})
            # None: not a question about what cameras saw or what was said before (the model is told so,
            # rather than given the last event for "the capital of France").
            found = await store.look(query, ctx.asker)
            text = found.text.strip() if found is not None else ""
            return AssistReply(text or NOTHING_FOUND, HISTORY_INTENT, data={"found": bool(text)})

        registry.register(HISTORY_INTENT, recall)


#: The context of the turn a tool call belongs to: set by whoever starts the LLM for a voice turn
#: or a chat (a ContextVar, so it follows the asyncio task into the LLM backend's tool loop).
ASSIST_CONTEXT: contextvars.ContextVar[AssistContext | None] = contextvars.ContextVar(
    "naila_assist_context", default=None
)


@contextlib.contextmanager
def assist_context(ctx: AssistContext) -> Iterator[None]:
    """Tool calls made inside this block act for ``ctx`` (the asker's device, room, clock)."""
    token = ASSIST_CONTEXT.set(ctx)
    try:
        yield
    finally:
        ASSIST_CONTEXT.reset(token)


class ToolBox:
    """The registry's actions as tools, and the runner of the model's calls."""

    def __init__(self, registry: IntentRegistry, now: Callable[[], dt.datetime],
                 families: tuple[ToolFamily, ...] = FAMILIES) -> None:
        self.registry = registry
        self.now = now
        self.families = families
        self.counts: Counter[str] = Counter()  # tool_calls, tool_errors, ... (for metrics and tests)

    def _offered(self) -> Iterator[tuple[ToolFamily, list[str]]]:
        for family in self.families:
            actions = [a for a, intent in family.actions.items() if self.registry.handles(intent)]
            if actions:
                yield family, actions

    def specs(self) -> list[dict[str, Any]]:
        """OpenAI ``tools=``: the families with at least one registered intent (computed per
        request: features register at start-up, and Home Assistant may be off)."""
        out: list[dict[str, Any]] = []
        for family, actions in self._offered():
            props: dict[str, Any] = {"action": {"type": "string", "enum": actions}}
            props.update({k: dict(v) for k, v in family.slots.items()})
            out.append({"type": "function", "function": {
                "name": family.name, "description": family.description,
                "parameters": {"type": "object", "properties": props, "required": ["action"]},
            }})
        return out

    def names(self) -> set[str]:
        return {family.name for family, _ in self._offered()}

    async def run(self, call: ToolCall, text: str = "") -> str:
        """The tool result for the model: the handler's reply text, or a one-line error that the
        model can say (never raises: one bad call must not end the turn)."""
        self.counts["tool_calls"] += 1
        try:
            match = self._match(call, text)
        except ValueError as exc:
            self.counts["tool_errors"] += 1
            log.warning("tool call %s(%s) refused: %s", call.name, dict(call.arguments), exc)
            return f"Error: {exc}"
        # The asker from the turn; the time from the household clock, at the moment of the call.
        asker = ASSIST_CONTEXT.get()
        ctx = dataclasses.replace(asker, now=self.now()) if asker is not None else AssistContext(now=self.now())
        try:
            reply = await self.registry.handle(match, ctx)
        except Exception as exc:
            self.counts["tool_errors"] += 1
            log.exception("tool call %s: handler %s failed", call.name, match.intent)
            return f"Error: {match.intent} failed ({type(exc).__name__})."
        if reply is None or not reply.handled:
            self.counts["tool_unhandled"] += 1
            return "Error: that action is not available."
        return reply.text

    def _match(self, call: ToolCall, text: str) -> IntentMatch:
        family = next((f for f, _ in self._offered() if f.name == call.name), None)
        if family is None:
            raise ValueError(f"unknown tool {call.name!r}")
        args = dict(call.arguments)
        action = args.pop("action", None)
        if action is None and len(family.actions) == 1:
            action = next(iter(family.actions))
        intent = family.actions.get(str(action))
        if intent is None or not self.registry.handles(intent):
            raise ValueError(f"tool {call.name!r} has no action {action!r}")
        return _adapt(IntentMatch(intent, _clean_slots(family, args), text))


def _adapt(match: IntentMatch) -> IntentMatch:
    """Tool slots in the words a model fills best, turned into the slots the handlers read (the
    ones their hassil sentences give): a place -> NailaTimeIn's IANA zone, task + when -> the
    reminder sentence."""
    slots = dict(match.slots)
    if match.intent in ("HassGetCurrentTime", "HassGetCurrentDate") and slots.get("place"):
        place = str(slots.pop("place")).strip().lower()
        zone = places().get(place)
        if zone is None:
            raise ValueError(f"no time zone known for {place!r}")
        if match.intent == "HassGetCurrentTime":
            return IntentMatch("NailaTimeIn", {"city": zone}, match.text)
    if match.intent == "NailaRemind":
        task, when = str(slots.pop("task", "")).strip(), str(slots.pop("when", "")).strip()
        if not task:
            raise ValueError("a reminder needs a task")
        slots["reminder"] = f"to {task.removeprefix('to ')} {when}".strip()
    elif match.intent == "NailaCancelReminder":
        slots["reminder_name"] = str(slots.pop("task", "")).strip()
        slots.pop("when", None)
    return IntentMatch(match.intent, slots, match.text)


def _clean_slots(family: ToolFamily, args: Mapping[str, Any]) -> dict[str, Any]:
    """Only the family's slots; numbers given as strings become ints; empty values and zero
    durations (small models fill every property: "hours": 0) are dropped as not said."""
    slots: dict[str, Any] = {}
    for key, value in args.items():
        schema = family.slots.get(key)
        if schema is None or value is None or value == "":
            continue
        if schema.get("type") == "integer":
            try:
                value = int(value)
            except (TypeError, ValueError):
                raise ValueError(f"{key} must be a whole number, not {value!r}") from None
            if value == 0 and key in ("hours", "minutes", "seconds"):
                continue
        slots[key] = value
    return slots
