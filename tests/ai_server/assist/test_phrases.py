"""The phrase table: commands are recognised with the right intent and slots; questions never are.

Recognition runs over the real merged templates (home-assistant-intents + ai_server/assist/sentences)
with the slot lists our features provide (cities, units, operators) and a household's rooms as areas,
exactly as the AI server's router does. A question may only match an intent whose handler then declines
(handled=False: the LLM answers), and the handlers here are the real ones.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import pytest

from ai_server.assist import maths, time_date
from ai_server.assist.core import AssistContext, AssistServices, IntentRegistry
from ai_server.assist.intents import Recognizer, normalize
from ai_server.assist.router import install_defaults
from ai_server.control import room_router
from tests.ai_server.control.test_room_routing import home

pytestmark = pytest.mark.unit

ROOMS = [("kitchen", "kitchen", {}), ("living room", "living_room", {}), ("bedroom", "bedroom", {})]
NOW = dt.datetime(2026, 3, 14, 15, 9, tzinfo=dt.timezone(dt.timedelta(hours=1)))


@pytest.fixture(scope="module")
def household() -> tuple[Recognizer, IntentRegistry]:
    registry = IntentRegistry()
    services = AssistServices(registry, lambda: NOW, "/nonexistent")
    time_date.install(services)
    maths.install(services)
    install_defaults(registry)
    # The spoken-routing handlers on a real RoomRouter (rooms kitchen, hall, bed_room, garage).
    room_router.install(services, home().router)
    registry.add_slot_provider("area", lambda: ROOMS)
    recognizer = Recognizer("en")
    recognizer.warm()
    return recognizer, registry


COMMANDS: list[tuple[str, str, dict[str, Any]]] = [
    # timers (handlers: ai_server/assist/timers.py)
    ("set a timer for 5 minutes", "HassStartTimer", {"minutes": 5}),
    ("Set a timer for ten seconds.", "HassStartTimer", {"seconds": 10}),
    ("start a timer for 1 hour and 30 minutes", "HassStartTimer", {"hours": 1, "minutes": 30}),
    ("set a pasta timer for 8 minutes", "HassStartTimer", {"name": "pasta", "minutes": 8}),
    ("cancel the timer", "HassCancelTimer", {}),
    ("cancel all timers", "HassCancelAllTimers", {}),
    ("how much time is left on the timer", "HassTimerStatus", {}),
    ("pause the timer", "HassPauseTimer", {}),
    ("resume the timer", "HassUnpauseTimer", {}),
    ("add 2 minutes to the timer", "HassIncreaseTimer", {"minutes": 2}),
    # time and date
    ("what time is it", "HassGetCurrentTime", {}),
    ("Okay Nabu, what time is it?", "HassGetCurrentTime", {}),
    ("what's the time", "HassGetCurrentTime", {}),
    ("what is the date today", "HassGetCurrentDate", {}),
    ("what's today's date", "HassGetCurrentDate", {}),
    # the time in a city
    ("what time is it in Tokyo", "NailaTimeIn", {"city": "Asia/Tokyo"}),
    ("What's the time in New York?", "NailaTimeIn", {"city": "America/New_York"}),
    ("what is the local time in Beijing", "NailaTimeIn", {"city": "Asia/Shanghai"}),
    ("what time is it in san francisco right now", "NailaTimeIn", {"city": "America/Los_Angeles"}),
    ("what's the time in London", "NailaTimeIn", {"city": "Europe/London"}),
    # conversions
    ("how many minutes are in 2.5 hours", "NailaConvert", {"to_unit": "minute", "amount": "2.5", "from_unit": "hour"}),
    ("how many feet in a mile", "NailaConvert", {"to_unit": "foot", "amount": "a", "from_unit": "mile"}),
    ("convert 100 fahrenheit to celsius", "NailaConvert", {"amount": "100", "from_unit": "degF", "to_unit": "degC"}),
    ("what is 5 kilometers in miles", "NailaConvert", {"amount": "5", "from_unit": "kilometer", "to_unit": "mile"}),
    ("how many grams are there in two pounds", "NailaConvert",
     {"to_unit": "gram", "amount": "two", "from_unit": "pound"}),
    # arithmetic
    ("what is 17 times 23", "NailaCalculate", {"a": "17", "operator": "*", "b": "23"}),
    ("what's 12 plus 30", "NailaCalculate", {"a": "12", "operator": "+", "b": "30"}),
    ("how much is 100 divided by 8", "NailaCalculate", {"a": "100", "operator": "/", "b": "8"}),
    ("calculate 2 to the power of 10", "NailaCalculate", {"a": "2", "operator": "**", "b": "10"}),
    ("what is 15 percent of 80", "NailaCalculate", {"a": "15", "b": "80"}),
    ("what is 7 × 6?", "NailaCalculate", {"a": "7", "operator": "*", "b": "6"}),
    # broadcasts and replays (resolved by ai_server/control/room_router.py)
    ("announce dinner is ready", "HassBroadcast", {"message": "dinner is ready"}),
    ("broadcast that the car is here", "HassBroadcast", {"message": "the car is here"}),
    ("tell everyone dinner is ready", "NailaAnnounce", {"message": "dinner is ready"}),
    ("tell the kitchen the taxi is here", "NailaAnnounce", {"area": "kitchen", "message": "the taxi is here"}),
    ("let everybody know the film starts", "NailaAnnounce", {"message": "the film starts"}),
    ("play it on the kitchen speaker", "NailaReplay", {"place": "the kitchen speaker"}),
    ("say that again in the living room", "NailaReplay", {"place": "the living room"}),
    ("repeat that everywhere", "NailaReplay", {}),
    # device control (Home Assistant, or "isn't set up")
    ("turn on the lights in the kitchen", "HassTurnOn", {"area": "kitchen", "domain": "light"}),
    ("turn off the living room lights", "HassTurnOff", {"area": "living_room", "domain": "light"}),
    ("set the brightness in the bedroom to 50%", "HassLightSet", {"area": "bedroom", "brightness": 50}),
    ("what's the temperature in the kitchen", "HassClimateGetTemperature", {"area": "kitchen"}),
    ("open the blinds in the bedroom", "HassTurnOn", {"area": "bedroom"}),
]

QUESTIONS = [
    "who wrote hamlet",
    "what is the capital of france",
    "how many legs does a spider have",
    "tell me a joke",
    "what time did the front door camera see someone",
    "what did the porch camera see last night",
    "why is the sky blue",
    "what is the meaning of life",
    "who is the president of the united states",
    "how far is the moon",
    "what is the tallest mountain in the world",
    "how do I bake bread",
    "what's the weather like on mars",
    "tell me a story about a dragon",
    "what is photosynthesis",
    "how many people live in tokyo",
    "what is the population of new york",
    "when did world war two end",
    "what time does the sun set in summer",
    "how long does it take to boil an egg",
    "what is love",
    "what's the difference between a frog and a toad",
    "who painted the mona lisa",
    "how many times has brazil won the world cup",
    "what is the speed of light",
    "how many minutes should I cook pasta",
    "what is the best way to learn french",
    "tell me about the roman empire",
    "is it going to rain tomorrow",
    "what does a kitchen timer look like",
    "how do timers work",
    "what is the history of the clock",
    "what language do they speak in brazil",
    "who is in the living room",
    "what's playing in the kitchen",
    "how do I turn on my computer",
    "tell me the truth",
    "say that in french",
    "what is the time complexity of quicksort",
    "what day was the moon landing",
    "what is two plus two in roman numerals",
    "what's the date of the next full moon",
    "how hot is the sun",
]


@pytest.mark.parametrize(("text", "intent", "slots"), COMMANDS)
def test_commands_are_recognised_with_their_slots(
    household: tuple[Recognizer, IntentRegistry], text: str, intent: str, slots: dict[str, Any]
) -> None:
    recognizer, registry = household
    match = recognizer.recognize(text, registry.slot_rows())
    assert match is not None, f"{text!r} not recognised"
    assert match.intent == intent
    for name, value in slots.items():
        assert match.slots.get(name) == value, (name, dict(match.slots))


async def test_questions_are_never_taken_as_commands(household: tuple[Recognizer, IntentRegistry]) -> None:
    recognizer, registry = household
    taken = []
    for text in QUESTIONS:
        match = recognizer.recognize(text, registry.slot_rows())
        if match is None:
            continue
        reply = await registry.handle(match, AssistContext(now=NOW, device_id="kitchen-1"))
        if reply is not None and reply.handled:  # no handler (the LLM answers), or one that declines
            taken.append((text, match.intent))
    assert taken == []


def test_an_intent_without_a_handler_is_no_command(household: tuple[Recognizer, IntentRegistry]) -> None:
    recognizer, registry = household
    match = recognizer.recognize("what's the weather like", registry.slot_rows())
    assert match is not None and match.intent == "HassGetWeather" and not registry.handles("HassGetWeather")


def test_the_table_is_big_enough() -> None:
    assert len(COMMANDS) >= 40 and len(QUESTIONS) >= 40


def test_recognition_costs_about_two_ms_per_sentence(household: tuple[Recognizer, IntentRegistry]) -> None:
    recognizer, registry = household
    sentences = [c[0] for c in COMMANDS] + QUESTIONS
    start = time.perf_counter()
    for text in sentences:
        recognizer.recognize(text, registry.slot_rows())
    per_sentence_ms = (time.perf_counter() - start) * 1000 / len(sentences)
    print(f"recognition: {per_sentence_ms:.2f} ms per sentence over {len(sentences)}")
    assert per_sentence_ms < 15  # ~2 ms here; generous for a loaded 2-core box


@pytest.mark.parametrize(
    ("said", "normal"),
    [
        ("Okay Nabu, what time is it?", "what time is it"),
        ("Hey Jarvis... Set a timer for 5 minutes!", "set a timer for 5 minutes"),
        ("What's 1,000 × 2.5?", "what's 1000 times 2.5"),
        ("what is 10 / 4", "what is 10 divided by 4"),
        ("what is 10 - 4", "what is 10 minus 4"),
        ("Naila: announce dinner's ready.", "announce dinner's ready"),
    ],
)
def test_transcripts_are_normalised_before_recognition(said: str, normal: str) -> None:
    assert normalize(said) == normal
