"""shared.mqtt.recover.recover_id: the one way an id is read back from a refused payload."""

from __future__ import annotations

import pytest

from shared.mqtt.recover import recover_id

pytestmark = pytest.mark.unit


def test_the_id_of_a_truncated_or_invalid_payload_is_found() -> None:
    cut = b'{"text": "x", "conversation_id" : "c:1-2", "data": "AAAA'  # never valid JSON
    assert recover_id(cut, "conversation_id") == "c:1-2"
    assert recover_id('{"command": 5, "request_id": "r-1"}', "request_id") == "r-1"
    assert recover_id(bytearray(b'{"request_id":"r.2"}'), "request_id") == "r.2"
    assert recover_id(memoryview(b'{"request_id":"r_3"}'), "request_id") == "r_3"


@pytest.mark.parametrize(
    "payload",
    [
        b'{"request_id": "has space"}',
        b'{"request_id": 5}',
        b'{"request_id": "' + b"a" * 129 + b'"}',
        b"\xff\xfe",
        b"{}",
        None,
        7,
    ],
)
def test_no_id_when_absent_or_not_a_plain_token(payload: object) -> None:
    assert recover_id(payload, "request_id") is None  # type: ignore[arg-type]


def test_only_the_short_text_after_the_key_is_read_in_a_big_payload() -> None:
    big = b'{"data": "' + b"A" * 5_000_000 + b'", "conversation_id": "late"}'
    assert recover_id(big, "conversation_id") == "late"
