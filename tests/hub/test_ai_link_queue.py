"""The uplink queue's accounting: per-device bounds, drops while disconnected (no network)."""

from __future__ import annotations

import pytest

from hub.ai_link import AiLink, Outbound
from hub.backoff import Backoff
from hub.metrics import HubMetrics
from shared.contract import pb

pytestmark = pytest.mark.unit


def item(device: str, frames: int = 1) -> Outbound:
    return Outbound(pb.AudioInput(device_id=device, event=pb.CONTINUE, audio_pcm=b"\0" * 640),
                    frames=frames, captured_at=0.0)


def make() -> tuple[AiLink, HubMetrics]:
    m = HubMetrics()
    link = AiLink("127.0.0.1:1", m, on_output=lambda out: None, backoff=Backoff(0.1, 1.0), per_device_limit=10)
    return link, m


async def test_everything_is_dropped_and_counted_while_disconnected() -> None:
    link, m = make()
    assert not link.send(item("a"))
    assert not link.send(item("a", frames=13))
    assert m.frames_dropped["ai_disconnected"] == 14 and link.pending("a") == 0


async def test_one_flooding_device_cannot_crowd_out_another() -> None:
    link, m = make()
    link._set_connected(True)  # as if the stream were up and stalled (nothing drains the queue)
    accepted = sum(link.send(item("noisy")) for _ in range(25))
    assert accepted == 10 and m.frames_dropped["device_queue_full"] == 15
    assert all(link.send(item("quiet")) for _ in range(10))
    # Losing the stream drops what was queued (counted) and resets the per-device bounds.
    link._set_connected(False)
    assert m.frames_dropped["ai_disconnected"] == 20
    assert link.pending("noisy") == 0 and link.pending("quiet") == 0


async def test_reply_for_an_unknown_device_is_counted_and_ignored() -> None:
    from hub.server import Hub
    from shared.config import HubSettings, load

    hub = Hub(load(HubSettings))
    hub.route_output(pb.AudioOutput(device_id="nobody", audio_pcm=b"\0\0" * 100, sample_rate=22050))
    hub.route_output(pb.AudioOutput(device_id="nobody", is_final=True))
    assert hub.metrics.unknown_device_outputs == 2 and hub.metrics.tts_frames_routed == 0
    assert b"naila_hub_unknown_device_outputs_total 2.0" in hub.metrics.exposition()
