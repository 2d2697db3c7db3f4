"""Media source selection (spec §8.10): the six steps, in order, each decision logged with why.

1. media attached to the current message (an upload with a question) → that;
2. a historical question ("what did the front door camera see at 3am") → the stored events;
3. the live stream of the camera the question is about (named in it, or the asker's own) → a frame;
4. the asking device has a camera (registry capability ``snapshot`` / ``video``) → an MQTT snapshot;
5. the best camera in the asker's zone/room (or the place named): an online live stream first
   (priority), else a snapshot from an online snapshot-capable device there;
6. nothing → say so, or ask for a photo.

:meth:`SourceSelection.select` returns the chosen step with the context and the prompt text, and
the decisions considered (also logged, one info line per step), so tests and logs agree.
Implements the voice pipeline's ``Looker`` (:meth:`look`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from ai_server.media.analysis import Analysed
from ai_server.media.errors import SourceFailed
from ai_server.media.sources import MediaSources
from ai_server.pipeline import Seen
from ai_server.places import mentions, place_key
from ai_server.vision.answer import Sight, answer, brief
from ai_server.vision.ask import NO_CAMERA, NO_CAMERA_ANSWER, VisualQuestions, context_prompt, visual_strength
from ai_server.vision.view import CameraInfo
from shared.mqtt import VisualContext

if TYPE_CHECKING:
    from ai_server.control.registry import DeviceRecord, DeviceRegistry
    from ai_server.media.history import HistoryQuestions

log = logging.getLogger(__name__)

CAMERA_CAPABILITIES: Final = frozenset({"snapshot", "video"})
STEP_NAMES: Final = {1: "attached", 2: "history", 3: "live_stream", 4: "own_snapshot", 5: "zone_camera", 6: "none"}
_Decide = Callable[[int, str], None]


@dataclass(frozen=True, slots=True)
class Selected:
    step: int  # 1..6, spec §8.10
    why: str
    prompt: str  # for the LLM; "" leaves the turn alone
    context: VisualContext | None = None
    device_id: str | None = None  # the camera looked through (steps 3-5)
    decisions: list[str] = field(default_factory=list)  # one line per step considered
    answer: str = ""  # said as the reply without the LLM (steps 2 and 6: see ai_server.pipeline.Seen)

    @property
    def name(self) -> str:
        return STEP_NAMES[self.step]


def _named(place: str | None, question: str) -> bool:
    return mentions(place_key(question), place)


class SourceSelection:
    """See the module doc. Any part may be absent (no vision, no control plane): its steps are skipped."""

    def __init__(
        self,
        sources: MediaSources,
        *,
        history: HistoryQuestions | None = None,
        questions: VisualQuestions | None = None,
        registry: DeviceRegistry | None = None,
        snapshot_timeout_s: float | None = None,
    ) -> None:
        self.sources = sources
        self.history = history
        self.questions = questions
        self.registry = registry
        self.snapshot_timeout_s = snapshot_timeout_s

    async def look(self, device_id: str, room: str, question: str) -> Seen:
        """The pipeline's ``Looker``."""
        chosen = await self.select(device_id, room, question)
        return Seen() if chosen is None else Seen(prompt="" if chosen.answer else chosen.prompt, answer=chosen.answer)

    async def select(
        self, device_id: str, room: str, question: str, attached: Analysed | None = None,
        attached_note: str = "The user attached an image",
    ) -> Selected | None:
        """None: no attachment, not historical and not a visual question (the turn is left alone)."""
        decisions: list[str] = []

        def decide(step: int, text: str) -> None:
            line = f"step {step} ({STEP_NAMES[step]}): {text}"
            decisions.append(line)
            log.info("source selection for %s: %s", device_id or "?", line)

        # 1. attached media
        if attached is not None:
            decide(1, "the message carries media: using it")
            ctx = attached.context
            head = f"{attached_note}. What vision found in it: {ctx.analysis.description}"
            return Selected(1, "attached media", context_prompt(head, ctx),
                            ctx, ctx.source.device_id, decisions)
        decide(1, "no media attached")
        # 2. historical intent
        if self.history is not None:
            found = await self.history.look(question, device_id)
            if found is not None:
                decide(2, f"historical question ({found.kind}): {len(found.events)} events, "
                          f"{len(found.exchanges)} exchanges, places {[p.name for p in found.places] or 'any'}")
                return Selected(2, "historical question", found.prompt, None, None, decisions, answer=found.text)
            decide(2, "not a historical question")
        else:
            decide(2, "no event history")
        strength = visual_strength(question, self._places())
        if strength == 0:
            log.debug("source selection for %s: not a visual question, steps 3-6 skipped", device_id)
            return None
        # 3. the live stream of the camera asked about (named) or the asker's own
        camera, camera_why = self._live_camera(device_id, room, question)
        zone_camera: CameraInfo | None = None
        if camera is not None and camera.online and (camera.device_id == device_id or
                                                     _named(camera.zone, question) or _named(camera.room, question)):
            chosen = await self._live(3, camera, camera_why, question, decide, decisions)
            if chosen is not None:
                return chosen
        else:
            if camera is not None and camera.online:
                zone_camera = camera  # the best camera of the asker's room: step 5's first choice
            decide(3, "no live stream from the asking device or a camera the question names"
                      + (f" ({camera_why}; {'online' if camera.online else 'offline'})" if camera else ""))
        # 4. a snapshot from the asking device
        own = None if self.registry is None else self.registry.get(device_id)
        if own is not None and own.online and CAMERA_CAPABILITIES & set(own.capabilities):
            chosen = await self._snapshot(4, own.device_id, "the asking device has a camera", question, decide,
                                          decisions)
            if chosen is not None:
                return chosen
        else:
            decide(4, "the asking device is " + ("unknown to the registry" if own is None else
                                                  "offline" if not own.online else "without a camera"))
        # 5. the best camera in the same zone / room
        if zone_camera is not None:
            chosen = await self._live(5, zone_camera, camera_why, question, decide, decisions)
            if chosen is not None:
                return chosen
        for other in self._zone_devices(device_id, own, room, question):
            chosen = await self._snapshot(5, other.device_id, f"online camera in {other.zone or other.room}",
                                          question, decide, decisions)
            if chosen is not None:
                return chosen
        if zone_camera is None:
            decide(5, f"no online camera in {room or 'the asking device room'} or a place the question names")
        # 6. none
        if strength < 2:
            decide(6, "no camera, and the question is only weakly visual: answered without")
            return Selected(6, "no visual source", "", None, None, decisions)
        decide(6, "no visual source: the answer says so")
        return Selected(6, "no visual source", NO_CAMERA, None, None, decisions, answer=NO_CAMERA_ANSWER)

    def _places(self) -> list[str]:
        places: list[str] = []
        if self.questions is not None:
            places += [p for c in self.questions.views.cameras() for p in (c.room, c.zone)]
        if self.registry is not None:
            places += [p for d in self.registry.devices() for p in (d.room or "", d.zone or "")]
        return places

    def _live_camera(self, device_id: str, room: str, question: str) -> tuple[CameraInfo | None, str]:
        if self.questions is None:
            return None, "no live streams"
        return self.questions.choose(device_id, room, question)

    async def _live(self, step: int, camera: CameraInfo, why: str, question: str, decide: _Decide,
                    decisions: list[str]) -> Selected | None:
        assert self.questions is not None
        look = await self.questions.look_through(camera, why, question)
        if look.context is None:
            decide(step, f"{camera.device_id}'s stream has no picture yet ({why})")
            return None
        decide(step, f"live frame from {camera.device_id} ({why})")
        return Selected(step, why, look.prompt, look.context, camera.device_id, decisions, answer=look.answer)

    async def _snapshot(self, step: int, device_id: str, why: str, question: str, decide: _Decide,
                        decisions: list[str]) -> Selected | None:
        try:
            analysed = await self.sources.snapshot(device_id, question, self.snapshot_timeout_s)
        except SourceFailed as exc:
            decide(step, f"snapshot from {device_id} failed: {exc.reason} ({why})")
            return None
        decide(step, f"snapshot from {device_id} ({why})")
        # Said like a live view (ai_server.vision.answer): a snapshot just taken is "just now", no zones.
        analysis = analysed.context.analysis
        labels = None if analysed.model_error is not None else tuple(o.label for o in analysis.objects)
        known = None if self.questions is None else self.questions.vocabulary()
        sight = Sight(device_id.replace("_", " "), 0.0, labels, (), tuple(analysis.text_detected), known)
        by_code = self.questions is not None and self.questions.answer_by == "code"
        return Selected(step, why, brief(sight), analysed.context, device_id, decisions,
                        answer=answer(question, sight) if by_code else "")

    def _zone_devices(self, device_id: str, own: DeviceRecord | None, room: str,
                      question: str) -> list[DeviceRecord]:
        """Online snapshot-capable devices in the asker's zone, then room, or a place the question names."""
        if self.registry is None:
            return []
        zone = own.zone if own is not None else None
        here = (own.room if own is not None else None) or room

        def rank(d: DeviceRecord) -> int:
            if _named(d.zone, question) or _named(d.room, question):
                return 0
            if zone and d.zone == zone:
                return 1
            return 2 if here and place_key(d.room) == place_key(here) else 3

        found = [d for d in self.registry.devices()
                 if d.device_id != device_id and d.online and CAMERA_CAPABILITIES & set(d.capabilities)]
        return sorted((d for d in found if rank(d) < 3), key=lambda d: (rank(d), d.device_id))[:2]
