"""The inbound gate on a controllable clock, reply matching, and what a refusal can be answered on."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest

from ai_server.control.errors import Rejected
from ai_server.control.inbound import InboundGuard, rate_key
from ai_server.control.metrics import ControlMetrics
from ai_server.control.pending import PendingReplies
from ai_server.control.plane import recover_conversation_id, reply_session
from shared.mqtt import ChatRequest, parse_topic

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def guard(clock: Clock, **kw: float) -> InboundGuard:
    return InboundGuard(
        ControlMetrics(), rate_per_s=kw.get("rate", 2.0), burst=kw.get("burst", 3), max_media_bytes=2048, clock=clock
    )


def test_each_device_and_session_has_its_own_budget_that_refills_with_time() -> None:
    clock = Clock()
    g = guard(clock)
    dev = parse_topic("naila/devices/cam1/status")
    assert [_admitted(g, dev) for _ in range(4)] == [True, True, True, False]  # burst of 3
    assert _admitted(g, parse_topic("naila/devices/cam2/status"))  # another device: its own budget
    assert _admitted(g, parse_topic("naila/chat/s1/request"))
    clock.t += 0.49
    assert not _admitted(g, dev)  # 0.98 of a token
    clock.t += 0.01
    assert _admitted(g, dev) and not _admitted(g, dev)
    clock.t += 60
    assert [_admitted(g, dev) for _ in range(4)] == [True, True, True, False]  # refilled to the burst, no more
    assert rate_key(parse_topic("naila/uploads/s9/image")) == "session:s9"
    assert rate_key(parse_topic("naila/devices/cam1/media/snapshot")) == "device:cam1"


def _admitted(g: InboundGuard, parsed: object) -> bool:
    try:
        g.admit(parsed)  # type: ignore[arg-type]
    except Rejected as err:
        assert err.reason == "rate_limited"
        return False
    return True


def test_decode_names_the_reason() -> None:
    g = guard(Clock())
    topic = parse_topic("naila/chat/s1/request")
    ok = g.decode(topic, json.dumps({"session_id": "s1", "text": "hi"}).encode())
    assert isinstance(ok, ChatRequest) and ok.text == "hi"
    cases = {
        b"{": "malformed",
        b'{"session_id": "s1"}': "malformed",
        b'{"session_id": "s2", "text": "hi"}': "unauthorised",
        b" " * (64 * 1024 + 1): "oversized",
    }
    for payload, reason in cases.items():
        with pytest.raises(Rejected) as err:
            g.decode(topic, payload)
        assert err.value.reason == reason, payload[:40]


def test_refusals_are_all_counted_but_logged_within_a_budget(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    g = guard(clock)
    with caplog.at_level(logging.WARNING, logger="ai_server.control.inbound"):
        for _ in range(50):
            g.refused("naila/chat/s/request", Rejected("malformed", "bad"))
        g.refused("naila/chat/s/request", Rejected("oversized", "big"))  # another reason: its own budget
        clock.t += 10.0
        g.refused("naila/chat/s/request", Rejected("malformed", "bad"))
    assert g.metrics.rejected == {"malformed": 51, "oversized": 1}
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 5 and g.logs_suppressed == 47
    assert "47 similar lines suppressed" in lines[-1]


async def test_replies_complete_only_from_the_addressed_device() -> None:
    pending: PendingReplies[str] = PendingReplies()
    future = pending.expect("cam1", "req_1")
    assert not pending.resolve("cam2", "req_1", "spoofed")
    assert not pending.resolve("cam1", "req_other", "stray")
    assert pending.resolve("cam1", "req_1", "real")
    assert await future == "real" and len(pending) == 0
    assert not pending.resolve("cam1", "req_1", "again")  # late duplicate
    failed = pending.expect("cam1", "req_2")
    assert pending.fail("cam1", "req_2", ValueError("bad image"))
    with pytest.raises(ValueError):
        await failed
    cancelled = pending.expect("cam1", "req_3")
    pending.cancel_all()
    with pytest.raises(asyncio.CancelledError):
        await cancelled


def test_a_refusal_is_answered_where_a_session_waits() -> None:
    assert reply_session("naila/chat/s1/request", parse_topic("naila/chat/s1/request")) == "s1"
    assert reply_session("naila/uploads/s2/image", parse_topic("naila/uploads/s2/image")) == "s2"
    assert reply_session("naila/uploads/s3/pdf", None) == "s3"  # unknown kind: the session is still readable
    assert reply_session("naila/uploads/../image", None) is None
    assert reply_session("naila/devices/d/command/response", parse_topic("naila/devices/d/command/response")) is None
    assert reply_session("other/chat/s1/request", None) is None


def test_the_conversation_id_of_a_broken_payload_is_recovered() -> None:
    assert recover_conversation_id(b'{"text": "x", "conversation_id" : "c:1-2", "data": "AAAA') == "c:1-2"
    assert recover_conversation_id(b'{"conversation_id": "bad id"}') is None
    assert recover_conversation_id(b'{"conversation_id": 5}') is None
    assert recover_conversation_id(b"\xff\xfe") is None
    big = b'{"data": "' + b"A" * 5_000_000 + b'", "conversation_id": "late"}'
    assert recover_conversation_id(big) == "late"
