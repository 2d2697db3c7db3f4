"""shared.errors.one_line: one home for an error as one line of text."""

from __future__ import annotations

import pytest

from shared.errors import MAX_CHARS, one_line

pytestmark = pytest.mark.unit


def test_type_and_message_on_one_line() -> None:
    assert one_line(ValueError("bad\nsdp\r\n  line")) == "ValueError: bad sdp line"
    assert len(one_line(RuntimeError("x" * 1000))) == MAX_CHARS


def test_message_alone_or_the_type_name_when_there_is_none() -> None:
    assert one_line(ValueError("a\n b"), with_type=False) == "a b"
    assert one_line(TimeoutError(), with_type=False) == "TimeoutError"
    assert one_line(ValueError("y" * 500), with_type=False, limit=200) == "y" * 200
