"""AnalyzeFrames inputs and vision health (issue 18: C1 vision part, M6).

The pipeline runs with a scripted detector on a clock the test moves; the M6 tests load a real
(truncated) YOLO checkpoint through ultralytics, and read GetStatus and the hub's /health status over
real loopback grpc.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest

from ai_server.app import AIServer, start_server
from ai_server.fakes import FakeLLM, FakeSTT, FakeTTS
from ai_server.store import MediaStore
from ai_server.vision.config import VisionConfig
from ai_server.vision.detector import YoloDetector
from ai_server.vision.pipeline import FORGET_AFTER_OFFLINE, Frame, VisionPipeline
from hub.ai_link import AiLink
from hub.metrics import HubMetrics
from shared.backoff import Backoff
from shared.config import AIServerSettings, load
from shared.contract import pb, pb_grpc
from tests.ai_server.vision.conftest import Clock, ShapeDetector, person, scene

pytestmark = pytest.mark.timeout(120)

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
Factory = Callable[..., VisionPipeline]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def make(media_store: MediaStore, clock: Clock) -> AsyncIterator[Factory]:
    made: list[VisionPipeline] = []

    def factory(detector: Any = None, **config: Any) -> VisionPipeline:
        vp = VisionPipeline(detector or ShapeDetector(), VisionConfig(**config), store=media_store,
                            clock=clock, wall=lambda: NOW)
        made.append(vp)
        return vp

    yield factory
    for vp in made:
        await vp.stop()


@pytest.mark.unit
async def test_at_most_vision_max_cameras_and_stale_cameras_are_forgotten(make: Factory, clock: Clock) -> None:
    vp = make(max_cameras=2, offline_after_s=30.0)
    jpeg = scene()
    assert not (await vp.analyse(Frame("cam-1", jpeg, refresh=True))).error
    assert not (await vp.analyse(Frame("cam-2", jpeg, refresh=True))).error
    third = await vp.analyse(Frame("cam-3", jpeg, refresh=True))
    assert third.error.startswith("refused (too_many_cameras)")
    assert vp.metrics.events["frames_refused_too_many_cameras"] == 1
    clock.advance(31)
    vp.tick()  # offline now, but remembered (a camera that comes back keeps its state)
    assert {c.device_id for c in vp.cameras()} == {"cam-1", "cam-2"}
    clock.advance(FORGET_AFTER_OFFLINE * 30.0)
    assert not (await vp.analyse(Frame("cam-1", jpeg, refresh=True))).error  # cam-1 is back in time
    vp.tick()
    assert {c.device_id for c in vp.cameras()} == {"cam-1"}  # cam-2 was offline 10 x 30 s: forgotten
    assert vp.metrics.events["cameras_forgotten"] == 1
    assert not (await vp.analyse(Frame("cam-3", jpeg, refresh=True))).error


@pytest.mark.unit
@pytest.mark.parametrize(("offset_s", "kept"), [(-3.0, True), (4.9, True), (-3600.0, False), (-6.0, False),
                                                (86_400.0, False)])
async def test_a_capture_time_far_from_the_servers_is_replaced(make: Factory, offset_s: float, kept: bool) -> None:
    vp = make()
    said = NOW + timedelta(seconds=offset_s)
    await vp.analyse(Frame("cam-1", scene(person(40, 40)), timestamp_ms=int(said.timestamp() * 1000)))
    view = vp.latest("cam-1")
    assert view is not None and view.wall_time == (said if kept else NOW)
    assert vp.metrics.events["timestamps_replaced"] == (0 if kept else 1)


@pytest.mark.unit
@pytest.mark.parametrize(("fields", "detail"), [
    ({"width": 1920, "height": 1080}, "the frame says 1920x1080"),
    ({"motion_score": math.nan}, "motion_score nan"),
    ({"motion_score": 7.0}, "motion_score 7.0"),
])
async def test_frame_fields_must_agree_with_the_frame(make: Factory, fields: dict[str, Any], detail: str) -> None:
    vp = make()
    result = await vp.analyse(Frame("cam-1", scene(), **fields))
    assert result.error.startswith("refused (bad_field)") and detail in result.error
    assert vp.latest("cam-1") is None  # nothing of a refused frame is kept


@pytest.mark.integration
async def test_a_model_that_fails_to_load_is_not_retried_per_batch(
    make: Factory, clock: Clock, truncated_pt: Path
) -> None:
    detector = YoloDetector(truncated_pt, device="cpu", clock=clock)  # the back-off is the detector's
    vp = make(detector)
    first = await vp.analyse(Frame("cam-1", scene(person(40, 40)), frame_id=1))
    assert first.error.startswith("vision model unavailable:")
    assert vp.model_error is not None
    for n in range(2, 12):  # within the back-off: answered at once, no new load
        clock.advance(0.2)
        result = await vp.analyse(Frame("cam-1", scene(person(40 + n, 40)), frame_id=n))
        assert result.error.startswith("vision model unavailable:")
    assert vp.metrics.events["model_load_failures"] == 1
    clock.advance(5.0)  # the back-off ran out: one more try (and a longer back-off after it)
    await vp.analyse(Frame("cam-1", scene(person(60, 40)), frame_id=20))
    assert vp.metrics.events["model_load_failures"] == 2


@pytest.mark.integration
async def test_getstatus_and_the_hubs_health_say_degraded_when_the_vision_model_failed(truncated_pt: Path) -> None:
    settings = load(AIServerSettings, ai_server_host="127.0.0.1", ai_mqtt=False, vision_enabled=True)
    server: AIServer = await start_server(settings, stt=FakeSTT(), llm=FakeLLM(), tts=FakeTTS(), port=0, warm=False,
                                          detector=YoloDetector(truncated_pt, device="cpu"))
    metrics = HubMetrics()
    link = AiLink(server.address, metrics, on_output=lambda out: None, backoff=Backoff(0.05, 0.3),
                  per_device_limit=10, heartbeat_period_s=0.1)
    metrics.grpc_connected = lambda: link.connected
    metrics.ai_status = lambda: link.ai_status
    try:
        async with grpc.aio.insecure_channel(server.address) as ch:
            stub = pb_grpc.NailaAIStub(ch)
            assert (await stub.GetStatus(pb.StatusRequest())).status == "ok"  # not tried yet
            link.start()
            assert await link.wait_connected(10)
            await _until(lambda: link.ai_status == "ok")
            assert metrics.health()["status"] == "ok"
            results = [r async for r in stub.AnalyzeFrames(iter([pb.VisionFrame(device_id="cam-1", jpeg=scene())]))]
            assert results[0].error.startswith("vision model unavailable:")
            status = await stub.GetStatus(pb.StatusRequest())
        assert status.status == "degraded" and "(failed: " in status.vision_model
        assert status.counters["vision_model_load_failures"] == 1
        await _until(lambda: link.ai_status == "degraded")
        assert metrics.health()["status"] == "degraded"  # the hub's plain /health follows GetStatus
    finally:
        await link.stop()
        await server.stop(grace=0)


async def _until(cond: Callable[[], bool], within_s: float = 10.0) -> None:
    import asyncio
    import time

    deadline = time.monotonic() + within_s
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)
