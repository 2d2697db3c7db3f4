"""Spoken routing requests: "play it on the kitchen speaker", "announce dinner is ready in the kitchen".

:func:`parse_route` reads a transcript and, given the room names and device ids the server knows,
says whether it asks to send something to another room (or everywhere) rather than asking the
LLM a question. It is a small word-level parser, no LLM call: the decision is made on every voice
turn before the LLM starts, so it has to be instant, and a false positive takes the question away
from the LLM, so the phrasings are deliberately narrow.

Two kinds of request:

* ``REPLAY``: play the assistant's last reply elsewhere. A replay verb (play, say, repeat, send,
  read), what to replay ("it", "that", "the last answer", "what you said"...), then a place:
  "play it on the kitchen speaker", "say that again in the living room", "repeat that everywhere".
* ``ANNOUNCE``: speak the user's own words elsewhere. "announce dinner is ready in the kitchen",
  "announce to the kitchen that dinner is ready", "tell everyone dinner is ready", "let everybody
  know ...". An announcement that names no place goes everywhere ("announce dinner is ready").

Places: a room or a device id, matched case-insensitively with spaces, ``_``, ``-``, ``.`` and
apostrophes ignored ("living room" == ``living_room`` == "livingroom"), optionally with "the" and
a device word ("the kitchen speaker", "the speakers in the kitchen"); or everywhere ("everyone",
"all rooms", "every speaker"...). A room wins over a device id spelled the same.

A place that is named explicitly but unknown gives ``Scope.UNKNOWN`` (the caller says "I don't
know a room called garage" rather than guessing). "Explicitly" is narrow on purpose, because
"say that in French", "play it on repeat" or "read it to the kids" are not places: the words must
follow "in the" (or carry a device or room word: "on the garage speaker", "to the game room"), or
fill the place slot of "announce to ... that", be at most three words, and not be one of a few
phrases that follow "in the" in ordinary requests ("in the morning", "in the same voice").
An announcement whose *text* ends in "in the garden" keeps those words in the text and goes
everywhere ("the kids are in the garden" is an announcement, not a room); only a place with a
device or room word ("in the game room", "on the garage speaker") is treated as a named room there.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Final


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


@dataclass(frozen=True, slots=True)
class _Word:
    text: str  # lower case
    start: int  # span in the transcript, to cut the announcement out with its own case and punctuation
    end: int


_FILLER_START: Final = frozenset({"hey", "naila", "please", "ok", "okay", "so", "and", "now", "just"})
_ASK: Final = frozenset({"can", "could", "would", "will"})
_REPLAY_VERBS: Final = frozenset({"play", "say", "repeat", "send", "read"})
_ANNOUNCE_VERBS: Final = frozenset({"announce", "broadcast"})
_EVERYONE: Final = frozenset({"everyone", "everybody"})
# What a replay may refer to: "play <it> in the kitchen". Longest first.
_REPLAY_OBJECTS: Final = (
    ("what", "you", "just", "said"),
    ("what", "you", "said"),
    ("your", "last", "answer"),
    ("your", "last", "reply"),
    ("the", "last", "answer"),
    ("the", "last", "reply"),
    ("your", "answer"),
    ("your", "reply"),
    ("the", "answer"),
    ("the", "reply"),
    ("it",),
    ("that",),
    ("this",),
)
_AFTER_OBJECT: Final = frozenset({"again", "too", "also", "back", "out", "loud"})
# Prepositions that introduce a place. After all but "in"/"into", an unknown place needs a device or
# room word ("on the garage speaker", "to the game room"): "on the radio", "read it to the kids" are not rooms.
_PLACE_PREPS: Final = frozenset({"in", "into", "to", "on", "through", "across", "throughout"})
_ROOM_PREPS: Final = frozenset({"in", "into"})
_ARTICLES: Final = frozenset({"the", "my", "our"})
_DEVICE_WORDS: Final = frozenset({"speaker", "speakers", "device", "devices", "one"})
_TRAILING: Final = frozenset({"please", "too", "also", "again", "now", "thanks"})
_EVERYWHERE: Final = frozenset(
    {
        "everywhere",
        "everyone",
        "everybody",
        "all rooms",
        "all the rooms",
        "every room",
        "each room",
        "all speakers",
        "all the speakers",
        "every speaker",
        "all devices",
        "all the devices",
        "every device",
        "the whole house",
        "the house",
        "all over the house",
        "the entire house",
    }
)
# Follow "in the" in ordinary requests; never rooms ("say that in the morning", "in the same voice").
_NOT_PLACES: Final = frozenset(
    {"morning", "afternoon", "evening", "night", "end", "meantime", "future", "past", "background", "first place"}
)
_NOT_PLACE_WORDS: Final = frozenset(
    {"of", "a", "an", "with", "and", "or", "your", "his", "her", "their", "same", "voice", "style", "accent", "way",
     "language", "words", "tone", "order"}
)  # fmt: skip
_MAX_UNKNOWN_WORDS: Final = 3


def parse_route(transcript: str, rooms: Iterable[str], devices: Iterable[str] = ()) -> Route | None:
    """The routing request ``transcript`` makes, or None when it is not one (the LLM answers it)."""
    words = _tokens(transcript)
    words = _skip_preamble(words)
    if not words:
        return None
    places = _Places(rooms, devices)
    verb, rest = words[0].text, words[1:]
    if verb in _REPLAY_VERBS:
        return _replay(rest, places)
    if verb in _ANNOUNCE_VERBS:
        return _announce(transcript, rest, places)
    if verb == "tell" and rest:
        return _tell(transcript, rest, places)
    if verb == "let":  # "let everyone know ...", "let the kitchen know ..."
        know = next((i for i, w in enumerate(rest[:6]) if w.text == "know"), 0)
        return _tell(transcript, rest[:know] + rest[know + 1 :], places) if know else None
    return None


# ---- the three request shapes ----------------------------------------------------------------


def _replay(rest: list[_Word], places: _Places) -> Route | None:
    after = _after_prefix(rest, _REPLAY_OBJECTS)
    if after is None:
        return None
    while after and after[0].text in _AFTER_OBJECT:
        after = after[1:]
    if not after:
        return None  # "say that again": not for another room
    prep = after[0].text if after[0].text in _PLACE_PREPS else ""
    target = places.resolve(after[1:] if prep else after, prep, allow_unknown=True)
    return None if target is None else Route(RouteKind.REPLAY, *target)


def _announce(transcript: str, rest: list[_Word], places: _Places) -> Route | None:
    if not rest:
        return None
    if rest[0].text in ("to", "in", "on"):  # place first: "announce to the kitchen (that) dinner is ready"
        route = _place_first(transcript, rest[1:], places, allow_unknown=True)
        if route is not None:
            return route
        if places.resolve(rest[1:], "in", allow_unknown=True) is not None:
            return None  # "announce to the kitchen": nothing to say
        # else "announce in the morning we leave": all of it is the text
    elif rest[0].text not in _EVERYONE:  # "announce everywhere: ..." ("announce everyone is here" is text)
        route = _place_first(transcript, rest, places, allow_unknown=False)
        if route is not None and route.scope is Scope.ALL:
            return route
    body = rest[1:] if rest[0].text == "that" else rest
    # Place last: "announce dinner is ready in the kitchen"; the rightmost place-like tail wins.
    for i in range(len(body) - 1, 0, -1):
        tail = body[i:]
        if tail[0].text in _PLACE_PREPS:
            prep, place = tail[0].text, tail[1:]
        elif body[i - 1].text not in _PLACE_PREPS and _phrase(tail) in _EVERYWHERE:
            prep, place = "", tail  # "... everywhere"
        else:
            continue
        target = places.resolve(place, prep, allow_unknown=True, need_device_word=True)
        if target is not None:
            return _with_text(transcript, *target, body[:i])
    return _with_text(transcript, Scope.ALL, "", body)


def _tell(transcript: str, rest: list[_Word], places: _Places) -> Route | None:
    """Tell everyone (in the kitchen) that ..., tell the kitchen ...: only everyone or a known room, since
    "tell the truth" or "tell me a joke" are not routing."""
    if rest[0].text in _EVERYONE:
        if len(rest) > 2 and rest[1].text in ("in", "on"):  # "tell everyone in the kitchen ..."
            return _place_first(transcript, rest[2:], places, allow_unknown=True)
        return _with_text(transcript, Scope.ALL, "", rest[1:])
    route = _place_first(transcript, rest, places, allow_unknown=False)
    return route if route is not None and route.scope in (Scope.ROOM, Scope.DEVICE) else None


def _place_first(transcript: str, rest: list[_Word], places: _Places, *, allow_unknown: bool) -> Route | None:
    """A place, then the announcement: the longest known place wins, else (if allowed) an unknown one ending
    at "that" or at a device/room word, or the single word after "the"."""
    for n in range(min(len(rest) - 1, 6), 0, -1):
        target = places.resolve(rest[:n], "", allow_unknown=False)
        if target is not None:
            return _with_text(transcript, *target, rest[n:])
    if not allow_unknown or len(rest) < 2 or rest[0].text not in _ARTICLES:
        return None
    texts = [w.text for w in rest]
    end = next((i for i, t in enumerate(texts[:5]) if t == "that" or t in _DEVICE_WORDS or t == "room"), None)
    if end is None:
        end = 2
    elif texts[end] != "that":
        end += 1  # the device/room word belongs to the place
    target = places.resolve(rest[:end], "in", allow_unknown=True)  # a place slot: as explicit as "in the"
    return None if target is None else _with_text(transcript, *target, rest[end:])


def _with_text(transcript: str, scope: Scope, target: str, rest: list[_Word]) -> Route | None:
    if rest and rest[0].text in ("that", "to"):  # "tell everyone to come down" -> "Come down."
        rest = rest[1:]
    text = _cut(transcript, rest)
    return Route(RouteKind.ANNOUNCE, scope, target, text) if text else None


# ---- places ----------------------------------------------------------------------------------


class _Places:
    """Known rooms and devices by a spelling-free key ("Living_Room" -> "livingroom")."""

    def __init__(self, rooms: Iterable[str], devices: Iterable[str]) -> None:
        self.devices = {_key(d): d for d in devices if _key(d)}
        self.rooms = {_key(r): r for r in rooms if _key(r)}

    def resolve(
        self, place: Sequence[_Word], prep: str, *, allow_unknown: bool, need_device_word: bool = False
    ) -> tuple[Scope, str] | None:
        """(scope, target) for the words after the preposition ``prep`` ("" = none), or None: not a place."""
        words = [w.text for w in place]
        while words and words[-1] in _TRAILING:
            words.pop()
        if words[-2:] == ["as", "well"]:
            words = words[:-2]
        if " ".join(words) in _EVERYWHERE:
            return Scope.ALL, ""
        had_article = bool(words) and words[0] == "the"  # "my phone" is not a room named by mistake
        if words and words[0] in _ARTICLES:
            words = words[1:]
        known = self._known(words)
        if known is not None:
            return known
        words, device_word = _strip_device_words(words)
        known = self._known(words)
        if known is not None:
            return known
        # Not a known place: is it one named explicitly (see the module doc)?
        if not prep or not allow_unknown or not words or len(words) > _MAX_UNKNOWN_WORDS:
            return None
        named_room = device_word or words[-1] == "room"
        if need_device_word and not named_room:
            return None
        if not named_room and (prep not in _ROOM_PREPS or not had_article):
            return None
        if " ".join(words) in _NOT_PLACES or _NOT_PLACE_WORDS.intersection(words):
            return None
        return Scope.UNKNOWN, " ".join(words)

    def _known(self, words: Sequence[str]) -> tuple[Scope, str] | None:
        key = _key(" ".join(words))
        if key in self.rooms:
            return Scope.ROOM, self.rooms[key]
        if key in self.devices:
            return Scope.DEVICE, self.devices[key]
        return None


def _strip_device_words(words: list[str]) -> tuple[list[str], bool]:
    """ "speakers in the kitchen" / "kitchen speaker" -> (["kitchen"], True)."""
    if len(words) > 2 and words[0] in _DEVICE_WORDS and words[1] in ("in", "of"):
        words = words[2:]
        if words and words[0] in _ARTICLES:
            words = words[1:]
        return words, True
    if len(words) > 1 and words[-1] in _DEVICE_WORDS:
        return words[:-1], True
    return words, False


# ---- words -----------------------------------------------------------------------------------

_WORD: Final = re.compile(r"[^\W_]+(?:'[^\W_]+)*")  # letters/digits, inner apostrophes ("what's")


def _tokens(transcript: str) -> list[_Word]:
    return [_Word(m.group().lower(), m.start(), m.end()) for m in _WORD.finditer(transcript)]


def _skip_preamble(words: list[_Word]) -> list[_Word]:
    """Drop "hey naila, please", "could you (please)" before the verb."""
    i = 0
    while i < len(words):
        if words[i].text in _FILLER_START:
            i += 1
        elif words[i].text in _ASK and i + 1 < len(words) and words[i + 1].text == "you":
            i += 2
        else:
            break
    return words[i:]


def _after_prefix(words: list[_Word], prefixes: Iterable[tuple[str, ...]]) -> list[_Word] | None:
    texts = tuple(w.text for w in words)
    for prefix in prefixes:
        if texts[: len(prefix)] == prefix:
            return words[len(prefix) :]
    return None


def _phrase(words: Sequence[_Word]) -> str:
    return " ".join(w.text for w in words)


def _cut(transcript: str, words: Sequence[_Word]) -> str:
    """The transcript's own text for ``words`` (case and punctuation kept), as a sentence to speak."""
    while words and words[-1].text in ("please", "thanks"):
        words = words[:-1]
    if not words:
        return ""
    text = transcript[words[0].start : words[-1].end].strip()
    end = transcript[words[-1].end :].strip()[:1]
    text += end if end in ("!", "?") else "."
    return text[0].upper() + text[1:]


def _key(name: str) -> str:
    return re.sub(r"[\W_]+", "", name.lower())


def _words_of_name(name: str) -> str:
    return " ".join(re.split(r"[\s_.\-]+", name.strip(" _.-")))
