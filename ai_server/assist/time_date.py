"""Time and date by code: "what time is it", "what's the date", "what time is it in Tokyo".

The household's own time is ``services.now()`` (ASSIST_TIMEZONE); another place's comes from
zoneinfo. Places are the city part of every IANA zone name ("Asia/Tokyo" -> "tokyo",
"America/Argentina/Buenos_Aires" -> "buenos aires") plus a small alias table for well-known cities
and countries that are not zone names (Beijing, San Francisco, Mumbai, Japan...). The table is the
``city`` slot list, so a place we do not know is no match and the LLM answers as before.
"""

from __future__ import annotations

import datetime as dt
import functools
import zoneinfo
from typing import Final

from ai_server.assist.core import AssistContext, AssistReply, AssistServices, IntentMatch, SlotRows

# Well-known places that are not the city of a zone name.
ALIASES: Final = {
    "beijing": "Asia/Shanghai", "hong kong": "Asia/Hong_Kong", "osaka": "Asia/Tokyo", "kyoto": "Asia/Tokyo",
    "mumbai": "Asia/Kolkata", "bombay": "Asia/Kolkata", "delhi": "Asia/Kolkata", "new delhi": "Asia/Kolkata",
    "bangalore": "Asia/Kolkata", "bengaluru": "Asia/Kolkata", "chennai": "Asia/Kolkata",
    "san francisco": "America/Los_Angeles", "seattle": "America/Los_Angeles", "las vegas": "America/Los_Angeles",
    "san diego": "America/Los_Angeles", "portland": "America/Los_Angeles", "silicon valley": "America/Los_Angeles",
    "boston": "America/New_York", "washington": "America/New_York", "washington dc": "America/New_York",
    "miami": "America/New_York", "atlanta": "America/New_York", "philadelphia": "America/New_York",
    "new york city": "America/New_York", "dallas": "America/Chicago", "houston": "America/Chicago",
    "austin": "America/Chicago", "san antonio": "America/Chicago", "montreal": "America/Toronto",
    "ottawa": "America/Toronto", "rio": "America/Sao_Paulo", "rio de janeiro": "America/Sao_Paulo",
    "munich": "Europe/Berlin", "frankfurt": "Europe/Berlin", "hamburg": "Europe/Berlin", "cologne": "Europe/Berlin",
    "milan": "Europe/Rome", "venice": "Europe/Rome", "florence": "Europe/Rome", "naples": "Europe/Rome",
    "barcelona": "Europe/Madrid", "seville": "Europe/Madrid", "geneva": "Europe/Zurich",
    "edinburgh": "Europe/London", "manchester": "Europe/London", "glasgow": "Europe/London",
    "saint petersburg": "Europe/Moscow", "st petersburg": "Europe/Moscow", "cape town": "Africa/Johannesburg",
    "tel aviv": "Asia/Jerusalem", "abu dhabi": "Asia/Dubai", "mecca": "Asia/Riyadh",
    "japan": "Asia/Tokyo", "china": "Asia/Shanghai", "india": "Asia/Kolkata", "france": "Europe/Paris",
    "germany": "Europe/Berlin", "italy": "Europe/Rome", "spain": "Europe/Madrid", "england": "Europe/London",
    "the uk": "Europe/London", "britain": "Europe/London", "ireland": "Europe/Dublin",
    "the netherlands": "Europe/Amsterdam", "greece": "Europe/Athens", "egypt": "Africa/Cairo",
    "korea": "Asia/Seoul", "south korea": "Asia/Seoul", "thailand": "Asia/Bangkok", "new zealand": "Pacific/Auckland",
    "hawaii": "Pacific/Honolulu", "california": "America/Los_Angeles", "new york state": "America/New_York",
}  # fmt: skip
_NOT_PLACES: Final = ("Etc/", "SystemV/", "US/", "Canada/", "Brazil/", "Mexico/", "Chile/")


@functools.cache
def places() -> dict[str, str]:
    """Spoken place -> IANA zone: every zone's city, then the aliases (which win)."""
    out: dict[str, str] = {}
    for zone in sorted(zoneinfo.available_timezones()):
        if "/" not in zone or zone.startswith(_NOT_PLACES):
            continue
        city = zone.rsplit("/", 1)[1].replace("_", " ").lower()
        if city.isalpha() or " " in city:
            out.setdefault(city, zone)
    out.update(ALIASES)
    return out


def city_rows() -> SlotRows:
    return [(name, zone, {}) for name, zone in places().items()]


def spoken_time(t: dt.datetime) -> str:
    """3:05 PM; noon and midnight by name (how people say them, and TTS reads them well)."""
    if t.minute == 0 and t.hour in (0, 12):
        return "midnight" if t.hour == 0 else "noon"
    return f"{t.hour % 12 or 12}:{t.minute:02d} {'AM' if t.hour < 12 else 'PM'}"


def spoken_date(d: dt.date) -> str:
    return f"{d:%A}, {d:%B} {d.day}, {d.year}"


def place_name(zone: str, said: str) -> str:
    """The place as said, capitalised ("tokyo" -> "Tokyo", "the uk" -> "the UK")."""
    words = [w.upper() if w in ("uk", "dc") else w if w == "the" else w.capitalize() for w in said.split()]
    return " ".join(words) or zone.rsplit("/", 1)[-1].replace("_", " ")


async def current_time(match: IntentMatch, ctx: AssistContext) -> AssistReply:
    return AssistReply(f"It's {spoken_time(ctx.now)}.", match.intent)


async def current_date(match: IntentMatch, ctx: AssistContext) -> AssistReply:
    return AssistReply(f"Today is {spoken_date(ctx.now.date())}.", match.intent)


async def time_in(match: IntentMatch, ctx: AssistContext) -> AssistReply:
    zone = str(match.slots.get("city", ""))
    try:
        there = ctx.now.astimezone(zoneinfo.ZoneInfo(zone))
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return AssistReply("", match.intent, handled=False)  # not a place after all: the LLM answers
    said = next((name for name, z in places().items() if z == zone and name in match.text.lower()), "")
    text = f"In {place_name(zone, said)} it's {spoken_time(there)}"
    day_offset = (there.date() - ctx.now.date()).days
    if day_offset:
        text += f" on {there:%A}"  # already tomorrow (or still yesterday) there
    return AssistReply(text + ".", match.intent, data={"zone": zone, "time": there.isoformat()})


def install(services: AssistServices) -> None:
    services.registry.register("HassGetCurrentTime", current_time, read_only=True)
    services.registry.register("HassGetCurrentDate", current_date, read_only=True)
    services.registry.register("NailaTimeIn", time_in, read_only=True)
    services.registry.add_slot_provider("city", city_rows)
