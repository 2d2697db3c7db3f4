"""The clause splitter: first audio as early as a natural cut allows, nothing split mid-number."""

from __future__ import annotations

import pytest

from ai_server.clauses import ClauseSplitter, speakable

pytestmark = pytest.mark.unit


def split(text: str, step: int = 3, **kw: int) -> list[str]:
    s = ClauseSplitter(**kw)
    out: list[str] = []
    for i in range(0, len(text), step):  # as a model streams it: a few characters at a time
        out += s.push(text[i : i + step])
    return out + s.flush()


def test_first_clause_is_cut_at_the_first_sentence_end_even_when_short() -> None:
    assert split("Sure! The weather today is sunny, with a light breeze.")[0] == "Sure!"


def test_first_clause_cut_at_a_comma_once_it_has_a_few_words() -> None:
    out = split("The weather today is mostly sunny, with a light breeze and no rain at all.")
    assert out == ["The weather today is mostly sunny,", "with a light breeze and no rain at all."]


def test_first_clause_is_cut_before_a_conjunction_once_long_enough() -> None:
    out = split("Set a timer for ten minutes and play the countdown song for me.")
    assert out == ["Set a timer for ten minutes", "and play the countdown song for me."]
    assert split("Cats and dogs are friends.") == ["Cats and dogs are friends."]  # too early to cut


def test_later_clauses_need_more_words_before_a_comma_cut() -> None:
    out = split("Okay. It is sunny, warm and calm today, so enjoy it.")
    assert out == ["Okay.", "It is sunny, warm and calm today, so enjoy it."]


def test_numbers_abbreviations_and_decimals_are_not_split() -> None:
    out = split("Dr. Smith measured 3.5 inches. That is 1,000 mm, roughly.")
    assert out == ["Dr. Smith measured 3.5 inches.", "That is 1,000 mm, roughly."]


def test_a_boundary_waits_for_the_next_character() -> None:
    s = ClauseSplitter()
    assert s.push("It costs 3.") == []  # could still become 3.5
    assert s.push("5 dollars. Next") == ["It costs 3.5 dollars."]
    assert s.flush() == ["Next"]


def test_the_first_sentence_end_is_a_cut_without_waiting_for_the_next_token() -> None:
    s = ClauseSplitter()
    assert s.push("The sky is blue.") == ["The sky is blue."]  # cannot continue as a number
    assert s.push(" It is") == []  # later clauses still wait for the next character
    t = ClauseSplitter()
    assert t.push("Really?") == ["Really?"]
    assert t.push(" Yes, it is.") == []  # a later one: waits
    u = ClauseSplitter()
    assert u.push("Ask Dr.") == [] and u.push(" Smith.") == ["Ask Dr. Smith."]
    assert ClauseSplitter().push("It costs 3.") == []


def test_long_first_clause_without_punctuation_is_forced_at_a_word_boundary() -> None:
    text = " ".join(["word"] * 20)
    out = split(text, first_max_words=14)
    assert out[0] == " ".join(["word"] * 14)
    assert out[1] == " ".join(["word"] * 6)


def test_a_long_first_sentence_is_cut_where_a_new_phrase_opens() -> None:
    """Issue 20: a first clause of 5+ words is cut before a preposition or verb that opens a new
    phrase, so its synthesis stays short on every turn; never after a hanging word or a number."""
    assert split("The forecast for Paris tomorrow is sunny and warm.") == [
        "The forecast for Paris tomorrow",
        "is sunny and warm.",
    ]
    assert split("It will be twenty five degrees in Paris tomorrow afternoon.")[0] == ("It will be twenty five degrees")
    assert split("We have a wide range of animals that are often kept as pets.")[0] == (
        "We have a wide range of animals"
    )
    # Before 5 words, or after a word that leaves the phrase hanging, or after a number: no cut.
    assert split("Set a timer for ten minutes.") == ["Set a timer for ten minutes."]
    assert split("I have put the kettle on for you.") == ["I have put the kettle on for you."]  # "on |"
    assert split("The total comes to 25 in all.") == ["The total comes to 25 in all."]
    # Later clauses are not cut this way (they only need to stay ahead of playback).
    assert split("Okay. The forecast for Paris tomorrow is sunny and warm.") == [
        "Okay.",
        "The forecast for Paris tomorrow is sunny and warm.",
    ]


def test_a_forced_first_cut_does_not_split_a_number_said_in_words() -> None:
    out = split("one two three four five six seven eight nine twenty five cats sat", first_max_words=10)
    assert out[0] == "one two three four five six seven eight nine twenty five cats"


def test_markdown_and_bullets_are_not_spoken() -> None:
    assert speakable("**Bold** and `code`") == "Bold and code"
    assert split("Here:\n- first item\n- second item\n") == ["Here:", "first item", "second item"]


def test_punctuation_only_pieces_are_dropped() -> None:
    assert split("... !! Hello there.") == ["Hello there."]
