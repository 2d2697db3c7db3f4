"""Announcement budget (issue 18, H1): nobody makes every speaker in the house talk as often as it likes.

Spoken announcements and replays are charged to the asking device, typed chat speak_on to one key for
all sessions, ControlPlane.broadcast to another: AI_ANNOUNCE_PER_MIN (6) on average, 3 at once. Over
it the asker hears "Too many announcements; try again in a minute." and no speaker talks. Unit tests
use the real RoomRouter, Speaker and a ConversationSession on a hand-moved clock; the same limits
through a whole AI server, a real hub stream and mosquitto are in
tests/ai_server/control/test_speech_limits.py (where the server fixtures live).
"""

from __future__ import annotations

import pytest

from ai_server.control.speech import TOO_MANY, AnnounceLimit
from ai_server.routing import Route, RouteKind, Scope
from shared.config import AIServerSettings, load
from tests.ai_server.control.test_room_routing import Home, home

ANNOUNCE = Route(RouteKind.ANNOUNCE, Scope.ROOM, "kitchen", "Dinner is ready.")
OK = "OK, announcing it in the kitchen."


class Clock:
    def __init__(self) -> None:
        self.t = 500.0

    def __call__(self) -> float:
        return self.t


def limited(per_min: float = 6.0) -> tuple[Home, Clock]:
    h = home()
    clock = Clock()
    h.speaker.limit = AnnounceLimit(per_min, h.metrics, clock=clock)
    return h, clock


@pytest.mark.unit
def test_the_setting_defaults_to_six_a_minute() -> None:
    assert load(AIServerSettings).ai_announce_per_min == 6.0
    with pytest.raises(ValueError, match="AI_ANNOUNCE_PER_MIN=0: Input should be greater than 0"):
        load(AIServerSettings, ai_announce_per_min=0)


@pytest.mark.unit
async def test_a_device_over_its_budget_hears_a_refusal_and_no_speaker_talks() -> None:
    h, clock = limited()
    h.pipeline.conversations.record("hall-1", "a question", "An answer.")
    for _ in range(3):  # the burst
        assert await h.router.carry_out("hall-1", ANNOUNCE) == OK
    assert (await h.heard())["kitchen-1"] == ["Dinner is ready."] * 3
    assert await h.router.carry_out("hall-1", ANNOUNCE) == TOO_MANY
    replay = Route(RouteKind.REPLAY, Scope.ROOM, "kitchen")
    assert await h.router.carry_out("hall-1", replay) == TOO_MANY  # replays share the budget
    assert await h.heard() == {}
    assert len(h.published.sent) == 3  # the refused one is not published either
    assert h.metrics.events["announce_limited"] == 2
    # Another device has its own budget.
    assert await h.router.carry_out("bed-1", ANNOUNCE) == OK
    # 6 a minute: one more every 10 s, and only one.
    clock.t += 10
    assert await h.router.carry_out("hall-1", replay) == "OK, playing it in the kitchen."
    assert await h.router.carry_out("hall-1", ANNOUNCE) == TOO_MANY
    assert set(await h.heard()) == {"kitchen-1", "kitchen-2"}
    assert h.metrics.events["announce_limited"] == 3


@pytest.mark.unit
async def test_requests_that_speak_nowhere_cost_nothing() -> None:
    h, _clock = limited()
    for _ in range(5):
        assert await h.router.carry_out("hall-1", Route(RouteKind.ANNOUNCE, Scope.UNKNOWN, "attic", "Hi.")) == (
            "I don't know a room called attic.")
        assert await h.router.carry_out("hall-1", Route(RouteKind.REPLAY, Scope.ROOM, "garage")) == (
            "I haven't said anything yet that I could play.")
    for _ in range(3):
        assert await h.router.carry_out("hall-1", ANNOUNCE) == OK
    assert h.metrics.events.get("announce_limited", 0) == 0


@pytest.mark.unit
async def test_broadcasts_have_a_budget_of_their_own() -> None:
    h, clock = limited(per_min=1)  # below the burst: one at once
    assert h.router.speak_broadcast("Dinner is ready", "kitchen") == ["kitchen-1", "kitchen-2"]
    assert h.router.speak_broadcast("Dinner is ready!", "kitchen") == []
    assert h.router.speak_broadcast("Anyone?", "garage") == []  # nowhere to speak: not charged, not limited
    assert h.metrics.events["announce_limited"] == 1 and h.metrics.events["broadcast_unspoken"] == 2
    assert await h.router.carry_out("hall-1", ANNOUNCE) == OK  # devices are not charged for broadcasts
    clock.t += 60
    assert h.router.speak_broadcast("Lights out", None) == ["bed-1", "hall-1", "kitchen-1", "kitchen-2"]
    heard = await h.heard()
    assert heard["kitchen-1"] == ["Dinner is ready", "Dinner is ready.", "Lights out"]
