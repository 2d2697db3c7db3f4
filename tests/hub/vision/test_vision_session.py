"""Real aiortc camera devices -> hub motion gate -> the fake AI server's AnalyzeFrames, and cameras leaving.

The devices use the Pi agent's own camera track (device_agent.camera: the synthetic moving
square, paced in real time) over VP8/RTP/DTLS/ICE on loopback.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from device_agent.camera import Camera, SyntheticSource
from tests.hub.conftest import HubFactory, connect_device, get_json, get_text, until
from tests.hub.vision.conftest import VisionAI, connect_camera_device, decode, frames_grow

pytestmark = pytest.mark.integration

SPEC_FIELDS = {"status", "uptime_secs", "active_devices", "grpc_connected", "frames_forwarded", "vad_onsets",
               "vad_ends", "tts_frames_routed", "grpc_reconnects"}


def camera(fps: int = 10) -> Camera:
    return Camera(SyntheticSource(320, 240, fps), fps)


async def test_camera_frames_reach_the_ai_server_and_a_camera_that_leaves_is_cleaned_up(
    make_hub: HubFactory, fake_ai: VisionAI
) -> None:
    hub = await make_hub()
    vision_service = hub.vision
    assert vision_service is not None
    cam_a, cam_b = camera(), camera()
    a, a_video = await connect_camera_device(hub.url, "cam-a", cam_a.track())
    b, _ = await connect_camera_device(hub.url, "cam-b", cam_b.track())
    try:
        await frames_grow(fake_ai, "cam-a", 4, 20)
        await frames_grow(fake_ai, "cam-b", 4, 20)
        frames = fake_ai.frames["cam-a"]
        # The stream's first frame goes at once as a refresh; then the moving square's motion frames.
        assert frames[0].refresh and frames[0].motion_score == 0.0
        assert all(not f.refresh and f.motion_score >= 0.005 for f in frames[1:])
        ids = [f.frame_id for f in frames]
        assert ids == sorted(ids) and len(set(ids)) == len(ids)
        now_ms = time.time() * 1000
        assert all(now_ms - 20_000 < f.timestamp_ms <= now_ms for f in frames)
        img = decode(frames[-1].jpeg)
        assert img.shape == (240, 320, 3) and (frames[-1].width, frames[-1].height) == (320, 240)
        assert float(np.std(img)) > 10  # a picture, not a blank
        # Every 3rd motion frame (VIDEO_PROCESS_EVERY_N_FRAMES) goes to detection, no more.
        st = vision_service.cameras["cam-a"].stats
        assert st.forwarded <= st.motion_frames // 3 + 1 and st.motion_frames >= 3 * (st.forwarded - 1)

        await until(lambda: hub.metrics.vision_detections >= 2, 10, "detections counted")
        status, detail = await get_json(f"{hub.url}/health?detail=1")
        assert status == 200
        vision = detail["vision"]
        assert vision["enabled"] and vision["connected"]
        assert [c["device_id"] for c in vision["cameras"]] == ["cam-a", "cam-b"]
        entry = vision["cameras"][0]
        assert entry["frames_in"] > 0 and entry["forwarded"] > 0 and entry["refreshes"] >= 1
        assert entry["last_result"]["labels"] == ["square"] and entry["source_size"] == "320x240"
        _, plain = await get_json(f"{hub.url}/health")
        assert set(plain) == SPEC_FIELDS
        metrics = await get_text(f"{hub.url}/metrics")
        assert "naila_hub_vision_frames_forwarded_total" in metrics and "naila_hub_vision_cameras 2.0" in metrics

        # cam-a's camera goes away mid-stream (its sender stops: RTCP BYE) while its microphone stays.
        await a_video.sender.stop()
        await until(lambda: "cam-a" not in vision_service.cameras, 10, "cam-a's camera state cleaned up")
        assert "cam-a" in hub.sessions and not hub.sessions["cam-a"].closed
        await frames_grow(fake_ai, "cam-b", 3, 10)  # the other camera keeps going

        # cam-b's whole peer dies: its session and its camera go.
        await b.close()
        await until(lambda: "cam-b" not in vision_service.cameras and "cam-b" not in hub.sessions, 10,
                    "cam-b cleaned up")
        assert vision_service.cameras == {}
        _, detail = await get_json(f"{hub.url}/health?detail=1")
        assert detail["vision"]["cameras"] == []
        assert hub.metrics.vision_frame_errors.total() == 0
    finally:
        await a.close()
        await b.close()
        cam_a.close()
        cam_b.close()


async def test_a_reconnecting_camera_keeps_its_frame_ids_increasing(make_hub: HubFactory, fake_ai: VisionAI) -> None:
    hub = await make_hub()
    cam = camera()
    first, _ = await connect_camera_device(hub.url, "cam-r", cam.track())
    try:
        await frames_grow(fake_ai, "cam-r", 2, 20)
        second, _ = await connect_camera_device(hub.url, "cam-r", cam.track())  # replaces the first session
        try:
            await frames_grow(fake_ai, "cam-r", 3, 20)
            ids = [f.frame_id for f in fake_ai.frames["cam-r"]]
            assert ids == sorted(ids) and len(set(ids)) == len(ids)
            assert sum(f.refresh for f in fake_ai.frames["cam-r"]) >= 2  # each stream starts with a refresh
            assert hub.vision is not None and list(hub.vision.cameras) == ["cam-r"]
        finally:
            await second.close()
    finally:
        await first.close()
        cam.close()


async def test_with_vision_off_video_is_read_and_discarded(make_hub: HubFactory, fake_ai: VisionAI) -> None:
    hub = await make_hub(hub_vision=False, hub_dead_peer_timeout_s=2.0)
    cam = camera()
    dev, _ = await connect_camera_device(hub.url, "cam-off", cam.track())
    plain = await connect_device(hub.url, "mic-only")
    try:
        await until(lambda: cam.frames_read > 20, 10, "the camera streaming")
        assert hub.vision is None and fake_ai.vision_streams == 0 and not fake_ai.frames
        assert hub.metrics.vision_frames_in == 0 and "cam-off" in hub.sessions
        _, detail = await get_json(f"{hub.url}/health?detail=1")
        assert detail["vision"] == {"enabled": False}
    finally:
        await dev.close()
        await plain.close()
        cam.close()
