"""Issue 18 follow-ups in vision.

H6: the hub keeps nothing per camera once its stream is gone (frame ids come from one counter).
M6: a model that fails to load is tried once per back-off by every caller together (the vision
pipeline, uploads and on-demand analysis share one detector); in between, an upload is answered
at once, without objects, saying "Vision model unavailable".
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ai_server.media.analysis import MODEL_UNAVAILABLE, ImageAnalyser
from ai_server.store import MediaStore
from ai_server.vision.config import VisionConfig
from ai_server.vision.detector import LOAD_RETRY_FIRST_S, YoloDetector
from ai_server.vision.pipeline import Frame, VisionPipeline
from hub.metrics import HubMetrics
from hub.vision.service import VisionService
from shared.config import HubSettings, VideoSettings, load
from tests.ai_server.vision.conftest import Clock, person, scene
from tests.hub.vision.conftest import Clock as HubClock
from tests.hub.vision.conftest import scene as camera_scene
from tests.hub.vision.conftest import video_frame, with_square

pytestmark = pytest.mark.timeout(120)


# ----- H6: nothing per camera outlives its stream -----


@pytest.mark.unit
async def test_cameras_that_went_away_leave_nothing_per_device_and_ids_keep_increasing() -> None:
    clock = HubClock()
    vision = VisionService(load(HubSettings, hub_ai_server="127.0.0.1:9"), load(VideoSettings), HubMetrics(clock),
                           clock=clock)
    base = camera_scene()
    try:
        ids: list[int] = []
        for n in range(200):  # made-up camera ids, one stream each
            feed = vision.open_camera(f"cam-{n}")
            clock.advance(0.1)
            await vision.handle(feed, video_frame(base))
            vision.close_camera(feed, "ended")
        assert vision.cameras == {}
        # No per-device map is left holding the 200 ids (the fps limiter is an LRU of its own, capped).
        assert not [name for name, value in vars(vision).items() if isinstance(value, dict) and value]
        # A camera that reconnects goes on with higher frame ids than its previous stream's.
        for _ in range(2):
            feed = vision.open_camera("cam-r")
            for i in range(3):
                clock.advance(0.1)
                send = feed.decide(video_frame(with_square(base, 40 * i, 100)), clock())
                msg = None if send is None else feed.build(video_frame(base), send, 0)
                if msg is not None:
                    ids.append(msg.frame_id)
            vision.close_camera(feed, "replaced")
        assert len(ids) >= 4 and ids == sorted(ids) and len(set(ids)) == len(ids)
    finally:
        await vision.stop()


# ----- M6: one cached failure for every caller of the detector -----


@pytest.mark.integration
async def test_uploads_share_the_pipelines_failed_load_and_are_answered_without_a_retry(
    media_store: MediaStore, truncated_pt: Path
) -> None:
    clock = Clock()
    detector = YoloDetector(truncated_pt, device="cpu", clock=clock)
    # As the AI server wires them: the pipeline and the analyser of uploads hold the same detector.
    vp = VisionPipeline(detector, VisionConfig(), store=media_store, clock=clock,
                        wall=lambda: datetime(2026, 6, 1, 12, 0, tzinfo=UTC))
    analyser = ImageAnalyser(detector, None)
    try:
        first = await vp.analyse(Frame("cam-1", scene(person(40, 40)), frame_id=1))
        assert first.error.startswith("vision model unavailable:")
        assert detector.loading.failures == 1 and vp.model_error is not None

        for _ in range(5):  # within the back-off: answered at once, no new load
            clock.advance(0.5)
            started = time.perf_counter()
            found = await analyser.analyse(scene(person(60, 40)), source="http_upload", session_id="web-1")
            assert time.perf_counter() - started < 1.0
            assert found.model_error is not None and found.model_error.startswith("vision model unavailable:")
            assert found.context.analysis.description.startswith(MODEL_UNAVAILABLE)
            assert found.context.analysis.objects == [] and found.yolo_ms == 0.0
        assert detector.loading.failures == 1 and analyser.model_unavailable == 5

        clock.advance(LOAD_RETRY_FIRST_S)  # the back-off ran out: the next caller, whichever, tries once more
        found = await analyser.analyse(scene(person(60, 40)), source="http_upload", session_id="web-1")
        assert found.model_error is not None and detector.loading.failures == 2
        again = await vp.analyse(Frame("cam-1", scene(person(44, 40)), frame_id=2))  # the doubled back-off
        assert again.error.startswith("vision model unavailable:") and detector.loading.failures == 2
        assert vp.metrics.events["model_load_failures"] == 1  # the pipeline's own attempts
    finally:
        await vp.stop()
