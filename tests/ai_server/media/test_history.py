"""Historical questions (ai_server/media/history.py) over a seeded event store on a fixed clock, and
the voice pipeline's looker taking the history before the live view (spec §8.10 step 2)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ai_server.media.history import HistoryQuestions, is_historical, parse_time
from ai_server.media.looker import HistoryFirst
from ai_server.pipeline import Seen
from ai_server.store import MediaStore
from ai_server.store.events import EventOutcome
from ai_server.vision.view import CameraInfo, CameraView

pytestmark = pytest.mark.unit

NOW = datetime(2026, 11, 23, 15, 0, tzinfo=UTC)  # Monday afternoon


def at(day_offset: int, hh: int, mm: int) -> datetime:
    return datetime(2026, 11, 23, hh, mm, tzinfo=UTC) + timedelta(days=day_offset)


class Cameras:
    """The cameras the vision pipeline knows (``Views.cameras`` only is used)."""

    def __init__(self, *infos: CameraInfo) -> None:
        self.infos = list(infos)

    def now(self) -> float:
        return 0.0

    def cameras(self) -> list[CameraInfo]:
        return self.infos

    def latest(self, device_id: str) -> CameraView | None:
        return None

    async def analysed(self, device_id: str) -> CameraView | None:
        return None


@pytest.fixture
def store(tmp_path: Path) -> Iterator[MediaStore]:
    s = MediaStore(tmp_path)
    seed: list[tuple[datetime, str, str, str, float, EventOutcome, bool]] = [
        (at(0, 3, 12), "front_cam", "front_door", "person", 0.82, "alerted", True),
        (at(0, 3, 40), "front_cam", "front_door", "person", 0.77, "duplicate", False),
        (at(0, 5, 0), "front_cam", "front_door", "person", 0.9, "alerted", True),
        (at(-1, 10, 5), "garden_cam", "garden", "dog", 0.66, "recorded", False),
        (at(-1, 16, 30), "garden_cam", "garden", "person", 0.71, "alerted", True),
        (at(-1, 23, 40), "back_cam", "backyard", "person", 0.79, "alerted", True),
        (at(0, 1, 15), "back_cam", "backyard", "person", 0.6, "duplicate", False),
        (at(-3, 12, 0), "back_cam", "backyard", "cat", 0.55, "recorded", False),
    ]
    for when, device, zone, label, conf, outcome, snap in seed:
        media_id = s.add(b"\xff\xd8jpeg", source="alert_snapshot", media_type="image", format="jpeg",
                         device_id=device, zone=zone, time=when).id if snap else None
        s.events.add(time=when, device_id=device, zone=zone, alert_type="person_detected", label=label,
                     confidence=conf, track_id=1, outcome=outcome, media_id=media_id)
    yield s
    s.close()


@pytest.fixture
def history(store: MediaStore) -> HistoryQuestions:
    views = Cameras(CameraInfo("front_cam", "hall", "front_door", 10, True),
                    CameraInfo("garden_cam", "garden", "garden", 5, True),
                    CameraInfo("porch_cam", "porch", "porch", 1, False))
    return HistoryQuestions(store.events, views, lambda: NOW)


def test_3am_is_that_hour_today_and_cites_time_camera_and_snapshot(history: HistoryQuestions) -> None:
    found = history.answer("What did the front door camera see at 3am?")
    assert found is not None and found.when is not None
    assert (found.when.since, found.when.until) == (at(0, 3, 0), at(0, 4, 0))
    assert [p.zone for p in found.places] == ["front_door"]
    assert found.text == (
        "2 events between 03:00 and 04:00 today: "
        "At 03:12 the front door camera saw a person (confidence 0.82, alert sent); snapshot stored. "
        "At 03:40 the front door camera saw a person (confidence 0.77)."
    )


def test_yesterday_in_the_garden_is_the_whole_day(history: HistoryQuestions) -> None:
    found = history.answer("what happened yesterday in the garden")
    assert found is not None and found.when is not None
    assert (found.when.since, found.when.until) == (at(-1, 0, 0), at(0, 0, 0))
    assert found.text == (
        "2 events yesterday: At 10:05 yesterday the garden camera saw a dog (confidence 0.66). "
        "At 16:30 yesterday the garden camera saw a person (confidence 0.71, alert sent); snapshot stored."
    )


def test_the_last_alert_from_the_backyard_skips_repeats(history: HistoryQuestions) -> None:
    found = history.answer("Show me the last alert from the backyard")
    assert found is not None and found.when is None
    # The 01:15 event was a duplicate of the 23:40 alert: not an alert of its own.
    assert found.text == ("The last alert from the backyard: At 23:40 yesterday the backyard camera saw a person "
                          "(confidence 0.79, alert sent); snapshot stored.")


def test_an_unknown_camera_is_said_plainly(history: HistoryQuestions) -> None:
    found = history.answer("what did the garage camera see last night?")
    assert found is not None and found.events == []
    assert found.text == ('I don\'t know a camera or zone called "garage". '
                          "The ones I know: backyard, front door, garden, porch.")


def test_an_empty_range_says_so(history: HistoryQuestions) -> None:
    found = history.answer("did the porch camera see anyone this morning?")
    assert found is not None and found.events == []
    assert found.text == "There are no recorded events from the porch camera this morning."
    nothing = history.answer("what did the cameras see 2 hours ago")
    assert nothing is not None
    assert nothing.text == "There are no recorded events from any camera between 12:30 and 13:30."


def test_live_and_non_visual_questions_are_not_historical(history: HistoryQuestions) -> None:
    assert history.answer("who is at the front door?") is None
    assert history.answer("what do you see?") is None
    assert history.answer("what was I asking about yesterday") is None  # conversation history, not cameras
    assert history.answer("set a timer for 3pm") is None
    assert is_historical("was there anyone in the garden", ["garden"])


def test_time_expressions_on_a_controlled_clock() -> None:
    early = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)
    r = parse_time("what did it see at 3am", early)  # 3am has not come yet today: yesterday's
    assert r is not None and r.since == at(-1, 3, 0)
    r = parse_time("what happened at 3:15 pm yesterday", NOW)
    assert r is not None and (r.since, r.until) == (at(-1, 15, 0), at(-1, 15, 30))
    r = parse_time("what happened last night", NOW)
    assert r is not None and (r.since, r.until) == (at(-1, 18, 0), at(0, 6, 0))
    assert parse_time("show me the last alert", NOW) is None
    r = parse_time("what did we talk about today", NOW)  # "we" is not Wednesday
    assert r is not None and r.words == "today" and r.since == at(0, 0, 0)


def test_history_query_time(history: HistoryQuestions) -> None:
    history.answer("what did the front door camera see at 3am")  # dateparser's first call loads its data
    started = time.perf_counter()
    for _ in range(20):
        history.answer("what did the front door camera see at 3am")
    print(f"\nhistory question -> answer: {(time.perf_counter() - started) / 20 * 1000:.1f} ms")


class LiveLooker:
    def __init__(self) -> None:
        self.asked: list[str] = []

    async def look(self, device_id: str, room: str, question: str) -> Seen:
        self.asked.append(question)
        return Seen(prompt="LIVE VIEW")


async def test_the_looker_takes_history_before_the_live_view(history: HistoryQuestions) -> None:
    live = LiveLooker()
    looker = HistoryFirst(history, live)
    seen = await looker.look("kitchen_speaker", "kitchen", "what did the front door camera see at 3am")
    # The stored facts are the answer itself, not a prompt for the LLM to paraphrase.
    assert seen.answer.startswith("2 events between 03:00 and 04:00") and not seen.prompt
    assert live.asked == []
    assert await looker.look("kitchen_speaker", "kitchen", "who is at the front door?") == Seen(prompt="LIVE VIEW")
    assert live.asked == ["who is at the front door?"]
