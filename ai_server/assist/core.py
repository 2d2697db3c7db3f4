"""The assist layer's shared types: who asks, what was recognised, what is answered, and the registry.

A feature module (timers, reminders, Home Assistant, ...) exposes ``install(services)`` that
registers its handlers and slot lists here; the recognizer (``ai_server.assist.intents``) and
the LLM tools (``ai_server.assist.tools``) only ever call :meth:`IntentRegistry.handle`.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("naila.assist")


@dataclass(frozen=True)
class AssistContext:
    """Who asks, and when. A voice turn has ``device_id`` (and usually ``room``); a typed chat has
    ``session_id``. ``now`` is timezone-aware, in the household's zone (``ASSIST_TIMEZONE``)."""

    now: dt.datetime
    device_id: str | None = None
    room: str | None = None
    session_id: str | None = None

    @property
    def asker(self) -> str:
        """A stable key for per-asker state: the device id, else ``chat:<session>``."""
        if self.device_id:
            return self.device_id
        return f"chat:{self.session_id or ''}"


@dataclass(frozen=True)
class IntentMatch:
    """A recognised request: the intent's name (Home Assistant's, e.g. ``HassStartTimer``, or one
    of ours, e.g. ``NailaRemind``), its slots by name, and the sentence it came from."""

    intent: str
    slots: Mapping[str, Any] = field(default_factory=dict)
    text: str = ""


@dataclass(frozen=True)
class AssistReply:
    """What the assistant says. ``handled=False`` means "not mine after all": fall through to the
    LLM. ``data`` carries machine-readable results (tool-call answers, tests)."""

    text: str
    intent: str
    handled: bool = True
    data: Mapping[str, Any] = field(default_factory=dict)


Handler = Callable[[IntentMatch, AssistContext], Awaitable[AssistReply]]
Preview = Callable[[IntentMatch, AssistContext], "str | None"]
#: A slot list: (spoken name, value, context) rows, e.g. ("kitchen lights", "light.kitchen", {"domain": "light"}).
SlotRows = list[tuple[str, Any, dict[str, Any]]]
SlotProvider = Callable[[], SlotRows]


class IntentRegistry:
    """Handlers by intent name, and the providers of dynamic slot lists (areas, entity names)."""

    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}
        self._slots: dict[str, list[SlotProvider]] = {}
        self._read_only: set[str] = set()
        self._previews: dict[str, Preview] = {}

    def register(self, intent: str, handler: Handler, *, read_only: bool = False,
                 preview: Preview | None = None) -> None:
        """``read_only``: the handler only answers (the time, a sum) and changes nothing, so it may
        run during the hub's hangover, before END commits the turn (issue 20: its answer is then
        synthesised by END, like a preemptive LLM reply). ``preview``, for a handler that acts
        ("set a timer"): the sentence it will most likely say, computed without acting, which is
        synthesised during the hangover and spoken at once if the handler, run at END, says it."""
        if intent in self._handlers:
            raise ValueError(f"intent {intent!r} already has a handler")
        self._handlers[intent] = handler
        if read_only:
            self._read_only.add(intent)
        if preview is not None:
            self._previews[intent] = preview

    def replace(self, intent: str, handler: Handler) -> Handler | None:
        """Set the handler for ``intent`` even when one exists (a real feature taking over from a
        default one, e.g. Home Assistant's device control over "Home Assistant isn't set up");
        returns the handler it replaced."""
        previous = self._handlers.get(intent)
        self._handlers[intent] = handler
        self._read_only.discard(intent)  # the new handler may act
        self._previews.pop(intent, None)  # and say something else
        return previous

    def handles(self, intent: str) -> bool:
        return intent in self._handlers

    def read_only(self, intent: str) -> bool:
        """Whether ``intent``'s handler was registered as only answering (see :meth:`register`)."""
        return intent in self._read_only

    def preview(self, match: IntentMatch, ctx: AssistContext) -> str | None:
        """What ``match``'s handler will most likely say, without acting (see :meth:`register`)."""
        fn = self._previews.get(match.intent)
        return None if fn is None else fn(match, ctx)

    @property
    def intents(self) -> list[str]:
        return sorted(self._handlers)

    def add_slot_provider(self, name: str, provider: SlotProvider) -> None:
        self._slots.setdefault(name, []).append(provider)

    def slot_rows(self) -> dict[str, SlotRows]:
        """Every dynamic slot list, as its providers give it now (providers must be cheap: cached)."""
        out: dict[str, SlotRows] = {}
        for name, providers in self._slots.items():
            rows: SlotRows = []
            for provider in providers:
                try:
                    rows.extend(provider())
                except Exception:  # one broken provider must not silence every command
                    log.exception("slot list %r: provider failed", name)
            out[name] = rows
        return out

    async def handle(self, match: IntentMatch, ctx: AssistContext) -> AssistReply | None:
        """The handler's reply, or None when no handler is registered for the intent."""
        handler = self._handlers.get(match.intent)
        if handler is None:
            return None
        return await handler(match, ctx)


@dataclass
class AssistServices:
    """What a feature's ``install(services)`` gets from the composition root (ai_server/app.py).

    ``now`` is the household's wall clock (timezone-aware, ``ASSIST_TIMEZONE``); tests pass a
    hand-moved one. ``data_dir`` is the persistent store folder (ai_server.store.home): features
    that must survive a restart (timers, reminders) keep their state there.
    """

    registry: IntentRegistry
    now: Callable[[], dt.datetime]
    data_dir: str
    settings: Any = None  # AIServerSettings (Any: tests build services without the whole config)
