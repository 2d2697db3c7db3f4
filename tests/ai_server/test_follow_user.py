"""A conversation follows the user from room to room (Conversations.follow), on a controllable clock."""

from __future__ import annotations

import pytest

from ai_server.conversation import Conversations
from ai_server.fakes import FakeLLM, FakeSTT, FakeTTS
from ai_server.pipeline import Pipeline
from ai_server.session import ConversationSession
from shared.contract import pb
from tests.ai_server.test_preemptive import frames, msg, queued, quiet, settle, tone

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_the_next_room_within_the_window_continues_the_thread() -> None:
    clock = Clock()
    c = Conversations("S", 6, follow_s=90, clock=clock)
    c.follow("kitchen")
    c.record("kitchen", "Who wrote Hamlet?", "Shakespeare.")
    clock.t += 30
    assert c.follow("hall") == "kitchen"
    msgs = c.messages("hall", "When was he born?", room="hall")
    assert [m["content"] for m in msgs[1:3]] == ["Who wrote Hamlet?", "Shakespeare."]
    assert "hall" in msgs[0]["content"]  # the room the user is in now
    c.record("hall", "When was he born?", "In 1564.")
    assert [e.user for e in c.history("kitchen")] == [e.user for e in c.history("hall")]


def test_after_the_window_each_room_keeps_its_own_thread() -> None:
    clock = Clock()
    c = Conversations("S", 6, follow_s=90, clock=clock)
    c.follow("kitchen")
    c.record("kitchen", "Who wrote Hamlet?", "Shakespeare.")
    clock.t += 91
    assert c.follow("hall") is None
    assert c.history("hall") == []


def test_a_room_with_a_newer_conversation_of_its_own_keeps_it() -> None:
    clock = Clock()
    c = Conversations("S", 6, follow_s=90, clock=clock)
    c.follow("kitchen")
    c.record("kitchen", "k1", "a")
    clock.t += 10
    c.follow("hall")  # follows the kitchen: shares its thread from now on
    c.record("hall", "h1", "b")
    clock.t += 10
    assert c.follow("kitchen") is None  # same thread already: nothing to take
    assert [e.user for e in c.history("kitchen")] == ["k1", "h1"]


def test_off_and_chat_keys_never_follow() -> None:
    clock = Clock()
    off = Conversations("S", 6, follow_s=0, clock=clock)
    off.follow("kitchen")
    off.record("kitchen", "q", "a")
    assert off.follow("hall") is None and off.history("hall") == []
    c = Conversations("S", 6, follow_s=90, clock=clock)
    c.record("chat:phone:c1", "typed question", "typed answer")  # chat never calls follow()
    assert c.follow("hall") is None and c.history("hall") == []


async def test_a_voice_turn_in_another_room_gets_the_earlier_exchange_in_its_prompt() -> None:
    llm = FakeLLM("Sure.")
    conversations = Conversations("sys", 4, follow_s=90)
    pipeline = Pipeline(FakeSTT("what about tomorrow"), llm, FakeTTS(), conversations)
    conversations.follow("kitchen")
    conversations.record("kitchen", "what is the weather today", "Sunny.")
    session = ConversationSession(pipeline)
    session.handle(msg(pb.START, tone(300), device="hall"))
    frames(session, quiet(100), device="hall")
    session.handle(msg(pb.END, quiet(20), device="hall"))
    await settle()
    assert queued(session)[-1].is_final
    prompt = [m["content"] for m in llm.requests[-1]]
    assert "What is the weather today?" in prompt and prompt[-1] == "What about tomorrow?"
    assert [e.user for e in conversations.history("kitchen")][-1] == "what about tomorrow"  # one thread


def test_by_default_a_conversation_stays_on_its_device() -> None:
    """LLM_FOLLOW_USER_S defaults to 0: the next speaker elsewhere may be someone else."""
    from shared.config import AIServerSettings

    settings = AIServerSettings()
    assert settings.llm_follow_user_s == 0
    clock = Clock()
    c = Conversations("S", 6, follow_s=settings.llm_follow_user_s, clock=clock)
    c.follow("kitchen")
    c.record("kitchen", "what is my bank's phone number", "0800 123 456.")
    clock.t += 1
    assert c.follow("hall") is None
    assert c.history("hall") == [] and "bank" not in str(c.messages("hall", "what did I just ask?"))
