"""The intent fast path through a real AI server (real piper TTS, scripted STT at its one boundary, a
scripted LLM that records whether it was asked): commands are answered by code, questions by the LLM."""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
import pytest

from ai_server.assist import maths, time_date
from ai_server.assist.core import AssistContext, AssistReply, AssistServices, IntentMatch, IntentRegistry
from ai_server.assist.intents import Recognizer
from ai_server.assist.router import NO_HOME_ASSISTANT, AssistRouter, install_defaults
from ai_server.client import StreamClient, silence
from ai_server.fakes import FakeLLM, FakeSTT
from ai_server.metrics import Metrics
from ai_server.pipeline import Turn
from shared.contract import pb

NOW = dt.datetime(2026, 3, 14, 15, 9, tzinfo=dt.UTC)


def router() -> AssistRouter:
    registry = IntentRegistry()
    services = AssistServices(registry, lambda: NOW, "/nonexistent")
    time_date.install(services)
    maths.install(services)
    install_defaults(registry)
    return AssistRouter(registry, Recognizer("en"), Metrics(), lambda: NOW)


async def ask(r: AssistRouter, text: str) -> str | None:
    reply = await r.answer(text, AssistContext(now=NOW, device_id="kitchen-1", room="kitchen"))
    return None if reply is None else reply.text


@pytest.mark.unit
@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("what time is it", "It's 3:09 PM."),
        ("what's the date", "Today is Saturday, March 14, 2026."),
        ("what time is it in Tokyo", "In Tokyo it's 12:09 AM on Sunday."),
        ("what time is it in new york", "In New York it's 11:09 AM."),
        ("how many minutes are in 2.5 hours", "2.5 hours is 150 minutes."),
        ("how many minutes are in two and a half hours", "2.5 hours is 150 minutes."),
        ("what is 17 times 23", "17 times 23 is 391."),
        ("what is 1 divided by 3", "1 divided by 3 is about 0.33."),
        ("what is 5 divided by 0", "You can't divide by zero."),
        ("how many feet in a mile", "1 mile is 5,280 feet."),
        ("convert 5 kilograms to pounds", "5 kilograms is about 11.02 pounds."),
        ("turn on the lights", NO_HOME_ASSISTANT),  # "the lights" of the asker's room
        ("who is the president of the united states", None),
        ("what's the temperature in the kitchen", None),  # no area list here: not a command
        ("what is the capital of france", None),
        ("what is love times hate", None),  # recognised, declined: the LLM answers
    ],
)
async def test_answers_by_code(text: str, said: str | None) -> None:
    assert await ask(router(), text) == said


@pytest.mark.unit
async def test_counts_intent_turns_fall_throughs_and_failures() -> None:
    r = router()

    async def broken(match: IntentMatch, ctx: AssistContext) -> AssistReply:
        raise RuntimeError("store is gone")

    r.registry.register("HassStartTimer", broken)
    await ask(r, "what time is it")
    await ask(r, "what is love times hate")
    assert await ask(r, "set a timer for 5 minutes") == "Sorry, I couldn't do that."
    counters = r.metrics.counters
    assert counters["intent_turns"] == 1 and counters["intent:HassGetCurrentTime"] == 1
    assert counters["intent_fall_throughs"] == 1 and counters["intent_errors"] == 1


@pytest.mark.unit
async def test_route_only_recognises_and_the_action_runs_the_handler() -> None:
    r = router()
    ran: list[str] = []

    async def timer(match: IntentMatch, ctx: AssistContext) -> AssistReply:
        ran.append(ctx.device_id or "")
        return AssistReply("Timer set for 5 minutes.", match.intent)

    r.registry.register("HassStartTimer", timer)
    turn = Turn(1, "kitchen-1", "c", 0.0, room="kitchen", transcript="set a timer for 5 minutes")
    action = r.route(turn)
    assert action is not None and ran == [], "recognising must not act (a preemptive turn may be dropped)"
    assert await action() == "Timer set for 5 minutes." and ran == ["kitchen-1"]
    assert r.route(Turn(2, "kitchen-1", "c", 0.0, transcript="who wrote hamlet")) is None
    declined = r.route(Turn(3, "kitchen-1", "c", 0.0, transcript="what is love times hate"))
    assert declined is not None and await declined() is None  # the pipeline then asks the LLM


@pytest.mark.integration
async def test_a_command_is_answered_by_code_and_a_question_by_the_llm(make_server: Any, real_tts: Any) -> None:
    said = ["what time is it"]
    llm = FakeLLM("Paris is the capital of France.")
    server = await make_server(stt=FakeSTT(lambda audio: said[0]), llm=llm, tts=real_tts)
    audio = np.concatenate([np.full(9600, 3000, np.int16), silence(300)])  # a loud stretch: not silence
    async with StreamClient(server.address) as client:
        end = await client.speak("kitchen-1", audio)
        command = await client.turn("kitchen-1", end, within_s=60)
        said[0] = "what is the capital of france"
        end = await client.speak("kitchen-1", audio)
        question = await client.turn("kitchen-1", end, within_s=60)
    assert command.final is not None and command.final.error_code == pb.NONE
    assert command.final.reply_text.startswith("It's ") and command.final.reply_text.endswith(("AM.", "PM.",
                                                                                                "noon.", "midnight."))
    assert command.audio, "the answer is spoken by the real TTS"
    timing = command.final.timing
    assert timing.llm_first_token_ms == 0 and timing.tts_first_audio_ms > 0, "a command turn skips the LLM"
    assert len(llm.requests) == 1, "only the question reached the LLM"
    assert question.final is not None and question.final.reply_text == "Paris is the capital of France."
    assert question.final.timing.llm_first_token_ms > 0
    counters = server.pipeline.metrics.counters
    assert counters["intent_turns"] == 1 and counters["intent:HassGetCurrentTime"] == 1
