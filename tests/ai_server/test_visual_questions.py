"""Visual questions (ai_server/vision/ask.py): keyword detection, camera choice, staleness, the
spec §8.11 shape, and the pipeline putting the view into the prompt.

The views are a scripted ``Views`` on a controllable clock: this file tests the question side;
tests/ai_server/vision/ drives the real detector behind the real pipeline.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime

import cv2
import numpy as np
import pytest

from ai_server.conversation import Conversations
from ai_server.fakes import FakeLLM, FakeSTT, FakeTTS
from ai_server.pipeline import Pipeline, Seen, Turn
from ai_server.vision.ask import (
    NO_CAMERA_ANSWER,
    PROMPT_OBJECTS,
    VisualQuestions,
    context_prompt,
    is_visual_query,
    visual_strength,
)
from ai_server.vision.scene import describe, lighting
from ai_server.vision.view import CameraInfo, CameraView, Detection
from shared.mqtt import VisualContext
from shared.mqtt.models import DetectedObject, VisualAnalysis, VisualMedia, VisualSource

pytestmark = pytest.mark.unit

T0 = datetime(2026, 11, 23, 15, 0, tzinfo=UTC)


def jpeg(level: int, w: int = 320, h: int = 240) -> bytes:
    ok, buf = cv2.imencode(".jpg", np.full((h, w, 3), level, np.uint8))
    assert ok
    return bytes(buf)


@dataclass
class ScriptedViews:
    """A ``Views`` with hand-set cameras and frames; ``analysed`` fills in scripted detections."""

    clock: float = 1000.0
    infos: list[CameraInfo] = field(default_factory=list)
    views: dict[str, CameraView] = field(default_factory=dict)
    pending: dict[str, tuple[Detection, ...]] = field(default_factory=dict)
    analyse_calls: int = 0
    fail: bool = False

    def now(self) -> float:
        return self.clock

    def cameras(self) -> list[CameraInfo]:
        return sorted(self.infos, key=lambda c: (-c.priority, not c.online))

    def latest(self, device_id: str) -> CameraView | None:
        return self.views.get(device_id)

    async def analysed(self, device_id: str) -> CameraView | None:
        self.analyse_calls += 1
        if self.fail:
            raise RuntimeError("detector crashed")
        view = self.views.get(device_id)
        if view is not None and view.detections is None:
            view = CameraView(view.device_id, view.jpeg, view.width, view.height, view.seen_at, view.wall_time,
                              self.pending.get(device_id, ()))
            self.views[device_id] = view
        return view

    def add(self, device_id: str, room: str, zone: str = "", *, priority: int = 0, online: bool = True,
            seen_at: float | None = None, detections: tuple[Detection, ...] | None = (), level: int = 160) -> None:
        self.infos.append(CameraInfo(device_id, room, zone, priority, online))
        self.views[device_id] = CameraView(device_id, jpeg(level), 320, 240,
                                           self.clock if seen_at is None else seen_at, T0, detections)


PERSON = Detection("person", 0.91, (10.0, 20.0, 50.0, 120.0), track_id=3, zone="porch")
CAR = Detection("car", 0.8, (150.0, 100.0, 120.0, 60.0), track_id=4, zone="driveway")


@pytest.mark.parametrize("text", [
    "What do you see?", "who is at the door", "Who's at the front door?", "Is there anyone in the garden?",
    "describe the room", "how many people are in the kitchen", "Can you look outside?",
    "Show me the driveway camera", "what's on my desk", "read the text on this", "what is that",
    "Is somebody at the window?", "take a picture of the porch",
])
def test_spec_keywords_make_a_question_visual(text: str) -> None:
    assert is_visual_query(text)


@pytest.mark.parametrize("text", [
    "What is the weather like today?", "Tell me a joke", "what's the capital of France",
    "How many days are in a week?", "set a timer for ten minutes", "what is two plus two",
])
def test_everyday_questions_are_not_visual(text: str) -> None:
    assert not is_visual_query(text)


def test_the_cameras_own_places_count_as_locations() -> None:
    assert not is_visual_query("how many people are in the studio")
    assert is_visual_query("how many people are in the studio", ["studio", "front_door"])
    assert is_visual_query("is anyone by the front door", ["front_door"])


def test_looking_words_are_stronger_than_descriptive_ones() -> None:
    assert visual_strength("what do you see") == 2
    assert visual_strength("is there anyone at the door") == 1
    assert visual_strength("read me the news") == 1


def test_describe_counts_labels_in_plain_words() -> None:
    view = CameraView("c", b"", 1, 1, 0.0, T0, (PERSON, PERSON, CAR))
    assert describe([d.label for d in view.detections or ()]) == "2 people and 1 car in view."
    assert describe([]) == "No objects detected."
    assert describe(None) == "Not analysed."
    assert describe(["person"], ["NAILA"]) == '1 person in view. Text reads: "NAILA".'


def test_lighting_from_the_frame_brightness() -> None:
    assert lighting(jpeg(10)) == "dark"
    assert lighting(jpeg(70)) == "dim"
    assert lighting(jpeg(200)) == "bright"
    assert lighting(b"not a jpeg") is None


def test_a_place_named_in_the_question_wins_over_the_askers_room() -> None:
    v = ScriptedViews()
    v.add("kitchen-cam", "kitchen", priority=1)
    v.add("door-cam", "hall", "front_door", priority=5)
    q = VisualQuestions(v)
    cam, why = q.choose("kitchen-pi", "kitchen", "who is at the front door?")
    assert cam is not None and cam.device_id == "door-cam" and "front_door" in why
    cam, why = q.choose("kitchen-pi", "kitchen", "what do you see?")
    assert cam is not None and cam.device_id == "kitchen-cam" and "room" in why


def test_the_askers_own_camera_comes_before_other_cameras_in_its_room() -> None:
    v = ScriptedViews()
    v.add("hall-cam", "hall", priority=9)
    v.add("hall-pi", "hall", priority=0)
    cam, why = VisualQuestions(v).choose("hall-pi", "hall", "what do you see")
    assert cam is not None and cam.device_id == "hall-pi" and "own" in why


def test_within_a_room_an_online_camera_then_priority_decides() -> None:
    v = ScriptedViews()
    v.add("yard-old", "yard", priority=9, online=False)
    v.add("yard-low", "yard", priority=1)
    v.add("yard-high", "yard", priority=5)
    cam, _ = VisualQuestions(v).choose("speaker", "yard", "what do you see")
    assert cam is not None and cam.device_id == "yard-high"


def test_no_camera_for_the_room_is_said_and_weak_questions_are_left_alone() -> None:
    v = ScriptedViews()
    v.add("garage-cam", "garage")
    q = VisualQuestions(v)
    look = asyncio.run(q.find("bed-pi", "bedroom", "what do you see"))
    assert look is not None and look.context is None and "No camera" in look.prompt
    assert asyncio.run(q.find("bed-pi", "bedroom", "read me the news")) is None
    assert asyncio.run(q.find("bed-pi", "bedroom", "tell me a joke")) is None


def test_a_fresh_view_gives_the_spec_context_and_one_short_prompt_line() -> None:
    v = ScriptedViews()
    v.add("door-cam", "hall", "front_door", detections=None)  # a refresh frame: not analysed yet
    v.pending["door-cam"] = (PERSON,)
    v.clock += 4
    look = asyncio.run(VisualQuestions(v).find("door-cam", "hall", "Who is at the door?"))
    assert look is not None and look.context is not None and not look.stale
    assert v.analyse_calls == 1 and round(look.age_s) == 4
    # The LLM gets the view in one short line (issue 19), not the whole JSON ...
    assert look.prompt.startswith("Camera view, the front door camera, just now: a person.")
    assert "Visual context" not in look.prompt and len(look.prompt) < 200
    # ... and the unified visual context (spec §8.11) is still built, exactly, for the logs and the store.
    raw = look.context.model_dump_json(exclude_none=True)
    payload = json.loads(raw)
    ctx = VisualContext.model_validate_json(raw)
    assert payload["source"] == {"type": "webrtc_stream", "device_id": "door-cam"}
    assert payload["media"]["format"] == "jpeg" and payload["media"]["width"] == 320
    assert ctx.analysis.objects[0].label == "person" and list(ctx.analysis.objects[0].bbox) == [10, 20, 50, 120]
    assert ctx.analysis.lighting == "bright" and ctx.user_context == "Who is at the door?"
    assert set(payload) == {"source", "media", "analysis", "user_context"}


def test_a_stale_or_offline_view_is_said_to_be_old() -> None:
    v = ScriptedViews()
    v.add("yard-cam", "yard", seen_at=v.clock - 600)
    look = asyncio.run(VisualQuestions(v, stale_after_s=30).find("x", "yard", "what do you see in the yard"))
    assert look is not None and look.stale and "10 minutes ago" in look.prompt and "out of date" in look.prompt
    v2 = ScriptedViews()
    v2.add("yard-cam", "yard", online=False)
    look = asyncio.run(VisualQuestions(v2).find("x", "yard", "what do you see"))
    assert look is not None and look.stale and "offline" in look.prompt


def test_a_failing_detector_still_gives_the_picture() -> None:
    v = ScriptedViews(fail=True)
    v.add("cam", "hall", detections=None)
    look = asyncio.run(VisualQuestions(v).find("cam", "hall", "what do you see"))
    assert look is not None and look.context is not None and "could not be analysed" in look.prompt


class _Said:
    speculative_runs = 0
    reused = False

    def __init__(self, text: str) -> None:
        self.text = text

    async def transcript(self) -> str:
        return self.text


def _turn(pipeline: Pipeline, device: str, room: str, text: str) -> FakeLLM:
    turn = Turn(1, device, "c1", 0.0, room=room)
    asyncio.run(pipeline.run_turn(turn, _Said(text)))  # type: ignore[arg-type]
    assert isinstance(pipeline.llm, FakeLLM)
    return pipeline.llm


def test_the_pipeline_puts_the_view_before_a_visual_question_only() -> None:
    v = ScriptedViews()
    v.add("door-cam", "hall", "front_door", detections=(PERSON,))
    p = Pipeline(FakeSTT(), FakeLLM("Someone is there."), FakeTTS(), Conversations("S", 4))
    p.looker = VisualQuestions(v)
    llm = _turn(p, "hall-pi", "hall", "who is at the front door")
    prompt = llm.requests[-1]
    assert prompt[-1] == {"role": "user", "content": "Who is at the front door?"}
    assert prompt[-2]["role"] == "system" and "front door camera, just now: a person." in prompt[-2]["content"]
    assert p.metrics.counters.get("visual_questions") == 1
    llm = _turn(p, "hall-pi", "hall", "tell me a joke")
    assert all("Visual context" not in m["content"] for m in llm.requests[-1])


def test_a_broken_looker_costs_the_view_not_the_answer() -> None:
    class Broken:
        async def look(self, device_id: str, room: str, question: str) -> Seen:
            raise ValueError("bug")

    p = Pipeline(FakeSTT(), FakeLLM("Fine."), FakeTTS(), Conversations("S", 4))
    p.looker = Broken()
    llm = _turn(p, "d", "hall", "what do you see")
    assert llm.requests and p.metrics.counters.get("visual_context_errors") == 1


def test_with_no_camera_the_answer_is_said_without_the_llm() -> None:
    v = ScriptedViews()
    v.add("garage-cam", "garage")
    p = Pipeline(FakeSTT(), FakeLLM("A made-up scene."), FakeTTS(), Conversations("S", 4))
    p.looker = VisualQuestions(v)
    turn = Turn(1, "bed-pi", "c1", 0.0, room="bedroom")
    asyncio.run(p.run_turn(turn, _Said("what do you see?")))  # type: ignore[arg-type]
    assert isinstance(p.llm, FakeLLM) and p.llm.requests == []
    assert turn.raw_reply == NO_CAMERA_ANSWER and p.metrics.counters.get("looked_up_answers") == 1
    assert asyncio.run(VisualQuestions(v).look("bed-pi", "bedroom", "tell me a joke")) == Seen()


def test_the_prompt_counts_a_crowd_in_a_few_words_and_the_context_keeps_every_object() -> None:
    crowd = tuple(Detection("person", 0.5 + i / 100, (float(i), 0.0, 10.0, 20.0)) for i in range(20))
    v = ScriptedViews()
    v.add("hall-cam", "hall", detections=crowd)
    look = asyncio.run(VisualQuestions(v).find("hall-cam", "hall", "how many people are in the hall?"))
    assert look is not None and look.context is not None
    assert "hall camera, just now: 20 people." in look.prompt and len(look.prompt) < 200
    assert len(look.context.analysis.objects) == 20 and "20 people in view" in look.context.analysis.description


def test_the_json_prompt_for_an_attached_image_lists_the_most_confident_objects() -> None:
    crowd = [DetectedObject(label="person", confidence=0.5 + i / 100, bbox=(float(i), 0.0, 10.0, 20.0))
             for i in range(20)]
    ctx = VisualContext(source=VisualSource(type="http_upload", session_id="s"),
                        media=VisualMedia(type="image", format="jpeg", width=320, height=240),
                        analysis=VisualAnalysis(description="20 people in view.", objects=crowd))
    raw, sentence = context_prompt("The user attached an image.", ctx).split("Visual context: ", 1)[1].split("\n", 1)
    shown = VisualContext.model_validate_json(raw).analysis.objects
    assert len(shown) == PROMPT_OBJECTS and min(o.confidence for o in shown) == 0.62
    assert sentence == "The user attached an image."
