"""An image upload with a question (spec §8.9) on a real mosquitto: analysed by the real models, the
visual context in the LLM's prompt, the answer on the session's chat reply topic; bad images refused."""

from __future__ import annotations

import json
from typing import Any

import pytest

from ai_server.fakes import FakeLLM
from ai_server.media.selection import SourceSelection
from ai_server.vision.detector import YoloDetector
from shared.mqtt import VisualContext, topics
from tests.ai_server.control.conftest import ControlFactory, Watch, b64, uid
from tests.ai_server.media.conftest import bus_jpeg, text_png

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

MARK = "Visual context: "


def upload(session_id: str, data: bytes, fmt: str, context: str) -> dict[str, Any]:
    return {"session_id": session_id, "media_type": "image", "format": fmt, "filename": f"photo.{fmt}",
            "context": context, "conversation_id": "conv-img", "data": b64(data)}


async def ask(watch: Watch, session_id: str, payload: dict[str, Any]) -> dict[str, Any]:
    reply_topic = topics.chat_reply(session_id)
    await watch.subscribe(reply_topic)
    await watch.publish(f"naila/uploads/{session_id}/image", payload)
    return await watch.next_json(reply_topic, within_s=60)


def prompted_context(llm: FakeLLM) -> VisualContext:
    notes = [str(m["content"]) for m in llm.requests[-1] if m["role"] == "system" and MARK in str(m["content"])]
    assert len(notes) == 1, llm.requests[-1]
    return VisualContext.model_validate_json(notes[0].split(MARK, 1)[1].split("\n", 1)[0])


async def test_how_many_people_reaches_the_llm_with_the_people_in_the_photo(
    control_server: ControlFactory, watch: Watch, yolo: YoloDetector
) -> None:
    llm = FakeLLM("I count four people.")
    server, plane = await control_server(llm=llm, detector=yolo)
    # app.py wires both: uploads are analysed; the voice looker runs spec §8.10's six steps.
    assert isinstance(server.pipeline.looker, SourceSelection) and plane.uploads.selection is not None
    assert plane.uploads.analyser is not None
    sid = uid("up-bus")
    reply = await ask(watch, sid, upload(sid, bus_jpeg(), "jpeg", "how many people are in this picture?"))
    assert reply["error"] is None and reply["text"] == "I count four people." and reply["conversation_id"] == "conv-img"
    messages = llm.requests[-1]
    assert messages[-1] == {"role": "user", "content": "How many people are in this picture?"}
    ctx = prompted_context(llm)
    assert (ctx.source.type, ctx.source.session_id) == ("mqtt_upload", sid)
    assert (ctx.media.width, ctx.media.height) == (810, 1080)
    assert sum(o.label == "person" for o in ctx.analysis.objects) >= 3
    assert ctx.user_context == "how many people are in this picture?"
    [record] = [r for r in plane.media.store.recent(50, source="mqtt_upload") if r.session_id == sid]
    assert record.analysis is not None and record.analysis["width"] == 810
    assert VisualContext.model_validate_json(json.dumps(record.analysis["visual_context"])) == ctx
    assert plane.metrics.events["chat_answered"] == 1 and plane.metrics.events["upload_stored"] == 1


async def test_text_in_an_uploaded_image_is_read_into_the_context(
    control_server: ControlFactory, watch: Watch, yolo: YoloDetector
) -> None:
    llm = FakeLLM("It says NAILA, meeting at 3pm.")
    _server, _plane = await control_server(llm=llm, detector=yolo)
    sid = uid("up-text")
    reply = await ask(watch, sid, upload(sid, text_png(), "png", "what does this note say?"))
    assert reply["error"] is None and reply["text"] == "It says NAILA, meeting at 3pm."
    ctx = prompted_context(llm)
    assert "NAILA" in ctx.analysis.text_detected and "Meeting at 3pm" in ctx.analysis.text_detected


@pytest.mark.parametrize(("name", "make", "reason"), [
    ("truncated jpeg", lambda: (bus_jpeg()[: len(bus_jpeg()) // 2], "jpeg"), "corrupt"),
    ("declared png, jpeg bytes", lambda: (bus_jpeg(), "png"), "content_mismatch"),
], ids=["truncated jpeg", "declared png, jpeg bytes"])
async def test_a_bad_image_with_a_question_is_refused_counted_and_not_stored(
    control_server: ControlFactory, watch: Watch, yolo: YoloDetector, name: str, make: Any, reason: str
) -> None:
    llm = FakeLLM()
    _server, plane = await control_server(llm=llm, detector=yolo)
    sid = uid("up-badimg")
    data, fmt = make()
    reply = await ask(watch, sid, upload(sid, data, fmt, "how many people are in this picture?"))
    assert reply["text"] == "" and reply["error"].startswith(f"refused ({reason}): "), reply
    assert reply["conversation_id"] == "conv-img"
    assert plane.metrics.rejected[reason] == 1
    assert plane.media.store.recent(10, source="mqtt_upload") == []
    assert llm.requests == []  # nothing reached the model
