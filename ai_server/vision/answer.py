"""Visual questions answered by code from what a camera view holds (issue 19, item 6).

The embedded SmolLM2-135M, given the detections, still made up scenes ("they've taken your text
to the next level"), and its first token came 3.9 s after the end of speech. The facts are few
(labels and counts, where, how old, text OCR read), so they are said here in plain English, one
or two sentences, counts pluralised: "Yes, the front door camera sees a person, just now." With a
real model (``LLM_BACKEND=openai``) :func:`brief` gives it the same facts in one short line
instead of the whole spec §8.11 JSON, so its prompt stays small.

A detector only knows its own classes (the shipped checkpoint: person and fallen person), so a
question about anything else gets "I can't tell", never a made-up "no".
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final, Literal

from ai_server.places import mentions, place_key

#: The COCO classes: what people ask a camera about. A label a question names that the detector
#: does not know is answered "I can't tell" (the detector would never have seen it).
_COCO: Final = (
    "person bicycle car motorcycle airplane bus train truck boat traffic_light fire_hydrant stop_sign "
    "parking_meter bench bird cat dog horse sheep cow elephant bear zebra giraffe backpack umbrella handbag "
    "tie suitcase frisbee skis snowboard sports_ball kite baseball_bat baseball_glove skateboard surfboard "
    "tennis_racket bottle wine_glass cup fork knife spoon bowl banana apple sandwich orange broccoli carrot "
    "hot_dog pizza donut cake chair couch potted_plant bed dining_table toilet tv laptop mouse remote keyboard "
    "cell_phone microwave oven toaster sink refrigerator book clock vase scissors teddy_bear hair_drier "
    "toothbrush package parcel van bike"
)
COMMON_OBJECTS: Final = frozenset(_COCO.split())
#: Words that ask about people, whatever the detector calls them ("anyone", "who").
_PEOPLE: Final = re.compile(
    r"\b(people|persons?|anyone|anybody|someone|somebody|who|who's|humans?|man|men|woman|women|kids?|"
    r"children|child|visitors?|intruders?)\b"
)
_COUNT: Final = re.compile(r"\bhow many\b")
_PRESENCE: Final = re.compile(
    r"^(is|are|was|were|do|does|did|can|could)\b|\b(is there|are there|anyone|anybody|someone|somebody|"
    r"who is|who's|who are|any)\b"
)
_READ: Final = re.compile(r"\b(read|text|say|says|written|sign|label)\b")
_IRREGULAR: Final = {"person": "people", "man": "men", "woman": "women", "child": "children", "mouse": "mice",
                     "sheep": "sheep", "knife": "knives", "foot": "feet", "skis": "skis"}
_FEW_LABELS: Final = 12  # a detector with this few classes is specialised: say what it knows

Kind = Literal["describe", "count", "presence", "read"]


def words(label: str) -> str:
    """A detector label as spoken: ``fallen_person`` -> ``fallen person``."""
    return label.replace("_", " ").strip()


def plural(label: str) -> str:
    """The plural of a (possibly multi-word) label: its last word changes ("fallen people")."""
    head, _, last = words(label).rpartition(" ")
    if last in _IRREGULAR:
        last = _IRREGULAR[last]
    elif re.search(r"(s|x|z|ch|sh)$", last):
        last += "es"
    elif re.search(r"[^aeiou]y$", last):
        last = last[:-1] + "ies"
    else:
        last += "s"
    return f"{head} {last}" if head else last


def counted(label: str, n: int) -> str:
    """"a bus", "an apple", "4 people"."""
    if n == 1:
        name = words(label)
        return f"{'an' if name[:1] in 'aeiou' else 'a'} {name}"
    return f"{n} {plural(label)}"


def listing(parts: Sequence[str]) -> str:
    """"a", "a and b", "a, b and c"."""
    if len(parts) <= 1:
        return "".join(parts)
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def when(age_s: float) -> str:
    """How old a view is, as said: "just now", "40 seconds ago", "2 minutes ago", "3 hours ago"."""
    if age_s < 10:
        return "just now"
    if age_s < 90:
        return f"{round(age_s)} seconds ago"
    if age_s < 90 * 60:
        minutes = round(age_s / 60)
        return f"{minutes} minute{'s' if minutes != 1 else ''} ago"
    hours = round(age_s / 3600)
    return f"{hours} hour{'s' if hours != 1 else ''} ago"


def _is_person(label: str) -> bool:
    return words(label).rpartition(" ")[2] in ("person", "people")


@dataclass(frozen=True, slots=True)
class Sight:
    """What one camera view holds. ``labels`` None: the view was not analysed (detector failed);
    ``zones``: the zone of each label ("" outside any), or () when unknown (a snapshot);
    ``known``: the labels the detector can recognise, None when unknown."""

    where: str  # the camera as said: "front door" (its zone, else room, else device id)
    age_s: float
    labels: tuple[str, ...] | None = ()
    zones: tuple[str, ...] = ()
    text: tuple[str, ...] = ()
    known: frozenset[str] | None = None
    online: bool = True
    stale: bool = False

    @property
    def camera(self) -> str:
        return f"the {self.where} camera"

    def knows(self, label: str) -> bool:
        return self.known is None or label in self.known or (_is_person(label) and any(map(_is_person, self.known)))

    def vocabulary(self) -> str:
        """"people and fallen people": what a specialised detector recognises."""
        return listing([plural(k) for k in sorted(self.known or (), key=lambda k: (len(k), k))])

    def specialised(self) -> bool:
        return self.known is not None and 0 < len(self.known) <= _FEW_LABELS


@dataclass(frozen=True, slots=True)
class Asked:
    kind: Kind
    target: str | None  # a label, "person" for any person word; None: everything
    zone: str | None  # a zone inside the view the question names ("how many people are on the porch")


def parse(question: str, sight: Sight) -> Asked:
    """What the question asks of the view: a count, a yes/no, text, or a description."""
    q = re.sub(r"\s+", " ", question.lower().replace("\u2019", "'")).strip(" ?!.")
    target: str | None = None
    if _PEOPLE.search(q):
        target = "person"
    else:
        candidates = set(COMMON_OBJECTS) | set(sight.known or ()) | set(sight.labels or ())
        for label in sorted(candidates, key=lambda c: -len(c)):  # "fire hydrant" before "fire"
            if re.search(rf"\b({re.escape(words(label))}|{re.escape(plural(label))})\b", q):
                target = label
                break
    spoken = place_key(q)
    zone = next((z for z in dict.fromkeys(sight.zones) if z and z != place_key(sight.where)
                 and mentions(spoken, z)), None)
    if _COUNT.search(q) and target is not None:
        kind: Kind = "count"
    elif _PRESENCE.search(q) and target is not None:
        kind = "presence"
    elif _READ.search(q) and target is None:
        kind = "read"
    else:
        kind = "describe"
    return Asked(kind, target, zone)


def _found(sight: Sight, asked: Asked) -> Counter[str]:
    labels = sight.labels or ()
    if asked.zone is not None and len(sight.zones) == len(labels):
        labels = tuple(lb for lb, z in zip(labels, sight.zones, strict=True) if z == asked.zone)
    return Counter(labels)


def _quoted(text: Sequence[str]) -> str:
    shown = [f'"{line}"' for line in text[:3]]
    return listing(shown) + (" and more" if len(text) > 3 else "")


def _staleness(sight: Sight) -> str:
    if not sight.stale:
        return ""
    return " The camera is offline, so this may be out of date." if not sight.online else " This may be out of date."


def answer(question: str, sight: Sight) -> str:
    """One or two plain sentences that say what the view holds, for the question asked."""
    asked = parse(question, sight)
    ago = when(sight.age_s)
    scope = f" in the {words(asked.zone)}" if asked.zone else ""
    stale = _staleness(sight)
    if sight.labels is None:
        said = f"I have a picture from {sight.camera} from {ago}, but it could not be analysed"
        if sight.text:
            said += f"; it shows text reading {_quoted(sight.text)}"
        return f"{said}.{stale}"
    found = _found(sight, asked)
    if asked.kind == "read":
        if sight.text:
            return f"{sight.camera.capitalize()} shows text reading {_quoted(sight.text)}, {ago}.{stale}"
        return f"I can't read any text in {sight.camera}'s view from {ago}.{stale}"
    if asked.kind in ("count", "presence") and asked.target is not None:
        target = asked.target
        if not sight.knows(target):
            what = (f"how many {plural(target)} there are" if asked.kind == "count"
                    else f"if there is {counted(target, 1)}")
            return f"I can't tell {what}{scope}: the detector on {sight.camera} only recognises {sight.vocabulary()}."
        hits = {lb: n for lb, n in found.items() if lb == target or (target == "person" and _is_person(lb))}
        total = sum(hits.values())
        seen = listing([counted(lb, n) for lb, n in sorted(hits.items(), key=lambda kv: -kv[1])])
        nothing = "nobody" if target == "person" else f"no {plural(target)}"
        if asked.kind == "count":
            return f"{sight.camera.capitalize()} sees {seen if total else nothing}{scope}, {ago}.{stale}"
        if total:
            return f"Yes, {sight.camera} sees {seen}{scope}, {ago}.{stale}"
        return f"No, {sight.camera} sees {nothing}{scope}, {ago}.{stale}"
    parts = [counted(lb, n) for lb, n in found.most_common()]
    if sight.text:
        parts.append(f"text reading {_quoted(sight.text)}")
    seen = listing(parts) if parts else "nothing I can recognise"
    said = f"{sight.camera.capitalize()} sees {seen}{scope}, {ago}"
    if sight.specialised():
        said += f"; its detector only recognises {sight.vocabulary()}"
    return f"{said}.{stale}"


def brief(sight: Sight) -> str:
    """The view in one short line for a real model's prompt (instead of the whole JSON)."""
    if sight.labels is None:
        seen = "the picture could not be analysed"
    else:
        parts = [counted(lb, n) for lb, n in Counter(sight.labels).most_common()]
        seen = listing(parts) if parts else "nothing recognised"
    zoned = Counter((lb, z) for lb, z in zip(sight.labels or (), sight.zones, strict=False) if z)
    if zoned and len(set(sight.zones)) > 1:
        seen += " (" + "; ".join(f"{counted(lb, n)} in the {words(z)}" for (lb, z), n in zoned.most_common()) + ")"
    line = f"Camera view, {sight.camera}, {when(sight.age_s)}: {seen}."
    if sight.text:
        line += f" Text reads {_quoted(sight.text)}."
    if sight.specialised():
        line += f" Its detector only recognises {sight.vocabulary()}."
    if sight.stale:
        line += f" The view may be out of date{' (the camera is offline)' if not sight.online else ''}: say so."
    return line + " Answer from this view only, in one or two sentences."


def known_labels(names: Iterable[str] | None) -> frozenset[str] | None:
    """A detector's class names as a vocabulary; None (unknown) when it has none yet."""
    found = frozenset(n for n in (names or ()) if n)
    return found or None
