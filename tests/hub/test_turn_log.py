"""The hub's turn log (hub/turns.py): the last hour's turns in bounded memory, and the p50/p95 per
stage over that hour that the dashboard's latency chart draws (issue 24). The clock is a counter
the test moves: no sleeps."""

from __future__ import annotations

import pytest

from hub.turns import TurnLog, TurnRecord, percentile, stages_of

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def turn(n: int, total: int, device: str = "kitchen-pi") -> TurnRecord:
    """A turn whose milestones are at 20/40/60/80/100 % of ``total`` ms after the end of speech."""
    timing = {
        "stt_ms": total * 2 // 10,
        "llm_first_token_ms": total * 4 // 10,
        "first_sentence_ms": total * 6 // 10,
        "tts_first_audio_ms": total * 8 // 10,
        "hub_end_to_playout_ms": total,
    }
    return TurnRecord(device, f"c-{n}", transcript=f"turn {n}", timing=timing)


def test_stages_are_steps_between_milestones_and_a_missing_one_adds_nothing() -> None:
    assert stages_of({"stt_ms": 200, "llm_first_token_ms": 500, "tts_first_audio_ms": 900}) == [200, 300, 0, 400, 0]
    assert stages_of({}) == [0, 0, 0, 0, 0]
    assert percentile([], 50) is None
    assert percentile([5, 1, 3, 2, 4], 50) == 3 and percentile(list(range(1, 101)), 95) == 95


def test_the_log_keeps_the_last_hour_and_its_percentiles_follow_the_window() -> None:
    clock = Clock()
    log = TurnLog(clock=clock)
    for n in range(10):  # ten slow turns an hour and a bit ago...
        log.add(turn(n, 3000))
        clock.now += 1
    clock.now += 600
    for n in range(10, 30):  # ...then twenty fast ones
        log.add(turn(n, 1000 + n))
        clock.now += 60
    stats = log.latency()
    assert stats["turns"] == 30
    total = stats["stages"]["total"]  # type: ignore[index]
    assert total["p95"] == 3000 and total["count"] == 30
    clock.now = 1000.0 + 3600 + 10 + 1  # the slow turns are now more than an hour old
    assert [t.conversation_id for t in log.recent()][:1] == ["c-10"] and len(log) == 20
    stats = log.latency()
    total = stats["stages"]["total"]  # type: ignore[index]
    assert (total["p50"], total["p95"], total["count"]) == (1019, 1028, 20)
    stt = stats["stages"]["stt"]  # type: ignore[index]
    assert (stt["p50"], stt["p95"]) == (203, 205)
    assert [t.conversation_id for t in log.recent(limit=3)] == ["c-27", "c-28", "c-29"]
    assert log.recent("hall-pi") == []
    clock.now += 3600
    assert len(log) == 0 and log.latency()["stages"]["total"] == {"p50": None, "p95": None, "count": 0}  # type: ignore[index]


def test_a_busy_hour_is_capped() -> None:
    clock = Clock()
    log = TurnLog(50, clock=clock)
    for n in range(120):
        log.add(turn(n, 1000))
    assert len(log) == 50 and log.recent()[0].conversation_id == "c-70"


def test_turns_without_timings_are_listed_but_not_in_the_percentiles() -> None:
    log = TurnLog(clock=Clock())
    log.add(TurnRecord("kitchen-pi", "c-err", error_code="STT_FAILED"))
    log.add(turn(1, 900))
    assert len(log.recent()) == 2 and log.latency()["turns"] == 1
