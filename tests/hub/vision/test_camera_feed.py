"""One camera's feed on a hand-driven clock: refreshes, forwarded frames, frame fields, bad input."""

from __future__ import annotations

import itertools
import logging
from typing import Any

import numpy as np
import pytest
from aiortc.mediastreams import MediaStreamError
from av import VideoFrame

from hub.metrics import HubMetrics
from hub.vision import camera as camera_mod
from hub.vision.camera import CameraFeed
from hub.vision.frames import FrameError
from hub.vision.motion import MotionGate
from hub.vision.service import VisionService
from shared.config import HubSettings, VideoSettings, load
from tests.hub.vision.conftest import Clock, decode, scene, video_frame, with_square

pytestmark = pytest.mark.unit

FPS = 8  # 0.125 s steps are exact in binary: refresh times compare exactly


def feed(clock: Clock, metrics: HubMetrics | None = None, refresh_s: float = 10.0, n: int = 3) -> CameraFeed:
    return CameraFeed("cam-1", MotionGate(25, 0.005, n), itertools.count(1), metrics or HubMetrics(clock),
                      refresh_s=refresh_s, frame_box=(320, 240), jpeg_quality=80, started_at=clock())


def test_a_still_camera_sends_a_refresh_at_once_then_every_refresh_s() -> None:
    clock = Clock()
    f = feed(clock)
    still = video_frame(scene())
    sent = []
    for _ in range(35 * FPS):  # 35 s of a still scene
        s = f.decide(still, clock())
        if s is not None:
            sent.append((round(clock() - 1000.0, 1), s.refresh))
        clock.advance(1 / FPS)
    assert sent == [(0.0, True), (10.0, True), (20.0, True), (30.0, True)]
    assert f.stats.frames_in == 35 * FPS and f.stats.motion_frames == 0 and f.stats.forwarded == 0
    assert f.stats.refreshes == 4
    assert f.gate_fps() == pytest.approx(FPS)


def test_motion_is_forwarded_every_nth_and_resets_the_refresh_timer() -> None:
    clock = Clock()
    m = HubMetrics(clock)
    f = feed(clock, m, refresh_s=10.0, n=3)
    base = scene()
    assert f.decide(video_frame(base), clock()) is not None  # the stream's first frame: a refresh
    moving = []
    last_forward_at = 0.0
    for i in range(30):  # a square crossing the room
        clock.advance(1 / FPS)
        s = f.decide(video_frame(with_square(base, 20 + 18 * i, 200)), clock())
        moving.append(s)
        if s is not None:
            last_forward_at = clock()
    forwarded = [i for i, s in enumerate(moving) if s is not None]
    assert forwarded == list(range(0, 30, 3))
    assert all(not s.refresh and s.score > 0.005 for s in moving if s is not None)
    # The square leaves; the scene is still again: the next refresh is 10 s after the last forward.
    clock.advance(1 / FPS)
    refresh_at = None
    for _ in range(15 * FPS):
        s = f.decide(video_frame(base), clock())
        if s is not None and s.refresh:
            refresh_at = clock()
            break
        clock.advance(1 / FPS)
    assert refresh_at is not None and refresh_at - last_forward_at == 10.0
    assert m.vision_frames_forwarded == 10 and m.vision_refreshes == 2 and m.vision_motion_frames >= 30


def test_a_built_frame_has_the_contract_fields() -> None:
    clock = Clock()
    f = feed(clock)
    frame = video_frame(scene())
    send = f.decide(frame, clock())
    assert send is not None
    first = f.build(frame, send, wall_ms=1_700_000_000_123)
    second = f.build(frame, send, wall_ms=1_700_000_000_456)
    assert first is not None and second is not None
    assert first.device_id == "cam-1" and first.refresh and first.motion_score == 0.0
    assert (first.width, first.height) == (320, 240) and first.timestamp_ms == 1_700_000_000_123
    assert second.frame_id == first.frame_id + 1
    img = decode(first.jpeg)
    assert img.shape == (240, 320, 3)
    # The JPEG is the scene, scaled: compare with the source at the same size.
    src = scene()[::2, ::2].astype(np.int16)
    assert np.abs(img.astype(np.int16) - src).mean() < 8


def test_odd_sizes_keep_their_aspect_and_are_never_enlarged() -> None:
    clock = Clock()
    f = feed(clock)
    for (w, h), expect in (((1280, 720), (320, 180)), ((641, 479), (320, 239)), ((160, 90), (160, 90)),
                           ((3, 5), (3, 5))):
        frame = VideoFrame(w, h, "yuv420p")
        send = f.decide(frame, clock())
        msg = f.build(frame, send or camera_mod.Send(True, 0.0), 1)
        assert msg is not None and (msg.width, msg.height) == expect
        assert decode(msg.jpeg).shape[:2] == (expect[1], expect[0])


def test_bad_frames_are_counted_and_logged_never_raised(caplog: pytest.LogCaptureFixture,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    m = HubMetrics(clock)
    f = feed(clock, m)
    empty = VideoFrame(0, 0, "yuv420p")
    with caplog.at_level(logging.DEBUG, "naila.hub.vision"):
        for _ in range(3):
            assert f.decide(empty, clock()) is None
    assert f.stats.decode_errors == 3 and m.vision_frame_errors["decode"] == 3
    assert sum("decode error #1 " in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING) == 1
    # An encoder failure (cv2.imencode says no): counted, no frame, the next one works again.
    good = video_frame(scene())
    send = f.decide(good, clock())
    assert send is not None
    monkeypatch.setattr(camera_mod, "encode_jpeg", _failing_encode)
    assert f.build(good, send, 1) is None
    assert f.stats.encode_errors == 1 and m.vision_frame_errors["encode"] == 1
    monkeypatch.undo()
    assert f.build(good, send, 1) is not None


def _failing_encode(*args: object) -> None:
    raise FrameError("JPEG encoding of a 320x240 frame failed")


async def test_with_the_ai_server_away_chosen_frames_are_dropped_and_counted_without_encoding() -> None:
    clock = Clock()
    settings = load(HubSettings, hub_ai_server="127.0.0.1:9", hub_vision_refresh_s=5.0)
    m = HubMetrics(clock)
    vision = VisionService(settings, load(VideoSettings), m, clock=clock)
    try:
        cam = vision.open_camera("cam-x")
        base = scene()
        await vision.handle(cam, video_frame(base))  # first frame: a refresh, but nowhere to send it
        for i in range(9):
            clock.advance(0.1)
            await vision.handle(cam, video_frame(with_square(base, 30 * i, 100)))
        assert cam.stats.refreshes == 1 and cam.stats.forwarded == 3
        assert cam.stats.dropped == 4 and m.vision_frames_dropped["ai_disconnected"] == 4
        assert m.vision_frames_sent == 0
        cameras: Any = vision.details()["cameras"]
        [detail] = cameras
        assert detail["device_id"] == "cam-x" and detail["frames_in"] == 10 and detail["dropped"] == 4
        vision.close_camera(cam, "ended")
        assert vision.cameras == {}
    finally:
        await vision.stop()


def test_a_refresh_request_sends_the_next_still_frame_at_once() -> None:
    clock = Clock()
    f = feed(clock)
    still = video_frame(scene())
    assert f.decide(still, clock()) is not None  # the stream's first frame
    clock.advance(1.0)
    assert f.decide(still, clock()) is None  # 1 s later: nothing new to say
    f.request_refresh()  # the AI stream (re)connected: the AI server may know nothing
    clock.advance(0.125)
    s = f.decide(still, clock())
    assert s is not None and s.refresh


class ScriptedTrack:
    """A video track: the given frames, then the end of the stream."""

    kind = "video"

    def __init__(self, frames: list[VideoFrame]) -> None:
        self.frames = list(frames)
        self.read = 0

    async def recv(self) -> VideoFrame:
        if not self.frames:
            raise MediaStreamError
        self.read += 1
        return self.frames.pop(0)


async def test_a_failing_pipeline_costs_the_camera_not_the_session(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock()
    vision = VisionService(load(HubSettings, hub_ai_server="127.0.0.1:9"), load(VideoSettings), HubMetrics(clock),
                           clock=clock)
    track = ScriptedTrack([video_frame(scene())] * 20)
    seen = []

    def boom(self: CameraFeed, frame: VideoFrame) -> None:
        raise RuntimeError("a bug in the gate")

    monkeypatch.setattr(CameraFeed, "look", boom)  # runs in the worker thread: the error comes back
    try:
        with caplog.at_level(logging.INFO, "naila.hub.vision"):
            await vision.consume("cam-bug", track, on_frame=lambda: seen.append(1))
        # Logged once, the camera forgotten, and the rest of the track still read (aiortc's queue drained).
        assert sum("camera pipeline failed" in r.getMessage() for r in caplog.records) == 1
        assert vision.cameras == {} and track.read == 20 and len(seen) == 20
    finally:
        await vision.stop()
