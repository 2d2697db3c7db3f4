"""Visual questions (spec §8.11, §8.12): spot them in a transcript and give the LLM what a camera sees.

``is_visual_query`` applies the spec's keyword groups; :class:`VisualQuestions` picks the camera
(a place named in the question, the asker's own camera, the best camera in the asker's room), takes
its freshest analysed view from :class:`~ai_server.vision.view.Views` and renders the unified
visual context (``shared.mqtt.VisualContext``). What the view holds is then either said by code
(``answer_by="code"``: :mod:`ai_server.vision.answer`, no LLM) or given to the LLM as one short line;
either way it says how old the view is, or that no camera can see, so a stale view is never passed
off as live.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, Literal

from ai_server.media.analysis import Analysed, ImageAnalyser
from ai_server.pipeline import Seen
from ai_server.places import mentions, place_key
from ai_server.vision.answer import Sight, answer, brief, known_labels, parse
from ai_server.vision.view import CameraInfo, CameraView, Views
from shared.mqtt import VisualContext

log = logging.getLogger(__name__)

# Spec §8.12's groups. "Direct" words are about looking; the others are common in any question
# ("what is", "this", "room"), so alone they do not make a question visual: a descriptive word
# needs a place or a pointing word with it ("what is on the desk", "is there anyone at the door").
_DIRECT: Final = re.compile(
    r"\b(see|sees|seeing|seen|look|looks|looking|show|shows|camera|cameras|picture|pictures|"
    r"photo|photos|image|images|watch|watching)\b"
)
_ANALYSIS: Final = re.compile(r"\b(read|ocr|text|recogni[sz]e|identify)\b")
#: How long a spoken question about a live view waits for OCR before it is answered from the objects.
TEXT_BUDGET_S: Final = 0.6
_DESCRIPTIVE: Final = re.compile(
    r"\b(describe|what's|what is|what are|how many|is there|are there|who is|who's|who are|"
    r"anyone|anybody|someone|somebody)\b"
)
_SPATIAL: Final = re.compile(r"\b(here|there|this|that|these|those)\b")
_LOCATION: Final = re.compile(
    r"\b(desk|room|door|doorstep|window|outside|screen|porch|garden|yard|backyard|driveway|garage|gate|"
    r"table|kitchen|hall|hallway|bedroom|office|nursery|patio|balcony|entrance|street)\b"
)


def _normalise(text: str) -> str:
    return re.sub(r"\s+", " ", text.lower().replace("\u2019", "'")).strip()


#: The prompt note when no camera can see what was asked (kept on Look/Selected for the logs and tests).
NO_CAMERA: Final = "No camera can see this for you right now: say so plainly, or ask the user to send a photo."
#: Said as the reply (no LLM) when no camera can see what was asked: a small model told this in
#: the prompt still made up a scene.
NO_CAMERA_ANSWER: Final = "I can't see that right now: no camera shows it. You could send me a photo of it."


def visual_strength(text: str, places: Iterable[str] = ()) -> int:
    """0: not visual; 1: visual by description ("is there anyone at the door"); 2: about looking.

    ``places`` adds the rooms and zones the cameras know ("how many people are in the studio").
    """
    t = _normalise(text)
    if _DIRECT.search(t):
        return 2
    if _ANALYSIS.search(t):
        return 1
    if _DESCRIPTIVE.search(t):
        spoken = place_key(t)
        named = any(mentions(spoken, p) for p in places)
        if named or _SPATIAL.search(t) or _LOCATION.search(t):
            return 1
    return 0


def is_visual_query(text: str, places: Iterable[str] = ()) -> bool:
    return visual_strength(text, places) > 0


#: Objects listed in the prompt's JSON, most confident first. Each costs ~45 tokens of prefill
#: (330 tokens for five took 1.4 s on 2 cores with the embedded model); the description still
#: counts them all, and the stored analysis keeps every one.
PROMPT_OBJECTS: Final = 8


def context_prompt(head: str, context: VisualContext) -> str:
    """The spec §8.11 JSON on one line, then one plain sentence (``head``) nearest the question.

    Order measured with the embedded SmolLM2-135M: with the sentence last it repeated the counts
    ("The hall camera sees 4 people and a bus"); with the JSON last it made up a scene.
    """
    objects = context.analysis.objects
    if len(objects) > PROMPT_OBJECTS:
        top = sorted(objects, key=lambda o: o.confidence, reverse=True)[:PROMPT_OBJECTS]
        context = context.model_copy(update={"analysis": context.analysis.model_copy(update={"objects": top})})
    return f"Visual context: {context.model_dump_json(exclude_none=True)}\n{head}"


AnswerBy = Literal["code", "llm"]


def answer_by(setting: str, llm_backend: str) -> AnswerBy:
    """VISION_ANSWER_BY resolved: ``auto`` is code with the embedded model, the LLM with a real one."""
    if setting == "auto":
        return "llm" if llm_backend == "openai" else "code"
    return "code" if setting == "code" else "llm"


@dataclass(frozen=True, slots=True)
class Look:
    """What one visual question found: the context (None: no camera), the prompt text, and with
    ``answer_by="code"`` the answer itself (said without the LLM)."""

    context: VisualContext | None
    camera: CameraInfo | None
    age_s: float
    stale: bool
    why: str
    prompt: str
    answer: str = ""
    sight: Sight | None = None


class VisualQuestions:
    """Implements the pipeline's ``Looker``: visual questions get the visual context in the prompt."""

    def __init__(
        self, views: Views, stale_after_s: float = 30.0, analyse_timeout_s: float = 3.0,
        analyser: ImageAnalyser | None = None, answer_by: AnswerBy = "llm",
        known: frozenset[str] | None = None,
    ) -> None:
        self.analyser = analyser or ImageAnalyser(None, None)
        self.views = views
        self.stale_after_s = stale_after_s
        self.analyse_timeout_s = analyse_timeout_s
        self.answer_by = answer_by
        self.known = known  # what the detector recognises; None: asked of the analyser's detector
        # The last analysis per camera: a second question about the same frame costs no decode/OCR again.
        self._last: dict[str, tuple[float, bool, Analysed]] = {}

    def choose(self, device_id: str, room: str, question: str) -> tuple[CameraInfo | None, str]:
        """The camera to look through, and why (logged: spec §8.10 wants each decision explained)."""
        cams = [c for c in self.views.cameras() if self.views.latest(c.device_id) is not None]
        if not cams:
            return None, "no camera has sent a frame"
        asked = place_key(question)
        # A place named in the question wins: "who is at the front door" from the kitchen speaker.
        named = [c for c in cams
                 if mentions(asked, c.zone) or mentions(asked, c.room)]
        if named:
            best = max(named, key=lambda c: (c.online, len(place_key(c.zone)), c.priority))
            return best, f"the question names {best.zone or best.room}"
        own = next((c for c in cams if c.device_id == device_id), None)
        if own is not None:
            return own, "the asking device's own camera"
        here = place_key(room)
        if here:
            same = [c for c in cams if here in (place_key(c.room), place_key(c.zone))]
            if same:
                best = max(same, key=lambda c: (c.online, c.priority))
                return best, f"the best camera in the asker's room ({room})"
        return None, f"no camera in {room or 'the asking device'}'s room and none named"

    async def look(self, device_id: str, room: str, question: str) -> Seen:
        """The pipeline's ``Looker``: the view for the prompt; with no camera, the answer itself."""
        found = await self.find(device_id, room, question)
        if found is None:
            return Seen()
        if found.camera is None:
            return Seen(answer=NO_CAMERA_ANSWER)
        if found.answer:
            return Seen(answer=found.answer)
        return Seen(prompt=found.prompt)

    async def find(self, device_id: str, room: str, question: str) -> Look | None:
        """None when the question is not visual; otherwise what to tell the LLM."""
        strength = visual_strength(question, [p for c in self.views.cameras() for p in (c.room, c.zone)])
        if strength == 0:
            return None
        camera, why = self.choose(device_id, room, question)
        log.info("visual question from %s: %s (%s)", device_id, camera.device_id if camera else "no camera", why)
        if camera is None:
            if strength < 2:
                return None  # "read me the news": with no camera, a keyword alone must not derail the answer
            return Look(None, None, 0.0, False, why, NO_CAMERA)
        return await self.look_through(camera, why, question)

    async def look_through(self, camera: CameraInfo, why: str, question: str) -> Look:
        """The camera's freshest frame, analysed (ai_server.media.analysis: the one context builder)."""
        view = await self._analysed(camera.device_id)
        where = self._name(camera)
        if view is None:
            return Look(None, camera, 0.0, False, why, f"The {where} camera has no picture yet: say so plainly.",
                        f"The {where} camera has no picture yet." if self.answer_by == "code" else "")
        age = max(0.0, self.views.now() - view.seen_at)
        stale = age > self.stale_after_s or not camera.online
        analysed = await self._analyse(view, question)
        context = analysed.context
        if view.detections is not None:  # the pipeline's: each object's zone too
            labels: tuple[str, ...] | None = tuple(d.label for d in view.detections)
            zones = tuple(d.zone for d in view.detections)
        else:
            unanalysed = analysed.model_error is not None or self.analyser.detector is None
            labels, zones = None if unanalysed else tuple(o.label for o in context.analysis.objects), ()
        sight = Sight(where, age, labels, zones, tuple(context.analysis.text_detected), self.vocabulary(),
                      camera.online, stale)
        said = answer(question, sight) if self.answer_by == "code" else ""
        return Look(context, camera, age, stale, why, brief(sight), said, sight)

    def vocabulary(self) -> frozenset[str] | None:
        """The labels the detector recognises (None: unknown): a question about others gets "I can't tell"."""
        if self.known is not None:
            return self.known
        names = getattr(self.analyser.detector, "names", None)  # YoloDetector: its classes, once loaded
        return known_labels(names.values()) if isinstance(names, dict) else None

    async def _analysed(self, device_id: str) -> CameraView | None:
        try:
            async with asyncio.timeout(self.analyse_timeout_s):  # not wait_for: see shared/aio.py
                return await self.views.analysed(device_id)
        except (TimeoutError, RuntimeError, OSError) as exc:
            # The detector is busy or failed: the picture without objects is still worth giving.
            log.warning("visual question: analysing %s failed (%s); using the unanalysed view", device_id, exc)
            return self.views.latest(device_id)

    @staticmethod
    def _name(camera: CameraInfo) -> str:
        return (camera.zone or camera.room or camera.device_id).replace("_", " ")

    async def context(self, view: CameraView, question: str) -> VisualContext:
        """The spec §8.11 shape for a frame grabbed from a live stream (spec §8.4), OCR included.

        The pipeline's detections are reused (YOLO does not run twice on one frame); a frame it
        never analysed goes through the analyser's own detector, if it has one.
        """
        return (await self._analyse(view, question)).context

    async def _analyse(self, view: CameraView, question: str) -> Analysed:
        # A count or yes/no question answered by code needs no text: OCR (~0.3-0.5 s on 2 cores) is skipped.
        read = self.answer_by != "code" or parse(question, Sight("", 0.0)).kind not in ("count", "presence")
        last = self._last.get(view.device_id)
        if last is not None and last[0] == view.seen_at and (last[1] or not read) and view.detections is not None:
            return last[2]
        # A spoken "what do you see" waits at most TEXT_BUDGET_S for OCR (the first audio goal is
        # 1.5 s after the end of speech); a question about text waits for the read.
        budget = None if _ANALYSIS.search(question.lower()) else TEXT_BUDGET_S
        analysed = await self.analyser.analyse(
            view.jpeg, source="webrtc_stream", device_id=view.device_id, question=question,
            timestamp=view.wall_time, detections=view.detections, text_budget_s=budget, objects_only=not read,
        )
        self._last[view.device_id] = (view.seen_at, read, analysed)
        return analysed
