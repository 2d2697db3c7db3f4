"""The camera and history LLM tools (ai_server/llm/tools.py: install_looking) over the pipeline's own
objects: a real HistoryQuestions on a real media store (SQLite events and transcripts), and the
history-first Looker whose live camera view is the one scripted boundary."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ai_server.assist.core import AssistContext, IntentRegistry
from ai_server.assist.tools import NO_VIEW, NOTHING_FOUND, ToolBox, assist_context, install_looking
from ai_server.llm.tools import ToolCall
from ai_server.media.history import HistoryQuestions
from ai_server.media.looker import HistoryFirst
from ai_server.pipeline import Seen
from ai_server.store import MediaStore

pytestmark = pytest.mark.unit

NOW = datetime(2026, 11, 23, 15, 0, tzinfo=UTC)
ASKER = AssistContext(NOW, device_id="pi-1", room="kitchen")


class LiveView:
    """The live camera selection (a Looker), scripted: what it was asked, what it saw."""

    def __init__(self, seen: Seen | None = None, *, fail: bool = False) -> None:
        self.seen = seen or Seen()
        self.fail = fail
        self.asked: list[tuple[str, str, str]] = []

    async def look(self, device_id: str, room: str, question: str) -> Seen:
        self.asked.append((device_id, room, question))
        if self.fail:
            raise RuntimeError("camera gone")
        return self.seen


@pytest.fixture
def history(tmp_path: Path) -> Iterator[HistoryQuestions]:
    store = MediaStore(tmp_path)
    yesterday = NOW - timedelta(days=1)
    for hh, label in ((10, "dog"), (16, "person")):
        store.events.add(time=yesterday.replace(hour=hh, minute=5), device_id="garden_cam", zone="garden",
                         alert_type="person_detected", label=label, confidence=0.7, track_id=1, outcome="recorded",
                         media_id=None)  # fmt: skip
    yield HistoryQuestions(store.events, None, lambda: NOW, transcripts=store.transcripts)
    store.close()


def toolbox(camera: LiveView | None, history: HistoryQuestions | None) -> ToolBox:
    registry = IntentRegistry()
    looker = None if camera is None else HistoryFirst(history, camera) if history is not None else camera
    install_looking(registry, camera=looker, history=history)
    return ToolBox(registry, lambda: NOW)


async def call(box: ToolBox, name: str, **args: str) -> str:
    with assist_context(ASKER):
        return await box.run(ToolCall(name, {"action": "look" if name == "camera" else "recall", **args}))


async def test_the_camera_tool_asks_the_pipelines_looker_for_the_asker(history: HistoryQuestions) -> None:
    live = LiveView(Seen(prompt="The hall camera (2 s ago) sees 2 people by the door."))
    box = toolbox(live, history)
    assert {"camera", "history"} <= box.names()
    said = await call(box, "camera", camera="hall")
    assert said == "The hall camera (2 s ago) sees 2 people by the door."
    assert live.asked == [("pi-1", "kitchen", "What does the hall camera see right now?")]


async def test_no_view_or_a_failing_camera_is_said(history: HistoryQuestions) -> None:
    assert await call(toolbox(LiveView(), history), "camera") == NO_VIEW
    box = toolbox(LiveView(fail=True), history)
    assert await call(box, "camera", camera="hall") == "Error: NailaLookCamera failed (RuntimeError)."
    assert box.counts["tool_errors"] == 1


async def test_the_history_tool_answers_from_the_stored_events(history: HistoryQuestions) -> None:
    box = toolbox(None, history)
    assert box.names() == {"history"}  # no camera: its tool is not offered
    said = await call(box, "history", query="what happened yesterday in the garden")
    assert said.startswith("2 events yesterday: At 10:05 yesterday the garden camera saw a dog")
    assert (await call(box, "history", query="the garden yesterday")).startswith("2 events yesterday")
    assert await call(box, "history", query="the capital of France") == NOTHING_FOUND


async def test_the_history_tool_reads_the_askers_own_conversations(history: HistoryQuestions) -> None:
    assert history.transcripts is not None
    history.transcripts.add(time=NOW - timedelta(hours=2), device_id="pi-1", room="kitchen", thread="t1",
                            user_text="how tall is the eiffel tower", reply_text="About 330 metres.")  # fmt: skip
    said = await call(toolbox(None, history), "history", query="what was I asking about today")
    assert "how tall is the eiffel tower" in said


def test_without_collaborators_neither_tool_is_offered() -> None:
    assert not {"camera", "history"} & toolbox(None, None).names()
