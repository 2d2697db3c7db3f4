"""Finding M2: chat and upload sessions are named by the client, so rotating session ids must not
bring fresh budget. The per-kind buckets of InboundGuard on an injected clock (no sleeps)."""

from __future__ import annotations

import pytest

from ai_server.control.errors import Rejected
from ai_server.control.inbound import InboundGuard
from ai_server.control.metrics import ControlMetrics
from shared.config import AIServerSettings, load
from shared.mqtt import TopicKind, parse_topic, topics

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def guard(clock: Clock, *, chat: float = 2.0, uploads: float = 0.5) -> InboundGuard:
    return InboundGuard(ControlMetrics(), rate_per_s=5.0, burst=4, max_media_bytes=2048, clock=clock,
                        kind_rates={TopicKind.CHAT_REQUEST: chat, TopicKind.UPLOAD: uploads})


def admitted(g: InboundGuard, topic: str) -> bool:
    try:
        g.admit(parse_topic(topic))
    except Rejected as err:
        assert err.reason == "rate_limited"
        return False
    return True


def test_rotating_session_ids_share_one_chat_budget() -> None:
    clock = Clock()
    g = guard(clock)
    passed = sum(admitted(g, topics.chat_request(f"s-{i}")) for i in range(100))
    assert passed == 4  # the burst, not 100 fresh sessions x 4
    clock.t = 1.0  # refilled at 2/s
    assert sum(admitted(g, topics.chat_request(f"t-{i}")) for i in range(100)) == 2


def test_one_session_over_its_own_limit_does_not_spend_the_shared_budget() -> None:
    clock = Clock()
    g = guard(clock, chat=1.0)
    assert admitted(g, topics.chat_request("flooder"))
    clock.t = 3.0  # the shared bucket is full again (burst 4 at 1/s), the flooder's own too
    results = [admitted(g, topics.chat_request("flooder")) for _ in range(20)]
    assert sum(results) == 4  # its own burst; the other 16 refused by its own bucket
    assert admitted(g, topics.chat_request("someone-else")) is False  # shared: 4 of 4 spent by those 4
    clock.t = 4.0
    assert admitted(g, topics.chat_request("someone-else"))


def test_uploads_and_chat_have_separate_budgets_and_devices_are_not_shared() -> None:
    clock = Clock()
    g = guard(clock, uploads=0.5)
    assert sum(admitted(g, f"naila/uploads/u-{i}/image") for i in range(10)) == 4
    assert admitted(g, topics.chat_request("c-1"))  # chat untouched by the uploads
    # Device topics are bound to their MQTT user by the ACL: per device only, no shared bucket.
    assert all(admitted(g, topics.device_status(f"dev-{i}")) for i in range(50))


def test_the_settings_feed_the_shared_buckets() -> None:
    s = load(AIServerSettings)
    assert 0 < s.ai_mqtt_upload_rate_per_s <= s.ai_mqtt_chat_rate_per_s
