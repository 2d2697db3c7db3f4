"""Spoken routing requests: the parser (ai_server/routing.py) and the pipeline's router seam.

The seam tests drive ConversationSession message by message with scripted backends and a
scripted router, as test_preemptive.py does, so the order of START/END and the turn is exact.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import numpy as np
import pytest

from ai_server.conversation import Conversations
from ai_server.fakes import FakeLLM, FakeSTT, FakeTTS
from ai_server.pipeline import Pipeline, Turn
from ai_server.routing import Route, RouteKind, Scope, parse_route
from ai_server.session import ConversationSession
from shared.audio import HUB_RATE, Int16Array
from shared.contract import pb
from tests.ai_server.test_preemptive import queued as drain
from tests.ai_server.test_preemptive import settle

pytestmark = pytest.mark.unit

ROOMS = ["kitchen", "living_room", "Bedroom", "kids_room", "hall"]
DEVICES = ["kitchen-pi", "hall-1", "study.speaker"]

REPLAY, ANNOUNCE = RouteKind.REPLAY, RouteKind.ANNOUNCE
ROOM, DEVICE, ALL, UNKNOWN = Scope.ROOM, Scope.DEVICE, Scope.ALL, Scope.UNKNOWN


def parse(text: str) -> Route | None:
    return parse_route(text, ROOMS, DEVICES)


# ---- the parser --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "scope", "target"),
    [
        ("play it on the kitchen speaker", ROOM, "kitchen"),
        ("Play it on the kitchen speaker.", ROOM, "kitchen"),
        ("say that in the living room", ROOM, "living_room"),
        ("Say that in the Living Room!", ROOM, "living_room"),
        ("say that in the living_room", ROOM, "living_room"),
        ("play it in the livingroom too", ROOM, "living_room"),
        ("repeat that in the bedroom", ROOM, "Bedroom"),  # the room as the devices spell it
        ("repeat that in the bed room", ROOM, "Bedroom"),
        ("say it again in the kids' room", ROOM, "kids_room"),
        ("play that again on the kitchen speakers please", ROOM, "kitchen"),
        ("play it on the speakers in the kitchen", ROOM, "kitchen"),
        ("Hey Naila, could you please play that on the speaker in the living room?", ROOM, "living_room"),
        ("can you send that to the kitchen", ROOM, "kitchen"),
        ("play the last answer in the bedroom", ROOM, "Bedroom"),
        ("play what you just said in the kitchen as well", ROOM, "kitchen"),
        ("read your reply in the hall", ROOM, "hall"),
        ("play it on kitchen pi", DEVICE, "kitchen-pi"),
        ("play it on hall 1", DEVICE, "hall-1"),
        ("say that on the study speaker", DEVICE, "study.speaker"),  # the id itself ends in a device word
        ("play it everywhere", ALL, ""),
        ("repeat that in every room", ALL, ""),
        ("say that to everyone", ALL, ""),
        ("play it on all the speakers", ALL, ""),
        ("play it in the whole house", ALL, ""),
        ("play it in the garage", UNKNOWN, "garage"),
        ("Repeat that in the wine cellar.", UNKNOWN, "wine cellar"),
        ("play it on the garage speaker", UNKNOWN, "garage"),
        ("say that in the game room", UNKNOWN, "game room"),
        ("send it to the games room", UNKNOWN, "games room"),
    ],
)
def test_replay_requests(text: str, scope: Scope, target: str) -> None:
    assert parse(text) == Route(REPLAY, scope, target)


@pytest.mark.parametrize(
    ("text", "scope", "target", "said"),
    [
        ("announce dinner is ready in the kitchen", ROOM, "kitchen", "Dinner is ready."),
        ("Announce dinner is ready in the kitchen, please.", ROOM, "kitchen", "Dinner is ready."),
        ("announce to the kitchen that dinner is ready", ROOM, "kitchen", "Dinner is ready."),
        ("announce in the living room: the film starts now!", ROOM, "living_room", "The film starts now!"),
        ("broadcast the cake is in the oven in the kitchen", ROOM, "kitchen", "The cake is in the oven."),
        ("tell the kitchen dinner is ready", ROOM, "kitchen", "Dinner is ready."),
        ("tell everyone in the bedroom that it's bedtime", ROOM, "Bedroom", "It's bedtime."),
        ("let the hall know the taxi is here", ROOM, "hall", "The taxi is here."),
        ("announce on kitchen pi that the timer is done", DEVICE, "kitchen-pi", "The timer is done."),
        ("Tell everyone dinner is ready.", ALL, "", "Dinner is ready."),
        ("tell everybody that we leave in 10 minutes", ALL, "", "We leave in 10 minutes."),
        ("tell everyone to come down for dinner", ALL, "", "Come down for dinner."),
        ("let everyone know the car is here", ALL, "", "The car is here."),
        ("announce to all rooms: the movie starts in 10 minutes", ALL, "", "The movie starts in 10 minutes."),
        ("announce everywhere that the power will go off", ALL, "", "The power will go off."),
        ("announce dinner is ready to everyone", ALL, "", "Dinner is ready."),
        ("announce dinner is ready everywhere", ALL, "", "Dinner is ready."),
        ("announce dinner is ready in the whole house", ALL, "", "Dinner is ready."),
        ("announce dinner is ready", ALL, "", "Dinner is ready."),  # no place: everywhere
        ("Announce: dinner's ready, come down!", ALL, "", "Dinner's ready, come down!"),
        ("announce that Grandma is here", ALL, "", "Grandma is here."),
        ("announce everyone should come down", ALL, "", "Everyone should come down."),  # "everyone" is the text
        # An unknown place in the middle of an announcement is text: it is said, everywhere.
        ("announce dinner is in the oven", ALL, "", "Dinner is in the oven."),
        ("announce the kids are in the garden", ALL, "", "The kids are in the garden."),
        ("announce in the morning we leave early", ALL, "", "In the morning we leave early."),
        # ... but a named place that is unknown is refused, not guessed.
        ("announce to the garage that dinner is ready", UNKNOWN, "garage", "Dinner is ready."),
        ("announce to the game room dinner is ready", UNKNOWN, "game room", "Dinner is ready."),
        ("announce dinner is ready on the garage speaker", UNKNOWN, "garage", "Dinner is ready."),
        ("tell everyone in the garage that dinner is ready", UNKNOWN, "garage", "Dinner is ready."),
    ],
)
def test_announcements(text: str, scope: Scope, target: str, said: str) -> None:
    assert parse(text) == Route(ANNOUNCE, scope, target, said)


@pytest.mark.parametrize(
    "text",
    [
        "what's playing in the kitchen",
        "how do I play chess",
        "play chess with me",
        "play some music in the kitchen",
        "play this song in the kitchen",  # not a reply we could replay
        "is the oven on in the kitchen",
        "who is in the living room",
        "say that again",
        "repeat that",
        "play it again",
        "play it louder",
        "say that in French",
        "say that in a British accent",
        "say that in the style of a pirate",
        "say that in the same voice",
        "say that in the morning",
        "repeat that to me",
        "send it to my phone",
        "play it on repeat",
        "play it on the radio",
        "read it to the kids",
        "send that to the printer",
        "play it in the kitchen and the bedroom",  # several rooms: not supported, the LLM answers
        "tell me a joke",
        "tell the truth",
        "tell me what's in the kitchen",
        "let me know when it's ready",
        "tell everyone",
        "announce",
        "announce to the kitchen",
        "",
        "   ",
        "kitchen",
        "in the kitchen",
    ],
)
def test_not_routing_requests(text: str) -> None:
    assert parse(text) is None


def test_without_known_rooms_only_everywhere_and_explicit_unknown_places_are_recognised() -> None:
    assert parse_route("play it in the kitchen", []) == Route(REPLAY, UNKNOWN, "kitchen")
    assert parse_route("tell the kitchen dinner is ready", []) is None  # "tell <place>" needs a known room
    assert parse_route("tell everyone hi", []) == Route(ANNOUNCE, ALL, "", "Hi.")


def test_a_room_wins_over_a_device_spelled_the_same() -> None:
    assert parse_route("play it in the hall", ["hall"], ["hall"]) == Route(REPLAY, ROOM, "hall")
    assert parse_route("play it on hall", [], ["hall"]) == Route(REPLAY, DEVICE, "hall")


def test_place_is_the_target_as_words_to_speak() -> None:
    assert Route(REPLAY, ROOM, "living_room").place == "the living room"
    assert Route(REPLAY, DEVICE, "kitchen-pi").place == "kitchen pi"
    assert Route(REPLAY, ALL).place == "everywhere"


# ---- the pipeline seam -------------------------------------------------------------------------

FRAME = HUB_RATE // 50
CONFIRMATION = "OK, playing it in the kitchen."


def voiced(ms: int) -> Int16Array:
    t = np.arange(HUB_RATE * ms // 1000) / HUB_RATE
    return (np.sin(2 * np.pi * 200 * t) * 8000).astype(np.int16)


def msg(event: int, pcm: Int16Array, device: str = "hall") -> pb.AudioInput:
    return pb.AudioInput(device_id=device, conversation_id="c1", audio_pcm=pcm.astype("<i2").tobytes(),
                         codec=pb.PCM_S16LE, sample_rate=HUB_RATE, event=event)  # type: ignore[arg-type]  # fmt: skip


class ScriptedRouter:
    """Routes transcripts that start with "play it"; records what it was asked and what it did."""

    def __init__(self, *, fail: bool = False) -> None:
        self.fail = fail
        self.asked: list[str] = []
        self.acted: list[str] = []

    def route(self, turn: Turn) -> Callable[[], Awaitable[str]] | None:
        self.asked.append(turn.transcript)
        if self.fail:
            raise RuntimeError("router bug")
        if not turn.transcript.startswith("play it"):
            return None

        async def act() -> str:
            self.acted.append(turn.device_id)
            return CONFIRMATION

        return act


def make(
    said: list[str], router: ScriptedRouter | None, *, tts: FakeTTS | None = None, preemptive: bool = False
) -> tuple[ConversationSession, Pipeline, FakeLLM]:
    llm = FakeLLM("It is sunny.")
    stt = FakeSTT(lambda _audio: said[-1])
    pipeline = Pipeline(stt, llm, tts or FakeTTS(), Conversations("sys", 4), speculate_ms=100, preemptive=preemptive)
    pipeline.router = router
    return ConversationSession(pipeline), pipeline, llm


async def utterance(session: ConversationSession) -> list[pb.AudioOutput]:
    session.handle(msg(pb.START, voiced(400)))
    session.handle(msg(pb.END, np.zeros(FRAME, np.int16)))
    await settle()
    return drain(session)


async def test_a_routed_turn_speaks_the_confirmation_and_skips_the_llm() -> None:
    said = ["what's the weather"]
    router = ScriptedRouter()
    session, pipeline, llm = make(said, router)
    await utterance(session)
    assert len(llm.requests) == 1
    said.append("play it in the kitchen")
    out = await utterance(session)
    assert len(llm.requests) == 1, "a routed turn must not reach the LLM"
    assert router.acted == ["hall"]
    assert out[0].final_stt == "play it in the kitchen"
    audio = [m for m in out if m.audio_pcm]
    assert audio and audio[0].reply_text == CONFIRMATION
    final = out[-1]
    assert final.is_final and final.reply_text == CONFIRMATION and final.error_code == pb.NONE
    assert [(e.user, e.assistant) for e in pipeline.conversations.history("hall")] == [
        ("what's the weather", "It is sunny."),
        ("play it in the kitchen", CONFIRMATION),
    ]
    assert pipeline.metrics.counters.get("routed_turns") == 1


async def test_without_a_router_or_for_other_transcripts_the_llm_answers() -> None:
    said = ["play it in the kitchen"]
    session, _, llm = make(said, None)
    assert (await utterance(session))[-1].reply_text == "It is sunny."
    router = ScriptedRouter()
    session, _, llm = make(["how warm is it"], router)
    assert (await utterance(session))[-1].reply_text == "It is sunny."
    assert router.asked == ["how warm is it"] and router.acted == [] and len(llm.requests) == 1


async def test_a_failing_router_leaves_the_turn_to_the_llm() -> None:
    session, pipeline, llm = make(["play it in the kitchen"], ScriptedRouter(fail=True))
    final = (await utterance(session))[-1]
    assert final.reply_text == "It is sunny." and final.error_code == pb.NONE and len(llm.requests) == 1
    assert "routed_turns" not in pipeline.metrics.counters


async def test_the_confirmation_is_still_recorded_when_tts_fails() -> None:
    router = ScriptedRouter()
    session, pipeline, _ = make(["play it in the kitchen"], router, tts=FakeTTS(fail=True))
    out = await utterance(session)
    assert not any(m.audio_pcm for m in out)
    final = out[-1]
    assert final.error_code == pb.TTS_FAILED and final.reply_text == CONFIRMATION
    assert router.acted == ["hall"]
    assert [e.assistant for e in pipeline.conversations.history("hall")] == [CONFIRMATION]


async def test_a_preemptive_routed_turn_acts_only_once_end_confirms_it() -> None:
    router = ScriptedRouter()
    session, pipeline, llm = make(["play it in the kitchen"], router, preemptive=True)
    session.handle(msg(pb.START, voiced(400)))
    for _ in range(10):  # a 200 ms pause: speculation, then the preemptive turn
        session.handle(msg(pb.CONTINUE, np.zeros(FRAME, np.int16)))
    await settle()
    assert session.devices["hall"].early is not None, "the turn should have started before END"
    assert router.asked == ["play it in the kitchen"] and router.acted == [], "nothing may be played before END"
    session.handle(msg(pb.END, np.zeros(FRAME, np.int16)))
    await settle()
    assert router.acted == ["hall"]
    assert drain(session)[-1].reply_text == CONFIRMATION
    assert llm.requests == [] and pipeline.metrics.counters.get("preemptive_used") == 1


async def test_a_discarded_preemptive_routed_turn_never_acts() -> None:
    router = ScriptedRouter()
    session, _, _ = make(["play it in the kitchen"], router, preemptive=True)
    session.handle(msg(pb.START, voiced(400)))
    for _ in range(10):  # a 200 ms pause
        session.handle(msg(pb.CONTINUE, np.zeros(FRAME, np.int16)))
    await settle()
    assert session.devices["hall"].early is not None
    session.handle(msg(pb.CONTINUE, voiced(300)))  # the user only paused: the held turn is thrown away
    session.handle(msg(pb.INTERRUPT, np.zeros(0, np.int16)))
    await settle()
    assert router.acted == []
