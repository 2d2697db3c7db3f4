"""Questions about past conversations ("what was I asking about yesterday") answered from the transcripts
table on a fixed clock, through the same HistoryQuestions the source selection asks first (step 2)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from ai_server.media.history import HistoryQuestions, is_conversation_question
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


@pytest.fixture
def history(store: MediaStore) -> HistoryQuestions:
    return HistoryQuestions(store.events, None, lambda: NOW, transcripts=store.transcripts)


def test_yesterday_cites_times_and_rooms(history: HistoryQuestions) -> None:
    found = history.answer("What was I asking about yesterday?")
    assert found is not None and found.kind == "conversations" and len(found.exchanges) == 2
    assert found.text == (
        '2 exchanges yesterday: At 09:14 yesterday in the kitchen you asked "will it rain tomorrow" and I answered '
        '"Yes, from noon.". At 21:40 yesterday in the bedroom you asked "set an alarm for seven" and I answered '
        '"Done: 07:00.".'
    )
    assert found.prompt.startswith("From the stored conversation transcripts")


def test_this_morning_and_chat(history: HistoryQuestions) -> None:
    found = history.answer("what did we talk about this morning")
    assert found is not None and found.text == (
        '1 exchange this morning: At 08:05 in the living room you asked "who wrote Dune" and I answered '
        '"Frank Herbert.".'
    )
    found = history.answer("what did I ask you earlier")  # no range: the last few, oldest first
    assert found is not None and found.text.startswith("The last 4 exchanges: At 09:14 yesterday in the kitchen")
    assert found.text.endswith('At 13:30 by chat you asked "a recipe for pancakes" and I answered '
                               '"Flour, eggs, milk.".')


def test_an_empty_range_is_said_plainly(history: HistoryQuestions, store: MediaStore) -> None:
    found = history.answer("what did we talk about last night")  # 18:00 -> 06:00
    assert found is not None and [e.user_text for e in found.exchanges] == ["set an alarm for seven"]
    found = history.answer("what did I ask on 1 November")
    assert found is not None and found.text == "There are no recorded conversations on 1 November."
    other = MediaStore(store.root / "empty")
    try:
        found = HistoryQuestions(other.events, None, lambda: NOW, transcripts=other.transcripts).answer(
            "what was I asking about before?")
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
