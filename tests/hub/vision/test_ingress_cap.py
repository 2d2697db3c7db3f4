"""Camera ingress cap at the hub (issue 18, M5): frames over 1280x720 or 15 fps, or arriving while
aiortc's decoded-frame queue is backed up, are dropped before the motion gate and counted."""

from __future__ import annotations

import asyncio

import pytest
from av import VideoFrame

from hub.metrics import HubMetrics
from hub.vision.service import FPS_BURST, MAX_FPS, MAX_TRACK_BACKLOG, VisionService
from shared.config import HubSettings, VideoSettings, load
from tests.hub.vision.conftest import Clock, scene, video_frame

pytestmark = pytest.mark.unit


def service(clock: Clock) -> tuple[VisionService, HubMetrics]:
    m = HubMetrics(clock)
    return VisionService(load(HubSettings, hub_ai_server="127.0.0.1:9"), load(VideoSettings), m, clock=clock), m


async def test_frames_above_1280x720_never_reach_the_gate() -> None:
    clock = Clock()
    vision, m = service(clock)
    try:
        cam = vision.open_camera("cam-4k")
        big = VideoFrame(1920, 1080, "yuv420p")
        for _ in range(10):
            clock.advance(0.1)
            await vision.handle(cam, big)
        assert m.vision_frames_dropped["too_large"] == 10 and cam.stats.frames_in == 0
        hd = VideoFrame(1280, 720, "yuv420p")  # exactly the cap: accepted
        clock.advance(0.1)
        await vision.handle(cam, hd)
        assert cam.stats.frames_in == 1
    finally:
        await vision.stop()


async def test_a_camera_is_held_to_15_fps_on_average_and_another_camera_is_not_charged() -> None:
    clock = Clock()
    vision, m = service(clock)
    try:
        fast, calm = vision.open_camera("cam-fast"), vision.open_camera("cam-calm")
        frame = video_frame(scene())
        for i in range(4 * 60):  # 4 s at 60 fps
            clock.advance(1 / 60)
            await vision.handle(fast, frame)
            if i % 6 == 0:  # 10 fps
                await vision.handle(calm, frame)
        assert fast.stats.frames_in <= 4 * MAX_FPS + FPS_BURST + 1
        assert m.vision_frames_dropped["too_fast"] == 4 * 60 - fast.stats.frames_in
        assert calm.stats.frames_in == 40  # under the cap: every frame gated
    finally:
        await vision.stop()


class BackedUpTrack:
    """A track whose decoded-frame queue (aiortc keeps it unbounded) is already deep."""

    kind = "video"

    def __init__(self, frames: int, depth: int) -> None:
        self._queue: asyncio.Queue[None] = asyncio.Queue()
        for _ in range(depth):
            self._queue.put_nowait(None)
        self.left = frames
        self.clock: Clock | None = None

    async def recv(self) -> VideoFrame:
        from aiortc.mediastreams import MediaStreamError

        if not self.left:
            raise MediaStreamError
        self.left -= 1
        if self.clock is not None:
            self.clock.advance(0.1)
        return video_frame(scene())


async def test_frames_are_dropped_while_the_decoded_frame_queue_is_backed_up() -> None:
    clock = Clock()
    vision, m = service(clock)
    try:
        track = BackedUpTrack(frames=5, depth=MAX_TRACK_BACKLOG + 1)
        track.clock = clock
        await vision.consume("cam-slow", track)
        assert m.vision_frames_dropped["backlog"] == 5
    finally:
        await vision.stop()
