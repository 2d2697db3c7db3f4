"""Place names in what people say: "front_door", "Front Door" and "front-door" are one place.

One home for matching the rooms and zones of devices and cameras against a question, used by
visual questions, source selection and questions about the past.
"""

from __future__ import annotations

import re


def place_key(text: str | None) -> str:
    """Lower-case words separated by single spaces: ``"Front_Door"`` -> ``"front door"``."""
    return re.sub(r"[^a-z0-9]+", " ", (text or "").lower()).strip()


def mentions(spoken_key: str, place: str | None) -> bool:
    """Whether ``place`` occurs as whole words in ``spoken_key`` (a :func:`place_key` of the question)."""
    key = place_key(place)
    return bool(key) and re.search(rf"\b{re.escape(key)}\b", spoken_key) is not None
