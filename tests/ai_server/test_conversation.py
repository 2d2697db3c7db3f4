from __future__ import annotations

import pytest

from ai_server.conversation import Conversations, as_written

pytestmark = pytest.mark.unit


def test_history_is_per_device_and_bounded() -> None:
    c = Conversations("Be brief.", history_turns=2)
    for i in range(3):
        c.record("kitchen", f"q{i}", f"a{i}")
    c.record("hall", "hq", "ha")
    msgs = c.messages("kitchen", "now?")
    assert msgs[0] == {"role": "system", "content": "Be brief."}
    assert [m["content"] for m in msgs[1:]] == ["Q1.", "a1", "Q2.", "a2", "Now?"]
    assert [m["content"] for m in c.messages("hall", "x")[1:]] == ["Hq.", "ha", "X."]


def test_a_full_history_drops_its_oldest_half_at_once() -> None:
    """So the prompt prefix (and the LLM's cache of it) changes every few turns, not every turn."""
    c = Conversations("S", history_turns=6)
    lengths = []
    for i in range(12):
        c.record("d", f"q{i}", f"a{i}")
        lengths.append(len(c.history("d")))
    assert lengths == [1, 2, 3, 4, 5, 6, 4, 5, 6, 4, 5, 6]
    assert [e.user for e in c.history("d")] == ["q6", "q7", "q8", "q9", "q10", "q11"]


def test_zero_history_keeps_nothing() -> None:
    c = Conversations("S", history_turns=0)
    c.record("d", "q", "a")
    assert len(c.messages("d", "x")) == 2


def test_visual_context_goes_in_just_before_the_question_for_that_question_only() -> None:
    c = Conversations("S", history_turns=2)
    c.record("door", "hello", "hi")
    msgs = c.messages("door", "who is there?", room="hall", visual="a person holding a parcel")
    assert msgs[0]["content"].endswith("from the hall.")
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "system", "user"]
    assert "parcel" in msgs[3]["content"] and msgs[4]["content"] == "Who is there?"
    assert len(c.messages("door", "x")) == 4  # the next question carries no stale view


@pytest.mark.parametrize(
    ("heard", "written"),
    [
        ("what is the capital of france", "What is the capital of france?"),  # a question word: "?"
        ("tell me a joke", "Tell me a joke."),
        ("can you recommend a good book", "Can you recommend a good book?"),
        ("What is 2 plus 2?", "What is 2 plus 2?"),  # Whisper's own marks stay
        ("  Wow!  ", "Wow!"),
        ('he said "stop."', 'He said "stop."'),  # a mark inside closing quotes ends it
        ("", ""),  # the prefill's empty user turn
    ],
)
def test_the_users_words_go_to_the_model_as_a_written_sentence(heard: str, written: str) -> None:
    """Whisper often writes a browser's or a room microphone's speech without capitals or marks; the
    shipped model answers the bare words worse and sometimes echoes them (docs/benchmarks.md)."""
    assert as_written(heard) == written


def test_the_prompt_renders_history_the_same_way_every_turn_and_keeps_the_words_as_heard() -> None:
    """Byte-stable prefix: turn n+1's prompt starts with turn n's history exactly (the LLM's cache)."""
    c = Conversations("S", history_turns=4)
    c.record("d", "what is the time", "Noon.")
    first = c.messages("d", "and the date")
    c.record("d", "and the date", "Monday.")
    second = c.messages("d", "thanks")
    assert second[: len(first) - 1] == first[:-1]
    assert second[len(first) - 1] == {"role": "user", "content": "And the date."}
    assert [e.user for e in c.history("d")] == ["what is the time", "and the date"]  # as heard
