"""Historical questions (spec §8.8, §8.10 step 2): "what did the front door camera see at 3am".

A question is historical when it is about what cameras saw (a looking or event word, or a named
camera or zone) *and* points into the past: a time expression, "last"/"latest"/"earlier", or a
past-tense "did ... see", "happened", "was there". Time expressions are parsed by ``dateparser``
on an injected clock; camera and zone names are matched against what the cameras and the event
history know. The answer is built from the stored events only and cites times and cameras;
an unknown camera or an empty range gets a plain sentence saying so, never a guess.

Questions about past *conversations* ("what was I asking about yesterday", "what did we talk
about this morning") are answered the same way from the transcripts table
(:mod:`ai_server.store.transcripts`): same time parsing, times and rooms cited, an empty range
said plainly. They are checked first: they name no camera and would otherwise go to the LLM,
which only remembers the last few exchanges of one device.

Whose conversations (finding H3): an answer covers only what the asker may hear. A voice asker
(a device id) hears its own device's exchanges, not its room's: a room is whatever the device's
MQTT status claims, so a device that joins a room would otherwise read everything said there,
and two people in one room already hear each other anyway. A chat asker (``chat:<session>``) hears
its own session's typed exchanges. Voice and chat never mix. Only an asker listed in
``AI_HISTORY_HOUSEHOLD`` hears every device's and session's history (off by default).

``answer`` blocks (dateparser ~1 ms after its first ~0.2 s call, one SQLite query): the async
``look`` runs it in a worker thread.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta, tzinfo
from typing import Any, Final, Literal

from ai_server.media.analysis import object_label
from ai_server.places import mentions, place_key
from ai_server.store.events import EventRecord, EventStore
from ai_server.store.transcripts import CHAT_PREFIX, TranscriptRecord, TranscriptStore, chat_asker
from ai_server.vision.view import Views

log = logging.getLogger(__name__)

_EVENTISH: Final = re.compile(
    r"\b(see|saw|seen|look|looked|show|camera|cameras|cam|alert|alerts|event|events|happen|happened|"
    r"anyone|anybody|someone|somebody|person|people|visitor|visitors|motion|movement|detect|detected|"
    r"detection|detections)\b"
)
_PAST: Final = re.compile(
    r"\b(last|latest|previous|recent|recently|earlier|did|happened|saw|came|was there|were there|"
    r"has there been|have there been|history)\b"
)
_ALERT: Final = re.compile(r"\b(alert|alerts)\b")
# "what was I asking", "what did we talk about", "our last conversation": the user's own words, not a camera's.
_TALK: Final = re.compile(
    r"\b(?:i|we)\s+(?:was\s+|were\s+)?(?:ask|asked|asking|say|said|saying|talk|talked|talking|discuss|discussed|"
    r"discussing|chat|chatted|chatting|mention|mentioned|tell|told)\b|\b(?:our|my)\s+(?:last\s+|previous\s+)?"
    r"(?:conversation|conversations|chat|chats|question|questions)\b"
)
_TALK_PAST: Final = re.compile(r"\b(yesterday|ago|today|this morning|this afternoon|this evening|tonight|last night|"
                               r"last|earlier|before|previous|did|was|were)\b")
_QUOTE_CHARS: Final = 120  # a spoken answer quotes the start of each exchange
_CLOCK: Final = re.compile(r"\d\s*(am|pm|a\.m\.|p\.m\.)|\d:\d\d|\b(noon|midnight)\b")
# A camera named by the user: "the front door camera" -> "front door" (checked against the known names).
_NAMED_CAMERA: Final = re.compile(r"\b(?:the|my|a|your)\s+((?:[a-z0-9]+\s+){1,3}?)(?:camera|cam)\b")
_PLACE_WORDS: Final = re.compile(
    r"\b(door|doorstep|window|porch|garden|yard|backyard|driveway|garage|gate|kitchen|hall|hallway|"
    r"bedroom|office|nursery|patio|balcony|entrance|street|living room|front|back)\b"
)
# Words dateparser reads as dates that, in these questions, are not ("now" is the live view).
# "we" reads as Wednesday ("what did we talk about today" is about today).
_NOT_DATES: Final = frozenset({"now", "may", "march", "second", "sun", "sat", "wed", "we"})
_PARTS_OF_DAY: Final = {"this morning": (6, 12), "this afternoon": (12, 18), "this evening": (18, 24),
                        "tonight": (18, 24)}
# Outcomes that are not alerts of their own (the same event alerted already, or another camera did).
_REPEATS: Final = frozenset({"duplicate", "overlap"})
_MAX_LISTED: Final = 5  # spoken answers: the last few events, with the total
_MAX_READ: Final = 500  # per place; beyond this the answer says "at least"


def _norm(text: str) -> str:
    return re.sub(r"[^a-z0-9:.]+", " ", text.lower().replace("\u2019", "'")).strip()


@dataclass(frozen=True, slots=True)
class Asker:
    """Who asks a history question: a device (voice) or a chat session (typed, uploads)."""

    channel: Literal["voice", "chat"]
    id: str  # the device id, or the chat session id

    @classmethod
    def of(cls, looker_id: str) -> Asker:
        """From the id a :class:`~ai_server.pipeline.Looker` is given: ``chat:<session>[:...]`` is a
        chat session (':' never occurs in a device or session id), anything else a device."""
        if looker_id.startswith(CHAT_PREFIX):
            return cls("chat", looker_id[len(CHAT_PREFIX):].split(":", 1)[0])
        return cls("voice", looker_id)

    @property
    def key(self) -> str:
        """How AI_HISTORY_HOUSEHOLD names it: the device id, or ``chat:<session>``."""
        return self.id if self.channel == "voice" else chat_asker(self.id)


@dataclass(frozen=True, slots=True)
class TimeRange:
    since: datetime
    until: datetime
    words: str  # "between 03:00 and 04:00 today"


@dataclass(frozen=True, slots=True)
class Place:
    """A name the user may say and what it filters: a zone or a camera (device)."""

    name: str  # normalised words: "front door"
    zone: str | None = None
    device_id: str | None = None


@dataclass(frozen=True, slots=True)
class HistoryAnswer:
    text: str
    events: list[EventRecord]
    when: TimeRange | None
    places: list[Place]
    kind: str = "events"  # "events" (what cameras saw) or "conversations" (transcripts)
    exchanges: list[TranscriptRecord] = field(default_factory=list)

    @property
    def prompt(self) -> str:
        """The text for the LLM prompt (spec §8.10 step 2), framed for what the answer is drawn from."""
        if self.kind == "conversations":
            return ("From the stored conversation transcripts (what the user said before and what you answered): "
                    f"{self.text}\nAnswer from this only, with its times and rooms; do not guess beyond it.")
        return ("From the stored camera history (not a live view): " + self.text +
                "\nAnswer from this only, with its times and cameras; do not guess beyond it.")


def _clock(dt: datetime, now: datetime) -> str:
    day = (now.date() - dt.date()).days
    hhmm = dt.strftime("%H:%M")
    if day == 0:
        return hhmm
    if day == 1:
        return f"{hhmm} yesterday"
    return f"{hhmm} on {dt.day} {dt.strftime('%b')}"


def _day_words(day: datetime, now: datetime) -> str:
    diff = (now.date() - day.date()).days
    return "today" if diff == 0 else "yesterday" if diff == 1 else f"on {day.day} {day.strftime('%B')}"


def parse_time(question: str, now: datetime) -> TimeRange | None:
    """The time range a question is about, in ``now``'s time zone, or None when it names none."""
    tz: tzinfo | None = now.tzinfo
    t = _norm(question)
    today = datetime.combine(now.date(), time(0), tzinfo=tz)
    if "last night" in t:
        since, until = today - timedelta(hours=6), today + timedelta(hours=6)
        return TimeRange(since, min(until, now), "last night (18:00 to 06:00)")
    for words, (start, end) in _PARTS_OF_DAY.items():
        if words in t:
            return TimeRange(today + timedelta(hours=start), min(today + timedelta(hours=end), now), words)
    found = _search_dates(question, now)
    if found is None:
        return None
    text, when = found
    when = when.astimezone(tz)
    if _CLOCK.search(text.lower()):
        # "at 3am": that hour; "at 3:15": a quarter of an hour either side.
        if when.minute == 0:
            since, until = when, when + timedelta(hours=1)
        else:
            since, until = when - timedelta(minutes=15), when + timedelta(minutes=15)
        words = f"between {since:%H:%M} and {until:%H:%M} {_day_words(since, now)}"
    elif "ago" in text.lower():
        since, until = when - timedelta(minutes=30), when + timedelta(minutes=30)
        words = f"between {_clock(since, now)} and {_clock(until, now)}"
    else:  # a day: "yesterday", "on monday", "on 21 november"
        since = datetime.combine(when.date(), time(0), tzinfo=tz)
        until = since + timedelta(days=1)
        words = _day_words(since, now)
    return TimeRange(since, min(until, now), words)


def _search_dates(question: str, now: datetime) -> tuple[str, datetime] | None:
    # Imported by name: dateparser is untyped, and its ~0.3 s import is paid only when a question needs it.
    search_dates: Any = importlib.import_module("dateparser.search").search_dates

    # TIMEZONE: "at 3am" is 3am on the clock's zone, not the machine's (dateparser's default).
    settings: Any = {"PREFER_DATES_FROM": "past", "RELATIVE_BASE": now, "RETURN_AS_TIMEZONE_AWARE": True,
                     "TIMEZONE": now.strftime("%z") or "UTC"}
    # languages=["en"]: otherwise "see" is read as a date (Spanish/Portuguese detection).
    results = search_dates(question, languages=["en"], settings=settings) or []
    for text, when in results:
        if _norm(text) in _NOT_DATES or not isinstance(when, datetime):
            continue
        return str(text), when
    return None


def is_conversation_question(question: str) -> bool:
    """About what the user asked or said before ("what was I asking about yesterday")."""
    t = _norm(question)
    return bool(_TALK.search(t) and _TALK_PAST.search(t))


def is_historical(question: str, places: Iterable[str] = ()) -> bool:
    """About what the cameras saw, in the past (see the module doc). ``places``: known names."""
    t = _norm(question)
    spoken = place_key(question)
    named = any(mentions(spoken, p) for p in places)
    if not (_EVENTISH.search(t) or named):
        return False
    return bool(_PAST.search(t) or "yesterday" in t or "ago" in t or "last night" in t)


class HistoryQuestions:
    """Answers historical questions from the event store (and the transcripts, when given);
    ``now`` is the wall clock (tz-aware)."""

    def __init__(self, events: EventStore, views: Views | None, now: Callable[[], datetime],
                 transcripts: TranscriptStore | None = None, *, household: Iterable[str] = ()) -> None:
        self.events = events
        self.views = views
        self.now = now
        self.transcripts = transcripts
        self.household = frozenset(household)  # AI_HISTORY_HOUSEHOLD: askers who hear everyone's history

    def known_places(self) -> list[Place]:
        places: dict[tuple[str, str | None, str | None], Place] = {}

        def add(name: str, zone: str | None = None, device_id: str | None = None) -> None:
            words = place_key(name)
            if words:
                places[(words, zone, device_id)] = Place(words, zone, device_id)

        device_ids, zones = self.events.places()
        for device_id in device_ids:
            add(device_id, device_id=device_id)
        for zone in zones:
            add(zone, zone=zone)
        for cam in self.views.cameras() if self.views is not None else ():
            add(cam.device_id, device_id=cam.device_id)
            add(cam.zone, zone=cam.zone)
            add(cam.room, device_id=cam.device_id)  # a room's camera: events carry its device id
        return list(places.values())

    def match_places(self, question: str, known: list[Place]) -> tuple[list[Place], str | None]:
        """The places the question names (longest name wins), and an unknown name it used, if any."""
        spoken = place_key(question)
        hits = [p for p in known if re.search(rf"\b{re.escape(p.name)}\b", spoken)]
        if hits:
            longest = max(len(p.name) for p in hits)
            return [p for p in hits if len(p.name) == longest], None
        named = _NAMED_CAMERA.search(spoken)
        if named:
            return [], named.group(1).strip()
        word = _PLACE_WORDS.search(spoken)
        if word:
            # "the door" when only "front_door" is known: every known place with that word.
            loose = [p for p in known if re.search(rf"\b{re.escape(word.group(1))}\b", p.name)]
            return (loose, None) if loose else ([], word.group(1))
        return [], None

    def answer(self, question: str, asker: Asker | None = None) -> HistoryAnswer | None:
        """None when the question is not historical; otherwise the answer, from stored events only.

        ``asker``: whose conversations a conversation question may read (see the module doc); None
        reads none. Camera events are the household's and answer any asker."""
        if self.transcripts is not None and is_conversation_question(question):
            return self.conversations(question, asker)
        known = self.known_places()
        if not is_historical(question, [p.name for p in known]):
            return None
        now = self.now()
        places, unknown = self.match_places(question, known)
        when = parse_time(question, now)
        if unknown is not None:
            names = sorted({p.name for p in known if p.zone is not None}) or sorted({p.name for p in known})
            listed = ", ".join(names) if names else "none yet"
            text = f'I don\'t know a camera or zone called "{unknown}". The ones I know: {listed}.'
            return HistoryAnswer(text, [], when, [])
        alerts_only = bool(_ALERT.search(_norm(question)))
        found, capped = self._query(places, when, alerts_only)
        return HistoryAnswer(self._say(found, capped, places, when, alerts_only, now), found, when, places)

    def _query(self, places: list[Place], when: TimeRange | None, alerts_only: bool) -> tuple[list[EventRecord], bool]:
        """The events, oldest first, and whether there were more than were read (the newest are kept)."""
        since, until = (when.since, when.until) if when is not None else (None, None)
        found: dict[int, EventRecord] = {}
        capped = False
        for place in places or [Place("")]:
            rows = self.events.query(since=since, until=until, zone=place.zone, device_id=place.device_id,
                                     limit=_MAX_READ)
            capped = capped or len(rows) == _MAX_READ
            found.update((e.id, e) for e in rows if not (alerts_only and e.outcome in _REPEATS))
        events = sorted(found.values(), key=lambda e: (e.time, e.id))
        # No time given ("the last alert from the backyard"): the newest one is the answer.
        return (events[-1:], False) if when is None else (events, capped)

    def _say(self, events: list[EventRecord], capped: bool, places: list[Place], when: TimeRange | None,
             alerts_only: bool, now: datetime) -> str:
        where = " or ".join(sorted({p.name for p in places}))
        what = "alerts" if alerts_only else "events"
        if not events:
            scope = f"from the {where} camera" if where else "from any camera"
            span = f" {when.words}" if when is not None else " yet"
            return f"There are no recorded {what} {scope}{span}."
        sentences = [self._sentence(e, now) for e in events[-_MAX_LISTED:]]
        if when is None:
            lead = f"The last {'alert' if alerts_only else 'event'}{f' from the {where}' if where else ''}: "
            return lead + sentences[0]
        head = f"{'At least ' if capped else ''}{len(events)} {what if len(events) != 1 else what[:-1]} {when.words}"
        more = f" (the last {_MAX_LISTED} of them)" if len(events) > _MAX_LISTED else ""
        return f"{head}{more}: " + " ".join(sentences)

    def _sentence(self, e: EventRecord, now: datetime) -> str:
        local = e.time.astimezone(now.tzinfo)
        camera = (e.zone or e.device_id).replace("_", " ")
        label = object_label(e.label)
        article = "an" if label[:1] in "aeiou" else "a"
        stored = "; snapshot stored" if e.media_id or e.snapshot else ""
        alerted = ", alert sent" if e.outcome in ("alerted", "queued") else ""
        return f"At {_clock(local, now)} the {camera} camera saw {article} {label} (confidence {e.confidence:.2f}" \
               f"{alerted}){stored}."

    def conversations(self, question: str, asker: Asker | None) -> HistoryAnswer:
        """What ``asker`` may hear of what was said in the range the question names (no range: the
        last few exchanges)."""
        assert self.transcripts is not None
        now = self.now()
        when = parse_time(question, now)
        since, until = (when.since, when.until) if when is not None else (None, None)
        limit = _MAX_LISTED if when is None else _MAX_READ
        rows: list[TranscriptRecord] = []
        if asker is None:
            pass  # nobody in particular: nothing of anyone's
        elif asker.key in self.household:
            rows = self.transcripts.query(since=since, until=until, limit=limit)
        elif asker.channel == "voice":
            rows = self.transcripts.query(since=since, until=until, channel="voice", device_id=asker.id, limit=limit)
        else:  # a chat thread is keyed chat:<session>:<conversation> (ai_server/control/chat.py)
            rows = self.transcripts.query(since=since, until=until, channel="chat",
                                          device_prefix=f"{chat_asker(asker.id)}:", limit=limit)
        capped = when is not None and len(rows) == _MAX_READ
        rows.reverse()  # oldest first, as spoken
        if not rows:
            span = f" {when.words}" if when is not None else " yet"
            text = f"There are no recorded conversations{span}."
        else:
            said = " ".join(self._exchange(r, now) for r in rows[-_MAX_LISTED:])
            if when is None:
                text = f"The last {'exchange' if len(rows) == 1 else f'{len(rows)} exchanges'}: {said}"
            else:
                n = f"{'At least ' if capped else ''}{len(rows)} exchange{'s' if len(rows) != 1 else ''}"
                more = f" (the last {_MAX_LISTED} of them)" if len(rows) > _MAX_LISTED else ""
                text = f"{n} {when.words}{more}: {said}"
        return HistoryAnswer(text, [], when, [], kind="conversations", exchanges=rows)

    @staticmethod
    def _exchange(r: TranscriptRecord, now: datetime) -> str:
        where = "by chat" if r.channel == "chat" and not r.room else f"in the {r.room.replace('_', ' ')}" \
            if r.room else f"on {r.device_id}"
        return (f'At {_clock(r.time.astimezone(now.tzinfo), now)} {where} you asked "{_quote(r.user_text)}" '
                f'and I answered "{_quote(r.reply_text)}".')

    async def look(self, question: str, asker: str) -> HistoryAnswer | None:
        """``asker``: the looker's device id, or ``chat:<session>`` for a chat session (:meth:`Asker.of`)."""
        return await asyncio.to_thread(self.answer, question, Asker.of(asker))


def _quote(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _QUOTE_CHARS else text[: _QUOTE_CHARS - 3].rstrip() + "..."
