"""Spoken routing requests: "play it on the kitchen speaker", "announce dinner is ready in the kitchen".

:func:`parse_route` reads a transcript and, given the room names and device ids the server knows,
says whether it asks to send something to another room (or everywhere) rather than asking the
LLM a question. The sentences are hassil templates (``ai_server/assist/sentences/routing.yaml``,
the same ones the intent recognizer detects these requests with): the household's rooms and
device ids are list slots, the words to announce a wildcard slot, and a place named explicitly
that is no known room a wildcard slot this module then checks. The decision is made on every
voice turn before the LLM starts, so it has to be cheap (here: 1-4 ms for a routing request, about
0.03 ms for any other sentence, which hassil's literal-word prefilter turns away), and a false
positive takes the question away from the LLM, so the templates are narrow.

Two kinds of request:

* ``REPLAY``: play the assistant's last reply elsewhere. A replay verb (play, say, repeat, send,
  read), what to replay ("it", "that", "the last answer", "what you said"...), then a place:
  "play it on the kitchen speaker", "say that again in the living room", "repeat that everywhere".
* ``ANNOUNCE``: speak the user's own words elsewhere. "announce dinner is ready in the kitchen",
  "announce to the kitchen that dinner is ready", "tell everyone dinner is ready", "let everybody
  know ...". An announcement that names no place goes everywhere ("announce dinner is ready").

Places: a room or a device id, spoken with spaces for ``_``, ``-``, ``.`` ("living room" ==
``living_room``; "livingroom" too), optionally with "the" and a device word ("the kitchen
speaker", "the speakers in the kitchen"); or everywhere ("everyone", "all rooms", "every
speaker"...). A room wins over a device id spelled the same. An explicit place the lists miss is
still compared with the known names with spaces, ``_``, ``-``, ``.`` and apostrophes ignored
("the bed room" is ``Bedroom``, "the kids' room" is ``kids_room``).

A place that is named explicitly but unknown gives ``Scope.UNKNOWN`` (the caller says "I don't
know a room called garage" rather than guessing). "Explicitly" is narrow on purpose, because
"say that in French", "play it on repeat" or "read it to the kids" are not places: the templates
want "in the" before it, or a device or room word ("on the garage speaker", "to the game room"),
and the words must be at most three and not one of a few phrases that follow "in the" in ordinary
requests ("in the morning", "in the same voice"). An announcement whose *text* ends in "in the
garden" keeps those words in the text and goes everywhere ("the kids are in the garden" is an
announcement, not a room); only a place with a device or room word ("in the game room", "on the
garage speaker") is treated as a named room there.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

import yaml  # type: ignore[import-untyped]  # pyyaml (hassil depends on it) ships no stubs
from hassil import Intents, RecognizeResult, TextSlotList, recognize_all
from hassil.intents import SlotList

from ai_server.assist.intents import SENTENCES_DIR, WAKE_PREFIX


class RouteKind(StrEnum):
    REPLAY = "replay"  # replay the asking device's last reply
    ANNOUNCE = "announce"  # speak ``text``


class Scope(StrEnum):
    ROOM = "room"  # ``target`` is a room name as the devices report it
    DEVICE = "device"  # ``target`` is a device id
    ALL = "all"  # everywhere; ``target`` is ""
    UNKNOWN = "unknown"  # ``target`` is the place as the user said it, which names no known room


@dataclass(frozen=True, slots=True)
class Route:
    kind: RouteKind
    scope: Scope
    target: str = ""
    text: str = ""  # what to announce (ANNOUNCE only), as said, capitalised and punctuated

    @property
    def place(self) -> str:
        """The target as words to speak: "the living room", "kitchen pi", "everywhere"."""
        if self.scope is Scope.ALL:
            return "everywhere"
        words = _words_of_name(self.target)
        return f"the {words}" if self.scope is Scope.ROOM else words


SENTENCES: Final = SENTENCES_DIR / "routing.yaml"
ROUTE_INTENTS: Final = {"NailaReplay": RouteKind.REPLAY, "NailaAnnounce": RouteKind.ANNOUNCE}
# The templates' metadata.place, best first: anything known beats an explicit unknown place or no
# place ("announce X in the kitchen" is also "announce <X in the kitchen>" everywhere). A room and a
# device rank alike, so that the match that leaves fewer words to the wildcards wins ("announce on
# kitchen pi that ...": the device, not the room "kitchen" and "pi that ..."); a tie goes to the room.
_RANK: Final = {"room": (0, 0), "device": (0, 1), "all": (1, 0), "unknown": (2, 0), "none": (3, 0)}
_ARTICLES: Final = frozenset({"the", "my", "our"})
_DEVICE_WORDS: Final = frozenset({"speaker", "speakers", "device", "devices", "one"})
_TRAILING: Final = frozenset({"please", "too", "also", "again", "now", "thanks"})
# Follow "in the" in ordinary requests; never rooms ("say that in the morning", "in the same voice").
_NOT_PLACES: Final = frozenset(
    {"morning", "afternoon", "evening", "night", "end", "meantime", "future", "past", "background", "first place"}
)
_NOT_PLACE_WORDS: Final = frozenset(
    {"of", "a", "an", "with", "and", "or", "your", "his", "her", "their", "same", "voice", "style", "accent", "way",
     "language", "words", "tone", "order", "to", "in", "on", "that"}
)  # fmt: skip
_MAX_UNKNOWN_WORDS: Final = 3
_WORD: Final = re.compile(r"[^\W_]+(?:'[^\W_]+)*'?")  # letters/digits, apostrophes ("what's", "kids'")


def parse_route(transcript: str, rooms: Iterable[str], devices: Iterable[str] = ()) -> Route | None:
    """The routing request ``transcript`` makes, or None when it is not one (the LLM answers it)."""
    wake = WAKE_PREFIX.match(transcript.lower())
    text = transcript[wake.end() :] if wake else transcript  # lower() keeps the offsets of these words
    if not text.strip():
        return None
    places = _places(tuple(rooms), tuple(devices))
    results = recognize_all(text, _intents(), slot_lists=places.lists, skip_words=(), language="en")
    for result in sorted(results, key=_preference):
        found = _route(result, text, places)
        if found is not _NOT_THIS:
            return found if isinstance(found, Route) else None
    return None


# ---- from a template match to a route ----------------------------------------------------------

_NOT_THIS: Final = object()  # this match names no place after all: try the next one


def _preference(result: RecognizeResult) -> tuple[int, int, int]:
    """Best place kind first; then the least text in wildcards ("tell everyone that X": X, not "that X")."""
    meta = result.intent_metadata or {}
    group, tie = _RANK.get(str(meta.get("place")), (len(_RANK), 0))
    wild = sum(len(e.text) for e in result.entities_list if e.is_wildcard)
    return group, wild, tie


def _route(result: RecognizeResult, text: str, places: _Places) -> Route | object | None:
    """The match's route; None when it is a place with nothing to say (no routing request at all);
    ``_NOT_THIS`` when its place is not one."""
    meta: Mapping[str, Any] = result.intent_metadata or {}
    kind = ROUTE_INTENTS.get(result.intent.name)
    if kind is None:
        return _NOT_THIS
    entities = result.entities
    if "area" in entities:
        scope, target = Scope.ROOM, str(entities["area"].value)
    elif "naila_device" in entities:
        scope, target = Scope.DEVICE, str(entities["naila_device"].value)
    elif "unknown_place" in entities or "unknown_room" in entities:
        room = "unknown_room" in entities
        said = entities["unknown_room" if room else "unknown_place"].text
        resolved = places.resolve(f"{said} room" if room else said)
        if resolved is None:
            return _NOT_THIS
        scope, target = resolved
    else:
        scope, target = Scope.ALL, ""
    if meta.get("nothing_to_say"):
        return None  # "announce to the kitchen": nothing to say
    if kind is RouteKind.REPLAY:
        return Route(kind, scope, target)
    message = entities.get("message")
    said = _sentence(text, message.text_span) if message is not None and message.text_span else ""
    return Route(kind, scope, target, said) if said else _NOT_THIS


def _sentence(text: str, span: tuple[int, int]) -> str:
    """The transcript's own words in ``span`` (case and punctuation kept), as a sentence to speak."""
    start, end = span
    words = list(_WORD.finditer(text, start, end))
    while words and words[-1].group().lower() in ("please", "thanks"):
        words.pop()
    if not words:
        return ""
    said = text[words[0].start() : words[-1].end()]
    after = text[words[-1].end() :].strip()[:1]
    said += after if after in ("!", "?") else "."
    return said[0].upper() + said[1:]


# ---- places ----------------------------------------------------------------------------------


class _Places:
    """Known rooms and devices: as hassil lists (their spoken forms), and by a spelling-free key."""

    def __init__(self, rooms: tuple[str, ...], devices: tuple[str, ...]) -> None:
        self.rooms = {_key(r): r for r in rooms if _key(r)}
        self.devices = {_key(d): d for d in devices if _key(d)}
        self.lists: dict[str, SlotList] = {
            "area": _slot_list("area", self.rooms.values()),
            "naila_device": _slot_list("naila_device", self.devices.values()),
        }

    def resolve(self, said: str) -> tuple[Scope, str] | None:
        """(scope, target) for a place the lists missed ("the bed room", "the garage"), or None: no place."""
        words = [w.lower() for w in _WORD.findall(said)]
        while words and words[-1] in _TRAILING:
            words.pop()
        if words[-2:] == ["as", "well"]:
            words = words[:-2]
        if words and words[0] in _ARTICLES:
            words = words[1:]
        if len(words) > 1 and words[-1] in _DEVICE_WORDS:
            words = words[:-1]
        key = _key(" ".join(words))
        if key in self.rooms:
            return Scope.ROOM, self.rooms[key]
        if key in self.devices:
            return Scope.DEVICE, self.devices[key]
        if not words or len(words) > _MAX_UNKNOWN_WORDS:
            return None
        if " ".join(words) in _NOT_PLACES or _NOT_PLACE_WORDS.intersection(words):
            return None
        return Scope.UNKNOWN, " ".join(words)


@functools.lru_cache(maxsize=16)  # the registry's rooms and devices change rarely
def _places(rooms: tuple[str, ...], devices: tuple[str, ...]) -> _Places:
    return _Places(rooms, devices)


def _slot_list(name: str, values: Iterable[str]) -> TextSlotList:
    """A name's spoken forms: "living_room" as "living room" and "livingroom"."""
    rows: list[tuple[str, Any]] = []
    for value in values:
        spoken = _words_of_name(value).lower()
        for form in dict.fromkeys((spoken, spoken.replace(" ", ""))):
            if form:
                rows.append((form, value))
    return TextSlotList.from_tuples(rows, allow_template=False, name=name)


@functools.cache
def _intents() -> Intents:
    """The routing templates alone: not Home Assistant's hundreds of intents."""
    return Intents.from_dict(yaml.safe_load(SENTENCES.read_text(encoding="utf-8")))


def _key(name: str) -> str:
    return re.sub(r"[\W_]+", "", name.lower())


def _words_of_name(name: str) -> str:
    return " ".join(re.split(r"[\s_.\-]+", name.strip(" _.-")))
