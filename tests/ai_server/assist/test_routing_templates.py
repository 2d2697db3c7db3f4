"""Spoken routing read by hassil templates (ai_server/assist/sentences/routing.yaml, ai_server/routing.py):
phrasings that tests/ai_server/test_routing.py does not hold, the rooms and devices as list slots,
and the same templates detecting the request in the intent recognizer."""

from __future__ import annotations

import pytest

from ai_server.assist.core import SlotRows
from ai_server.assist.intents import Recognizer
from ai_server.routing import Route, RouteKind, Scope, parse_route

pytestmark = pytest.mark.unit

ROOMS = ["kitchen", "living_room", "Bedroom", "kids_room", "hall"]
DEVICES = ["kitchen-pi", "hall-1", "study.speaker"]
REPLAY, ANNOUNCE = RouteKind.REPLAY, RouteKind.ANNOUNCE
ROOM, DEVICE, ALL, UNKNOWN = Scope.ROOM, Scope.DEVICE, Scope.ALL, Scope.UNKNOWN


@pytest.mark.parametrize(
    ("text", "route"),
    [
        ("could you read the answer in the kitchen again", Route(REPLAY, ROOM, "kitchen")),
        ("okay nabu, play that in the kitchen", Route(REPLAY, ROOM, "kitchen")),  # any wake word kept by the STT
        ("please repeat your last reply on the speaker in the bedroom", Route(REPLAY, ROOM, "Bedroom")),
        ("send what you said to kitchen pi", Route(REPLAY, DEVICE, "kitchen-pi")),
        ("repeat the answer throughout the house", Route(REPLAY, ALL)),
        ("so play it in the attic please", Route(REPLAY, UNKNOWN, "attic")),
        ("Hey Jarvis, tell everyone the pizza is here!", Route(ANNOUNCE, ALL, "", "The pizza is here!")),
        ("broadcast to every speaker that the film starts", Route(ANNOUNCE, ALL, "", "The film starts.")),
        ("Broadcast: the garden gate is open.", Route(ANNOUNCE, ALL, "", "The garden gate is open.")),
        (
            "announce lunch is served on the speakers in the living room",
            Route(ANNOUNCE, ROOM, "living_room", "Lunch is served."),
        ),
        ("announce in the bed room that it's late", Route(ANNOUNCE, ROOM, "Bedroom", "It's late.")),
        ("let everybody in the kitchen know the soup is hot", Route(ANNOUNCE, ROOM, "kitchen", "The soup is hot.")),
        ("tell the living room speakers to come for dinner", Route(ANNOUNCE, ROOM, "living_room", "Come for dinner.")),
        ("Tell Kitchen Pi: the oven is hot!", Route(ANNOUNCE, DEVICE, "kitchen-pi", "The oven is hot!")),
        ("announce to the attic speaker that the box is ready", Route(ANNOUNCE, UNKNOWN, "attic", "The box is ready.")),
        ("tell everyone in the game room to come down", Route(ANNOUNCE, UNKNOWN, "game room", "Come down.")),
    ],
)
def test_unseen_phrasings(text: str, route: Route) -> None:
    assert parse_route(text, ROOMS, DEVICES) == route


@pytest.mark.parametrize(
    "text",
    [
        "tell me about announcements",
        "play the news in the kitchen",
        "say something in the kitchen",
        "repeat after me in the kitchen",
        "let the dog out",
        "tell the kids to brush their teeth",  # not a known room
        "let the kitchen light stay on",
        "read that in the morning",
        "play it for the kids",
        "send it by email",
        "say it slower in the kitchen",
        "read it on the train",
        "announce to the attic",  # a place, nothing to say
        "broadcast on kitchen pi",
    ],
)
def test_unseen_non_routing_requests(text: str) -> None:
    assert parse_route(text, ROOMS, DEVICES) is None


def test_a_new_room_is_a_list_slot_at_once() -> None:
    assert parse_route("play it in the garage", ROOMS) == Route(REPLAY, UNKNOWN, "garage")
    assert parse_route("play it in the garage", [*ROOMS, "garage"]) == Route(REPLAY, ROOM, "garage")
    assert parse_route("tell the garage the car is in", [*ROOMS, "garage"]) == Route(
        ANNOUNCE, ROOM, "garage", "The car is in."
    )


@pytest.mark.parametrize(
    ("text", "intent", "slots"),
    [
        (
            "announce to the kitchen that dinner is ready",
            "NailaAnnounce",
            {"area": "kitchen", "message": "dinner is ready"},
        ),
        ("tell everybody the film starts", "NailaAnnounce", {"message": "the film starts"}),
        ("play it on the speakers in the living room", "NailaReplay", {"area": "living_room"}),
        ("say that again in the garage", "NailaReplay", {"unknown_place": "garage"}),
    ],
)
def test_the_recognizer_detects_them_with_the_same_templates(text: str, intent: str, slots: dict[str, str]) -> None:
    rooms: SlotRows = [("kitchen", "kitchen", {}), ("living room", "living_room", {})]
    match = Recognizer().recognize(text, {"area": rooms})
    assert match is not None and match.intent == intent
    assert {k: match.slots.get(k) for k in slots} == slots
