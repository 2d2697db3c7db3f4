"""The AnalyzeFrames uplink against a real grpc.aio server on 127.0.0.1 (the fake AI server of this folder)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from hub.metrics import HubMetrics
from hub.vision.uplink import VisionUplink
from shared.backoff import Backoff
from shared.contract import pb
from tests.hub.conftest import FakeAI, until
from tests.hub.vision.conftest import VisionAI

pytestmark = pytest.mark.integration


class Recorder:
    def __init__(self) -> None:
        self.results: list[pb.VisionResult] = []
        self.drops: list[tuple[str, int, str]] = []
        self.changes: list[bool] = []

    def on_result(self, result: pb.VisionResult, rtt: float) -> None:
        self.results.append(result)

    def on_drop(self, frame: pb.VisionFrame, reason: str) -> None:
        self.drops.append((frame.device_id, frame.frame_id, reason))


UplinkFactory = Callable[..., tuple[VisionUplink, HubMetrics, Recorder]]


@pytest.fixture
async def make_uplink() -> AsyncIterator[UplinkFactory]:
    made: list[VisionUplink] = []

    def make(port: int, **kw: Any) -> tuple[VisionUplink, HubMetrics, Recorder]:
        metrics, rec = HubMetrics(), Recorder()
        options: dict[str, Any] = {"queue_frames": 8, "max_inflight": 2, "connect_timeout_s": 0.2, **kw}
        up = VisionUplink(f"127.0.0.1:{port}", metrics, backoff=Backoff(0.05, 0.3), on_result=rec.on_result,
                          on_drop=rec.on_drop, on_connection_change=rec.changes.append, **options)
        made.append(up)
        return up, metrics, rec

    yield make
    for up in made:
        await up.stop()


def frame(device: str, n: int, refresh: bool = False) -> pb.VisionFrame:
    return pb.VisionFrame(device_id=device, jpeg=b"\xff\xd8fake\xff\xd9", timestamp_ms=1_700_000_000_000 + n,
                          width=320, height=240, frame_id=n, motion_score=0.0 if refresh else 0.04, refresh=refresh)


async def test_frames_arrive_with_their_fields_and_results_are_counted(
    fake_ai: VisionAI, make_uplink: UplinkFactory
) -> None:
    up, m, rec = make_uplink(fake_ai.port, queue_frames=16)
    up.start()
    await until(lambda: up.connected, 5, "uplink connected")
    for n in range(1, 6):  # one frame per camera at a time: each waits in its camera's slot
        assert up.submit(frame("cam-a", n, refresh=n == 1))
        assert up.submit(frame("cam-b", n))
        await until(lambda n=n: len(rec.results) == 2 * n, 5, "both cameras answered")  # type: ignore[misc]
    got = fake_ai.frames["cam-a"]
    assert [f.frame_id for f in got] == [1, 2, 3, 4, 5]
    first = got[0]
    assert (first.width, first.height, first.refresh, first.jpeg) == (320, 240, True, b"\xff\xd8fake\xff\xd9")
    assert first.timestamp_ms == 1_700_000_000_001 and got[1].motion_score == pytest.approx(0.04)
    assert fake_ai.vision_streams == 1  # one long-lived stream for every camera
    assert m.vision_frames_sent == 10 and m.vision_results == 10
    assert m.vision_detections == 9  # the fake detects a "square" in every motion frame, none in the refresh
    assert [(r.device_id, r.frame_id) for r in rec.results][:2] == [("cam-a", 1), ("cam-b", 1)]
    [family] = m.vision_result_latency.collect()
    counts = [s.value for s in family.samples if s.name.endswith("_count")]
    assert counts == [10]  # one round trip per frame
    assert not rec.drops and up.queue_depth == 0 and up.inflight == 0


async def test_one_waiting_slot_per_camera_the_newest_frame_wins(
    fake_ai: VisionAI, make_uplink: UplinkFactory
) -> None:
    up, m, rec = make_uplink(fake_ai.port, queue_frames=4, max_inflight=1)
    up.start()
    await until(lambda: up.connected, 5, "uplink connected")
    fake_ai.hold.clear()  # the detector stalls: the first frame goes out, the rest wait at the hub
    up.submit(frame("cam-a", 1))
    await until(lambda: len(fake_ai.frames["cam-a"]) == 1, 5, "the first frame reached the server")
    for n in range(2, 11):
        up.submit(frame("cam-a", n))
    assert up.inflight == 1 and up.queue_depth == 1  # one camera: one waiting frame, however fast it sends
    assert m.vision_frames_dropped["superseded"] == 8
    assert [d[1] for d in rec.drops] == [2, 3, 4, 5, 6, 7, 8, 9]
    fake_ai.hold.set()
    await until(lambda: len(rec.results) == 2, 5, "the rest answered")
    assert [f.frame_id for f in fake_ai.frames["cam-a"]] == [1, 10]


async def test_a_flooding_camera_cannot_starve_another(fake_ai: VisionAI, make_uplink: UplinkFactory) -> None:
    """M5: with the old single drop-oldest queue, cam-a's flood pushed cam-b's frame out; now cameras
    take turns and only the flooding camera's own frames are dropped."""
    up, m, rec = make_uplink(fake_ai.port, queue_frames=4, max_inflight=1)
    up.start()
    await until(lambda: up.connected, 5, "uplink connected")
    fake_ai.hold.clear()
    up.submit(frame("cam-a", 1))
    await until(lambda: len(fake_ai.frames["cam-a"]) == 1, 5, "cam-a's first frame on the wire")
    up.submit(frame("cam-a", 2))
    up.submit(frame("cam-b", 1))  # the quiet camera's one frame, in the middle of the flood
    for n in range(3, 40):
        up.submit(frame("cam-a", n))
    assert up.queue_depth == 2 and m.vision_frames_dropped["superseded"] == 37
    assert all(d[0] == "cam-a" for d in rec.drops)
    fake_ai.hold.set()
    await until(lambda: len(rec.results) == 3, 5, "both cameras answered")
    assert [(r.device_id, r.frame_id) for r in rec.results] == [("cam-a", 1), ("cam-a", 39), ("cam-b", 1)]
    # Round robin: cam-a, just served, now queues behind cam-b.
    fake_ai.hold.clear()
    up.submit(frame("cam-a", 40))
    await until(lambda: len(fake_ai.frames["cam-a"]) == 3, 5, "cam-a's next frame on the wire")
    up.submit(frame("cam-a", 41))
    up.submit(frame("cam-b", 2))
    up.submit(frame("cam-a", 42))
    fake_ai.hold.set()
    await until(lambda: len(rec.results) == 6, 5, "the next round")
    assert [(r.device_id, r.frame_id) for r in rec.results][3:] == [("cam-a", 40), ("cam-a", 42), ("cam-b", 2)]


async def test_cameras_beyond_the_waiting_cap_are_dropped_and_counted(
    fake_ai: VisionAI, make_uplink: UplinkFactory
) -> None:
    up, m, rec = make_uplink(fake_ai.port, queue_frames=2, max_inflight=1)
    up.start()
    await until(lambda: up.connected, 5, "uplink connected")
    fake_ai.hold.clear()
    up.submit(frame("cam-a", 1))
    await until(lambda: len(fake_ai.frames["cam-a"]) == 1, 5, "cam-a's frame on the wire")
    assert up.submit(frame("cam-b", 1)) and up.submit(frame("cam-c", 1))
    assert not up.submit(frame("cam-d", 1))  # two cameras already wait (HUB_VISION_QUEUE_FRAMES)
    assert m.vision_frames_dropped["queue_full"] == 1 and rec.drops == [("cam-d", 1, "queue_full")]
    fake_ai.hold.set()
    await until(lambda: len(rec.results) == 3, 5, "the waiting cameras answered")


async def test_server_killed_frames_dropped_and_counted_then_reconnects(
    fake_ai: VisionAI, make_uplink: UplinkFactory
) -> None:
    up, m, rec = make_uplink(fake_ai.port)
    up.start()
    await until(lambda: up.connected, 5, "uplink connected")
    up.submit(frame("cam-a", 1))
    await until(lambda: len(rec.results) == 1, 5, "first result")
    port = fake_ai.port
    await fake_ai.stop()
    await until(lambda: not up.connected, 5, "uplink noticing the AI server is gone")
    assert rec.changes == [True, False]
    for n in range(2, 52):  # 50 frames while the AI server is down: none piles up
        assert not up.submit(frame("cam-a", n))
        assert up.queue_depth == 0
    assert m.vision_frames_dropped["ai_disconnected"] == 50
    await asyncio.sleep(0.5)  # a few redial attempts against a closed port
    assert m.vision_connect_failures >= 1
    await fake_ai.start(port)
    await until(lambda: up.connected, 10, "uplink reconnecting")
    assert m.vision_stream_reconnects == 1 and rec.changes == [True, False, True]
    up.submit(frame("cam-a", 60))
    await until(lambda: len(rec.results) == 2, 5, "a result on the new stream")
    assert fake_ai.frames["cam-a"][-1].frame_id == 60


async def test_a_hung_server_is_torn_down_and_its_frames_counted_unanswered(
    fake_ai: VisionAI, make_uplink: UplinkFactory
) -> None:
    up, m, _ = make_uplink(fake_ai.port, result_timeout_s=0.4)
    up.start()
    await until(lambda: up.connected, 5, "uplink connected")
    fake_ai.hold.clear()
    up.submit(frame("cam-a", 1))
    up.submit(frame("cam-b", 2))  # another camera: one camera's second frame would supersede its first
    await until(lambda: m.vision_frames_dropped["unanswered"] == 2, 5, "the stuck frames given up")
    fake_ai.hold.set()
    await until(lambda: up.connected and fake_ai.vision_streams == 2, 5, "a fresh stream")


async def test_an_ai_server_without_analyze_frames_is_retried_slowly(
    caplog: pytest.LogCaptureFixture, make_uplink: UplinkFactory
) -> None:
    plain = FakeAI()  # StreamConversation only: AnalyzeFrames answers UNIMPLEMENTED
    await plain.start()
    try:
        up, _, rec = make_uplink(plain.port, unimplemented_retry_s=0.5)
        with caplog.at_level(logging.WARNING, "naila.hub.vision.uplink"):
            up.start()
            await until(lambda: rec.changes[-2:] == [True, False], 5, "the stream refused")
            await asyncio.sleep(1.2)
        assert 2 <= rec.changes.count(True) <= 4  # every 0.5 s, not at the 0.05-0.3 s backoff
        assert any("does not implement AnalyzeFrames" in r.getMessage() for r in caplog.records)
    finally:
        await plain.stop()


async def test_frames_follow_the_first_ai_server_that_is_up_and_come_back_to_it(
    make_uplink: UplinkFactory,
) -> None:
    """Several AI servers (issue 21): camera frames go to the first that is up (the hub's AI pool
    says which), move on when it dies and return when it is back, so alerts keep coming."""
    first, second = VisionAI(), VisionAI()
    await first.start()
    await second.start()
    a, b = f"127.0.0.1:{first.port}", f"127.0.0.1:{second.port}"
    up_servers = {a, b}

    def choose() -> str:
        return next((t for t in (a, b) if t in up_servers), a)

    up, m, rec = make_uplink(first.port, choose=choose)
    try:
        up.start()
        await until(lambda: up.connected, 5, "uplink connected")
        up.submit(frame("cam-a", 1))
        await until(lambda: len(rec.results) == 1, 5, "a result from the first server")
        assert [f.frame_id for f in first.frames["cam-a"]] == [1]
        port = first.port
        await first.stop()  # killed: its stream ends; the pool marks it down
        up_servers.discard(a)
        await until(lambda: up.connected and up.target == b, 10, "frames moved to the second server")
        up.submit(frame("cam-a", 2))
        await until(lambda: len(rec.results) == 2, 5, "a result from the second server")
        assert [f.frame_id for f in second.frames["cam-a"]] == [2]
        await first.start(port)  # back on the same address
        up_servers.add(a)
        await until(lambda: up.connected and up.target == a, 10, "frames back on the first server")
        up.submit(frame("cam-a", 3))
        await until(lambda: len(rec.results) == 3, 5, "a result from the first server again")
        assert [f.frame_id for f in first.frames["cam-a"]] == [1, 3] and len(second.frames["cam-a"]) == 1
        assert m.vision_stream_reconnects >= 2  # to the second, and back
    finally:
        await up.stop()
        await first.stop()
        await second.stop()
