"""/connect input validation as pure functions (the HTTP path is in test_http_api.py)."""

from __future__ import annotations

import json

import pytest

from hub.signaling import RequestRejected, Unauthorized, check_token, parse_connect_body

pytestmark = pytest.mark.unit

# Enough of an offer for the parser: one audio section (ICE/DTLS checks are aiortc's job later).
SDP = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"


def body(obj: object) -> bytes:
    return json.dumps(obj).encode()


def test_good_body_parses() -> None:
    req = parse_connect_body(body({"device_id": "pi-kitchen_1.a", "sdp": SDP}))
    assert req.device_id == "pi-kitchen_1.a" and req.sdp == SDP


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"{not json", "bad_json"),
        (b"\xff\xfe", "bad_json"),
        (body(["device_id", "sdp"]), "bad_json"),
        (body("hello"), "bad_json"),
        (body({"sdp": SDP}), "missing_field"),
        (body({"device_id": "pi"}), "missing_field"),
        (body({"device_id": 7, "sdp": SDP}), "bad_type"),
        (body({"device_id": "pi", "sdp": None}), "bad_type"),
        (body({"device_id": "pi", "sdp": {"type": "offer"}}), "bad_type"),
        (body({"device_id": "", "sdp": SDP}), "bad_device_id"),
        (body({"device_id": "../etc/passwd", "sdp": SDP}), "bad_device_id"),
        (body({"device_id": "pi kitchen", "sdp": SDP}), "bad_device_id"),
        (body({"device_id": "pi\n", "sdp": SDP}), "bad_device_id"),
        (body({"device_id": "x" * 65, "sdp": SDP}), "bad_device_id"),
        (body({"device_id": "pi-é", "sdp": SDP}), "bad_device_id"),
        (body({"device_id": "pi", "sdp": ""}), "bad_sdp"),
        (body({"device_id": "pi", "sdp": "hello"}), "bad_sdp"),
        (body({"device_id": "pi", "sdp": "v=0\r\nm=audio x\r\n"}), "bad_sdp"),
        (body({"device_id": "pi", "sdp": "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n"}), "bad_sdp"),
    ],
)
def test_bad_bodies_are_rejected_with_a_reason(raw: bytes, reason: str) -> None:
    with pytest.raises(RequestRejected) as exc:
        parse_connect_body(raw)
    assert exc.value.reason == reason and exc.value.status == 400
    assert "\n" not in exc.value.message


def test_device_id_of_64_chars_is_fine() -> None:
    assert parse_connect_body(body({"device_id": "x" * 64, "sdp": SDP})).device_id == "x" * 64


def test_no_tokens_means_no_auth() -> None:
    check_token({}, "pi", None)


def test_device_token_required_and_checked() -> None:
    tokens = {"pi": "s3cret"}
    check_token(tokens, "pi", "Bearer s3cret")
    check_token(tokens, "pi", "bearer s3cret")
    check_token(tokens, "other", None)  # no entry for it and no "*": open
    for header in (None, "", "Bearer", "Bearer wrong", "Basic s3cret", "s3cret"):
        with pytest.raises(Unauthorized) as exc:
            check_token(tokens, "pi", header)
        assert exc.value.status == 401


def test_wildcard_token_covers_devices_without_their_own() -> None:
    tokens = {"*": "all", "pi": "mine"}
    check_token(tokens, "anything", "Bearer all")
    check_token(tokens, "pi", "Bearer mine")
    with pytest.raises(Unauthorized):
        check_token(tokens, "pi", "Bearer all")
    with pytest.raises(Unauthorized):
        check_token(tokens, "anything", None)
