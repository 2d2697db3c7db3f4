"""Questions about past conversations ("what was I asking about yesterday") answered from the transcripts
table on a fixed clock, through the same HistoryQuestions the source selection asks first (step 2)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from ai_server.media.history import Asker, HistoryQuestions, is_conversation_question
from ai_server.store import MediaStore

pytestmark = pytest.mark.unit

TZ = timezone(timedelta(hours=1))
NOW = datetime(2026, 11, 23, 15, 0, tzinfo=TZ)  # Monday afternoon, local time


def at(day_offset: int, hh: int, mm: int) -> datetime:
    return datetime(2026, 11, 23, hh, mm, tzinfo=TZ) + timedelta(days=day_offset)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[MediaStore]:
    s = MediaStore(tmp_path)
    seed = [
        (at(-1, 9, 14), "kitchen-1", "kitchen", "will it rain tomorrow", "Yes, from noon."),
        (at(-1, 21, 40), "bedroom-1", "bedroom", "set an alarm for seven", "Done: 07:00."),
        (at(0, 8, 5), "living-1", "living_room", "who wrote Dune", "Frank Herbert."),
        (at(0, 13, 30), "chat:phone:c1", "", "a recipe for pancakes", "Flour, eggs, milk."),
    ]
    for when, device, room, user, reply in seed:
        s.transcripts.add(time=when, device_id=device, room=room, thread=device, user_text=user, reply_text=reply)
    s.events.add(time=at(0, 3, 10), device_id="door_cam", zone="front_door", alert_type="person_detected",
                 label="person", confidence=0.9, track_id=1, outcome="alerted")
    yield s
    s.close()


OWNER = Asker("voice", "owner-pi")  # listed in AI_HISTORY_HOUSEHOLD: hears every room and session


@pytest.fixture
def history(store: MediaStore) -> HistoryQuestions:
    return HistoryQuestions(store.events, None, lambda: NOW, transcripts=store.transcripts, household=["owner-pi"])


def test_yesterday_cites_times_and_rooms(history: HistoryQuestions) -> None:
    found = history.answer("What was I asking about yesterday?", OWNER)
    assert found is not None and found.kind == "conversations" and len(found.exchanges) == 2
    assert found.text == (
        '2 exchanges yesterday: At 09:14 yesterday in the kitchen you asked "will it rain tomorrow" and I answered '
        '"Yes, from noon.". At 21:40 yesterday in the bedroom you asked "set an alarm for seven" and I answered '
        '"Done: 07:00.".'
    )
    assert found.prompt.startswith("From the stored conversation transcripts")


def test_this_morning_and_chat(history: HistoryQuestions) -> None:
    found = history.answer("what did we talk about this morning", OWNER)
    assert found is not None and found.text == (
        '1 exchange this morning: At 08:05 in the living room you asked "who wrote Dune" and I answered '
        '"Frank Herbert.".'
    )
    found = history.answer("what did I ask you earlier", OWNER)  # no range: the last few, oldest first
    assert found is not None and found.text.startswith("The last 4 exchanges: At 09:14 yesterday in the kitchen")
    assert found.text.endswith('At 13:30 by chat you asked "a recipe for pancakes" and I answered '
                               '"Flour, eggs, milk.".')


def test_an_empty_range_is_said_plainly(history: HistoryQuestions, store: MediaStore) -> None:
    found = history.answer("what did we talk about last night", OWNER)  # 18:00 -> 06:00
    assert found is not None and [e.user_text for e in found.exchanges] == ["set an alarm for seven"]
    found = history.answer("what did I ask on 1 November", OWNER)
    assert found is not None and found.text == "There are no recorded conversations on 1 November."
    other = MediaStore(store.root / "empty")
    try:
        found = HistoryQuestions(other.events, None, lambda: NOW, transcripts=other.transcripts).answer(
            "what was I asking about before?", OWNER)
        assert found is not None and found.text == "There are no recorded conversations yet."
    finally:
        other.close()


def test_camera_questions_and_other_questions_are_unchanged(history: HistoryQuestions, store: MediaStore) -> None:
    found = history.answer("what did the front door camera see at 3am")
    assert found is not None and found.kind == "events" and len(found.events) == 1
    assert found.prompt.startswith("From the stored camera history")
    assert history.answer("what time is it") is None
    assert history.answer("tell me a joke") is None
    # Without a transcripts table (as before): a conversation question is not the history's.
    assert HistoryQuestions(store.events, None, lambda: NOW).answer("what was I asking about yesterday") is None


@pytest.mark.parametrize(
    ("question", "expected"),
    [
        ("what was I asking about yesterday", True),
        ("what did we talk about this morning", True),
        ("what did I say to you two hours ago", True),
        ("what was our last conversation about", True),
        ("I asked you to turn on the lights", False),  # a complaint, not a question about the past
        ("tell me about the weather", False),
        ("what did the camera see yesterday", False),
    ],
)
def test_which_questions_are_about_conversations(question: str, expected: bool) -> None:
    assert is_conversation_question(question) is expected


# -- whose history (finding H3) ----------------------------------------------------------------


def test_a_device_hears_only_its_own_exchanges(history: HistoryQuestions) -> None:
    found = history.answer("what was I asking about yesterday", Asker("voice", "kitchen-1"))
    assert found is not None and [e.user_text for e in found.exchanges] == ["will it rain tomorrow"]
    # The bedroom device asks about the same day: its own alarm only, not the kitchen's question.
    found = history.answer("what was I asking about yesterday", Asker("voice", "bedroom-1"))
    assert found is not None and [e.user_text for e in found.exchanges] == ["set an alarm for seven"]
    assert "rain" not in found.text


def test_device_a_is_not_heard_by_chat_session_s2_nor_by_device_b(store: MediaStore) -> None:
    store.transcripts.add(time=at(0, 14, 0), device_id="device-a", room="study", thread="device-a",
                          user_text="what is my bank's phone number", reply_text="0800 123 456.")
    store.transcripts.add(time=at(0, 14, 5), device_id="chat:s2:c9", room="", thread="chat:s2:c9",
                          user_text="what is the capital of Peru", reply_text="Lima.")
    history = HistoryQuestions(store.events, None, lambda: NOW, transcripts=store.transcripts)
    for asker in (Asker.of("chat:s2"), Asker("voice", "device-b"), Asker("voice", "s2")):
        for question in ("what was I asking about today", "what did I ask you earlier"):
            found = history.answer(question, asker)
            assert found is not None and "bank" not in found.text, (asker, question)
            assert all(e.device_id != "device-a" for e in found.exchanges)
    s2 = history.answer("what was I asking about today", Asker.of("chat:s2"))
    assert s2 is not None and [e.user_text for e in s2.exchanges] == ["what is the capital of Peru"]
    a = history.answer("what was I asking about today", Asker("voice", "device-a"))
    assert a is not None and [e.user_text for e in a.exchanges] == ["what is my bank's phone number"]
    # A device named like the session hears no chat, and nobody in particular hears nothing.
    assert history.answer("what did I ask you earlier", Asker("voice", "s2")) is not None
    nobody = history.answer("what did I ask you earlier")
    assert nobody is not None and nobody.exchanges == [] and nobody.text == "There are no recorded conversations yet."


def test_a_chat_session_hears_all_its_conversations_and_no_look_alike_session(store: MediaStore) -> None:
    for device_id, text in (("chat:phone:c2", "how tall is Everest"), ("chat:phone2:c1", "my pin is 4321"),
                            ("chat:phoneXc1:c1", "wildcards"), ("phone", "voice on a device called phone")):
        store.transcripts.add(time=at(0, 14, 0), device_id=device_id, room="", thread=device_id,
                              user_text=text, reply_text="ok")
    history = HistoryQuestions(store.events, None, lambda: NOW, transcripts=store.transcripts)
    found = history.answer("what was I asking about today", Asker.of("chat:phone"))
    assert found is not None
    assert [e.user_text for e in found.exchanges] == ["a recipe for pancakes", "how tall is Everest"]
    assert {e.channel for e in found.exchanges} == {"chat"}


def test_the_household_setting_names_who_hears_everything(store: MediaStore) -> None:
    history = HistoryQuestions(store.events, None, lambda: NOW, transcripts=store.transcripts,
                               household=["chat:admin"])
    everyone = history.answer("what did I ask you earlier", Asker.of("chat:admin:c1"))
    assert everyone is not None and len(everyone.exchanges) == 4
    own = history.answer("what did I ask you earlier", Asker.of("chat:phone"))
    assert own is not None and len(own.exchanges) == 1


@pytest.mark.parametrize(("looker_id", "asker"), [
    ("kitchen-1", Asker("voice", "kitchen-1")),
    ("chat:s2", Asker("chat", "s2")),
    ("chat:s2:chat-0123", Asker("chat", "s2")),
])
def test_who_asks(looker_id: str, asker: Asker) -> None:
    assert Asker.of(looker_id) == asker
