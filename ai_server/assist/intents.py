"""The intent recognizer: hassil over home-assistant-intents' sentences merged with ours.

Home Assistant's own English templates (``home_assistant_intents.get_intents``) give timers, time,
date, device control and broadcasts; the YAML files in ``sentences/`` add NAILA's intents (the time
in a city, conversions, arithmetic, replays and announcements: routing.yaml, which
ai_server/routing.py also matches alone to read the place and the words). The merged templates compile
once per language (:func:`compiled`); the dynamic slot lists (areas, entity names, cities, units)
come from the :class:`~ai_server.assist.core.IntentRegistry` and are rebuilt only when their rows
change, so a sentence costs about 2 ms after the first (``bench``: see tests/ai_server/assist).
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import yaml  # type: ignore[import-untyped]  # pyyaml (hassil depends on it) ships no stubs
from hassil import Intents, TextSlotList, recognize_best
from hassil.intents import SlotList
from hassil.util import merge_dict
from home_assistant_intents import get_intents

from ai_server.assist.core import IntentMatch, SlotRows

log = logging.getLogger("naila.assist")

SENTENCES_DIR: Final = Path(__file__).with_name("sentences")
# Lists a template may name that only exist at run time (Home Assistant's areas, floors and entity
# names; our cities, units, operators): an empty list rather than hassil's MissingListError.
DYNAMIC_LISTS: Final = ("name", "area", "floor", "city", "unit", "operator", "naila_device")
# The asker's area for a sentence that needs one ("turn off the lights") when the asker has no room.
NO_ROOM: Final = "\x00no room"
# Wake words the STT may have kept at the start of the transcript ("okay nabu, what time is it").
WAKE_WORDS: Final = ("okay nabu", "ok nabu", "hey jarvis", "hey mycroft", "alexa", "hey naila", "ok naila",
                     "okay naila", "naila")
# A leading wake word (and the punctuation after it); ai_server.routing cuts it off the same way.
WAKE_PREFIX: Final = re.compile(r"^(?:(?:" + "|".join(re.escape(w) for w in WAKE_WORDS) + r")\b[\s,.!?]*)+")
_SYMBOLS: Final = (("×", " times "), ("*", " times "), ("+", " plus "), ("÷", " divided by "), ("%", " percent "),
                   ("=", " "))  # fmt: skip
_THOUSANDS: Final = re.compile(r"(?<=\d),(?=\d{3}\b)")  # "1,000" -> "1000"
_NUMBER_SLASH: Final = re.compile(r"(?<=\d)\s*/\s*(?=\d)")  # "10/4" -> "10 divided by 4"
_NUMBER_MINUS: Final = re.compile(r"(?<=\d)\s+-\s*(?=\d)")  # "10 - 4" -> "10 minus 4"
_NOT_WORD: Final = re.compile(r"[^\w\s'.-]|(?<!\d)\.|\.(?!\d)|(?<!\w)-|-(?!\w)")  # keep 2.5, what's, well-known


def normalize(text: str) -> str:
    """The transcript as the templates are written: lower case, no punctuation (decimal points and
    apostrophes kept), arithmetic symbols as words, a leading wake word dropped."""
    text = text.lower().strip()
    text = _THOUSANDS.sub("", text)
    text = _NUMBER_SLASH.sub(" divided by ", text)
    text = _NUMBER_MINUS.sub(" minus ", text)
    for symbol, words in _SYMBOLS:
        text = text.replace(symbol, words)
    text = text.replace("’", "'")
    text = _NOT_WORD.sub(" ", text)
    text = " ".join(text.split())
    return WAKE_PREFIX.sub("", text).strip()


@functools.cache
def compiled(language: str = "en") -> Intents:
    """Home Assistant's intents for ``language`` merged with ours; built once per process."""
    data = get_intents(language)
    if data is None:
        raise ValueError(f"home-assistant-intents has no sentences for language {language!r} (ASSIST_LANGUAGE)")
    # Every feature's file in sentences/ (en.yaml, timers.yaml, reminders.yaml, ...) whose language matches.
    for path in sorted(SENTENCES_DIR.glob("*.yaml")):
        ours = yaml.safe_load(path.read_text(encoding="utf-8"))
        if isinstance(ours, dict) and ours.get("language", language) == language:
            merge_dict(data, ours)
    return Intents.from_dict(data)


class Recognizer:
    """``recognize(text, slot_rows)``: the best :class:`IntentMatch`, or None (the LLM answers)."""

    def __init__(self, language: str = "en") -> None:
        self.language = language
        self.intents = compiled(language)
        self.skip_words: list[str] = list(self.intents.skip_words)
        self._lists: dict[str, tuple[SlotRows, SlotList]] = {}

    def warm(self) -> None:
        """The first recognition costs ~120 ms (hassil builds its matchers): pay it at start-up."""
        self.recognize("what time is it", {})

    def recognize(self, text: str, slot_rows: Mapping[str, SlotRows], room: str | None = None) -> IntentMatch | None:
        said = normalize(text)
        if not said:
            return None
        # A device's room is the "here" of "turn on the lights" (Home Assistant's satellite area).
        context: dict[str, Any] | None = {"area": room} if room else None
        result = recognize_best(
            said, self.intents, slot_lists=self._slot_lists(slot_rows), skip_words=self.skip_words,
            intent_context=context, language=self.language, best_slot_name="name",
        )
        if context is not None and (result is None or not result.intent.name.startswith("Naila")):
            # The room can turn a bare "stop" into Home Assistant's "pause the media here": our own
            # command for the same words (stop a ringing timer) wins over one made up from context.
            plain = recognize_best(
                said, self.intents, slot_lists=self._slot_lists(slot_rows), skip_words=self.skip_words,
                language=self.language, best_slot_name="name",
            )
            if plain is not None and plain.intent.name.startswith("Naila"):
                result = plain
        if result is None and context is None:
            # "turn off the lights" from a device without a room (none in its status): Home Assistant's
            # sentence needs the satellite's area. Match it with a stand-in area that is then dropped,
            # so the handler answers for no room ("which room do you mean?", or the only such device,
            # or "Home Assistant isn't set up") instead of the LLM pretending it switched something.
            result = recognize_best(
                said, self.intents, slot_lists=self._slot_lists(slot_rows), skip_words=self.skip_words,
                intent_context={"area": NO_ROOM}, language=self.language, best_slot_name="name",
            )
        if result is None:
            return None
        slots: dict[str, Any] = {}
        for name, entity in result.entities.items():
            value = entity.value
            if value == NO_ROOM:
                continue
            slots[name] = value.strip() if isinstance(value, str) else value
        return IntentMatch(result.intent.name, slots, text)

    def _slot_lists(self, slot_rows: Mapping[str, SlotRows]) -> dict[str, SlotList]:
        out: dict[str, SlotList] = {}
        for name in {*DYNAMIC_LISTS, *slot_rows}:
            rows = slot_rows.get(name, [])
            cached = self._lists.get(name)
            if cached is None or cached[0] != rows:  # rebuilt only when a provider's rows changed
                cached = (list(rows), TextSlotList.from_tuples(rows, allow_template=False, name=name))
                self._lists[name] = cached
            out[name] = cached[1]
        return out
