"""Uploads on naila/uploads/{session}/{kind}: stored and answered, or refused with a ChatReply error."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from ai_server.fakes import FakeLLM
from shared.mqtt import topics
from tests.ai_server.control.conftest import ControlFactory, Watch, b64, image_bytes, uid

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

LIMIT = 4096  # MEDIA_MAX_UPLOAD_SIZE for these tests: small files stand in for 50 MB ones


def upload(
    session_id: str,
    data: bytes | str,
    *,
    media_type: str = "image",
    fmt: str = "png",
    context: str = "",
    conversation_id: str | None = "conv-up",
) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "session_id": session_id,
        "media_type": media_type,
        "format": fmt,
        "filename": f"file.{fmt}",
        "context": context,
        "data": data if isinstance(data, str) else b64(data),
    }
    if conversation_id is not None:
        payload["conversation_id"] = conversation_id
    return payload


async def ask(watch: Watch, session_id: str, payload: dict[str, Any] | bytes, kind: str = "image") -> dict[str, Any]:
    reply_topic = topics.chat_reply(session_id)
    await watch.subscribe(reply_topic)
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    await watch.publish(f"naila/uploads/{session_id}/{kind}", raw)
    return await watch.next_json(reply_topic)


async def test_an_image_is_stored_and_acknowledged(control_server: ControlFactory, watch: Watch) -> None:
    _server, plane = await control_server(media={"media_max_upload_size": LIMIT})
    sid = uid("up-ok")
    png = image_bytes("PNG", (64, 48))
    reply = await ask(watch, sid, upload(sid, png))
    assert reply["error"] is None and reply["conversation_id"] == "conv-up" and reply["session_id"] == sid
    assert "image, png" in reply["text"] and "64x48" in reply["text"]
    [record] = [r for r in plane.media.store.recent(50, source="mqtt_upload") if r.session_id == sid]
    assert record.id in reply["text"]
    assert (record.media_type, record.format, record.size) == ("image", "png", len(png))
    assert record.sha256 == hashlib.sha256(png).hexdigest() and record.path.read_bytes() == png
    assert record.analysis == {"width": 64, "height": 48}


async def test_a_question_with_the_upload_is_answered_by_the_llm_with_a_description(
    control_server: ControlFactory, watch: Watch
) -> None:
    llm = FakeLLM("It is a small red picture.")
    # Without vision the prompt gets the upload's description; with it, the analysis
    # (tests/ai_server/media/test_upload_questions.py).
    _server, _plane = await control_server(llm=llm, media={"media_max_upload_size": LIMIT},
                                           settings={"vision_enabled": False})
    sid = uid("up-q")
    reply = await ask(
        watch,
        sid,
        upload(sid, image_bytes("JPEG", (40, 30)), fmt="jpg", context="What's in this picture?", conversation_id=None),
    )
    assert reply["error"] is None and reply["text"] == "It is a small red picture."
    assert reply["conversation_id"].startswith("chat-")  # none given: a new one to continue with
    messages = llm.requests[-1]
    assert messages[-1] == {"role": "user", "content": "What's in this picture?"}
    notes = [m["content"] for m in messages if m["role"] == "system"]
    assert any("image, jpeg" in n and "40x30" in n for n in notes), notes


BAD_UPLOADS = [
    # (name, topic kind, payload maker, reason in the error)
    ("oversized media", "image", lambda s: upload(s, b"\x89PNG\r\n\x1a\n" + bytes(LIMIT)), "oversized"),
    ("oversized payload", "image", lambda s: upload(s, "A" * (LIMIT * 2 + 70_000)), "oversized"),
    ("declared jpeg, is png", "image", lambda s: upload(s, image_bytes("PNG"), fmt="jpeg"), "content_mismatch"),
    ("declared png, is text", "image", lambda s: upload(s, b"hello, I am not an image"), "content_mismatch"),
    ("png magic, broken header", "image", lambda s: upload(s, b"\x89PNG\r\n\x1a\n" + b"junk" * 10), "corrupt"),
    ("not base64", "image", lambda s: upload(s, "this is not base64!!"), "malformed"),
    ("not JSON", "image", lambda s: b'{"session_id": ', "malformed"),
    (
        "format not whitelisted",
        "image",
        lambda s: upload(s, image_bytes("BMP", (8, 8)), fmt="bmp"),
        "unsupported_format",
    ),
    ("topic says audio, payload image", "audio", lambda s: upload(s, image_bytes("PNG")), "unauthorised"),
    ("unknown kind", "document", lambda s: upload(s, image_bytes("PNG")), "unknown_topic"),
    ("truncated base64", "image", lambda s: upload(s, b64(image_bytes("PNG"))[:-3]), "malformed"),
    ("base64 of a truncated jpeg", "image", lambda s: upload(s, image_bytes("JPEG", (64, 48))[:300], fmt="jpeg"),
     "corrupt"),
    ("another session's id in the payload", "image",
     lambda s: {**upload(s, image_bytes("PNG")), "session_id": "someone-else"}, "unauthorised"),
]


@pytest.mark.parametrize(("kind", "make", "reason"), [c[1:] for c in BAD_UPLOADS], ids=[c[0] for c in BAD_UPLOADS])
async def test_bad_uploads_are_refused_with_a_reason_and_nothing_is_stored(
    control_server: ControlFactory, watch: Watch, kind: str, make: Any, reason: str
) -> None:
    _server, plane = await control_server(media={"media_max_upload_size": LIMIT})
    sid = uid("up-bad")
    payload = make(sid)
    reply = await ask(watch, sid, payload, kind=kind)
    assert reply["text"] == "" and reply["error"].startswith(f"refused ({reason}): "), reply
    if isinstance(payload, dict):  # the error repeats the upload's conversation id so the client can match it
        assert reply["conversation_id"] == "conv-up"
    assert plane.metrics.rejected[reason] == 1
    assert plane.media.store.recent(10, source="mqtt_upload") == []
