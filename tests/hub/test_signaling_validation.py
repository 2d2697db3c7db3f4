"""/connect input validation as pure functions (the HTTP path is in test_http_api.py)."""

from __future__ import annotations

import json

import pytest

from hub.signaling import MAX_SDP_BYTES, RequestRejected, Unauthorized, check_token, parse_connect_body

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
        (body({"device_id": ".", "sdp": SDP}), "bad_device_id"),  # L2: the one device-id rule (is_safe_segment)
        (body({"device_id": "..", "sdp": SDP}), "bad_device_id"),
        (body({"device_id": "pi", "sdp": ""}), "bad_sdp"),
        (body({"device_id": "pi", "sdp": "hello"}), "bad_sdp"),
        (body({"device_id": "pi", "sdp": "v=0\r\nm=audio x\r\n"}), "bad_sdp"),
        # Only a data channel: neither microphone nor camera (a camera-only offer is fine, issue 22).
        (body({"device_id": "pi", "sdp": "v=0\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n"}),
         "bad_sdp"),
    ],
)
def test_bad_bodies_are_rejected_with_a_reason(raw: bytes, reason: str) -> None:
    with pytest.raises(RequestRejected) as exc:
        parse_connect_body(raw)
    assert exc.value.reason == reason and exc.value.status == 400
    assert "\n" not in exc.value.message


def test_device_id_of_64_chars_is_fine() -> None:
    assert parse_connect_body(body({"device_id": "x" * 64, "sdp": SDP})).device_id == "x" * 64


def test_no_tokens_means_every_device_is_refused() -> None:
    """H1: the open default is gone. No table (or no entry and no "*") is a 401, not a pass."""
    for tokens in ({}, {"pi": "s3cret"}):
        for header in (None, "Bearer anything"):
            with pytest.raises(Unauthorized):
                check_token(tokens, "other", header)


def test_an_open_hub_needs_the_explicit_setting() -> None:
    check_token({}, "pi", None, allow_unauthenticated=True)  # HUB_ALLOW_UNAUTHENTICATED=true
    with pytest.raises(Unauthorized):  # a device that has a token must still present it
        check_token({"pi": "s3cret"}, "pi", None, allow_unauthenticated=True)


def test_unknown_wrong_and_revoked_get_the_same_refusal() -> None:
    tokens = {"pi": "s3cret", "cam": "other"}
    refusals = []
    for device_id, header in (("ghost", "Bearer s3cret"), ("pi", "Bearer wrong"), ("pi", None)):
        with pytest.raises(Unauthorized) as exc:
            check_token(tokens, device_id, header)
        refusals.append((exc.value.status, exc.value.reason, exc.value.message))
    del tokens["cam"]  # revoked: its entry is removed from the table
    with pytest.raises(Unauthorized) as exc:
        check_token(tokens, "cam", "Bearer other")
    refusals.append((exc.value.status, exc.value.reason, exc.value.message))
    assert len(set(refusals)) == 1 and refusals[0][:2] == (401, "unauthorized")
    assert "s3cret" not in refusals[0][2]


def test_device_token_required_and_checked() -> None:
    tokens = {"pi": "s3cret"}
    check_token(tokens, "pi", "Bearer s3cret")
    check_token(tokens, "pi", "bearer s3cret")
    for header in (None, "", "Bearer", "Bearer wrong", "Basic s3cret", "s3cret", "Bearer s3cret-and-more"):
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


AUDIO = "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\n"
VIDEO = "m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\n"
DATA = "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:2\r\n"
HEAD = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"


def offer_with(*sections: str, bundle: str | None = None) -> bytes:
    group = f"a=group:BUNDLE {bundle}\r\n" if bundle is not None else ""
    return body({"device_id": "pi", "sdp": HEAD + group + "".join(sections)})


def test_an_offer_with_audio_video_and_data_bundled_is_fine() -> None:
    parse_connect_body(offer_with(AUDIO, VIDEO, DATA, bundle="0 1 2"))
    parse_connect_body(offer_with(AUDIO))  # one section needs no BUNDLE
    parse_connect_body(offer_with(VIDEO))  # a camera-only device (issue 22)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        # H6: one transport per un-bundled section: refused before any peer connection exists.
        (offer_with(AUDIO, AUDIO.replace("mid:0", "mid:1"), bundle="0 1"), "too_many_media"),
        (offer_with(AUDIO, VIDEO, VIDEO.replace("mid:1", "mid:3"), bundle="0 1 3"), "too_many_media"),
        (offer_with(AUDIO, *(AUDIO.replace("mid:0", f"mid:{i}") for i in range(1, 450))), "too_many_media"),
        (offer_with(AUDIO, "m=text 9 RTP/AVP 98\r\na=mid:1\r\n", bundle="0 1"), "too_many_media"),
        (offer_with(AUDIO, VIDEO), "no_bundle"),
        (offer_with(AUDIO, VIDEO, DATA, bundle="0 1"), "no_bundle"),  # the data section is outside it
        (body({"device_id": "pi", "sdp": HEAD + AUDIO + "a=x\r\n" * (MAX_SDP_BYTES // 5)}), "sdp_too_large"),
    ],
)
def test_offers_the_hub_will_not_negotiate(raw: bytes, reason: str) -> None:
    with pytest.raises(RequestRejected) as exc:
        parse_connect_body(raw)
    assert exc.value.reason == reason and exc.value.status == 400 and "\n" not in exc.value.message
