"""Vision test kit: a fake AI server that also implements AnalyzeFrames, camera device peers, frames.

The fake AI server (the one fake, at the gRPC boundary) records every VisionFrame and answers
each, in order, with a VisionResult (one "square" detection for motion frames, none for
refreshes), unless ``hold`` is cleared, which makes it stop answering (a slow or hung detector).
It replaces tests/hub's ``fake_ai`` for everything under tests/hub/vision, so ``make_hub`` dials it.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any

import cv2
import numpy as np
import pytest
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCRtpTransceiver, RTCSessionDescription
from av import VideoFrame

from shared.contract import pb
from tests.hub.conftest import Device, FakeAI, SpeechSource, post_connect, until


class VisionAI(FakeAI):
    """FakeAI plus AnalyzeFrames."""

    def __init__(self) -> None:
        super().__init__()
        self.frames: dict[str, list[pb.VisionFrame]] = defaultdict(list)
        self.vision_streams = 0
        self.hold = asyncio.Event()  # cleared: read one more frame, then answer nothing until set
        self.hold.set()

    def all_frames(self) -> list[pb.VisionFrame]:
        return [f for frames in self.frames.values() for f in frames]

    async def AnalyzeFrames(self, request_iterator: AsyncIterator[pb.VisionFrame], context: Any
                            ) -> AsyncIterator[pb.VisionResult]:
        self.vision_streams += 1
        async for frame in request_iterator:
            self.frames[frame.device_id].append(frame)
            await self.hold.wait()
            detections = [] if frame.refresh else [
                pb.Detection(label="square", confidence=0.9, bbox=pb.BoundingBox(x=1, y=2, w=3, h=4), track_id=-1)
            ]
            yield pb.VisionResult(device_id=frame.device_id, frame_id=frame.frame_id,
                                  timestamp_ms=frame.timestamp_ms, detections=detections, inference_ms=7)


@pytest.fixture
async def fake_ai() -> AsyncIterator[VisionAI]:
    ai = VisionAI()
    await ai.start()
    yield ai
    await ai.stop()


def decode(jpeg: bytes) -> np.ndarray:
    img = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert img is not None, "not a JPEG"
    return img


# ----- generated scenes -----


def scene(width: int = 640, height: int = 480, seed: int = 1) -> np.ndarray:
    """A still, textured BGR scene (a gradient with some shapes)."""
    rng = np.random.default_rng(seed)
    img = np.zeros((height, width, 3), np.uint8)
    img[..., 0] = np.linspace(30, 200, width, dtype=np.uint8)[None, :]
    img[..., 1] = np.linspace(40, 160, height, dtype=np.uint8)[:, None]
    img[..., 2] = 90
    for _ in range(6):
        x, y = int(rng.integers(0, width - 60)), int(rng.integers(0, height - 60))
        cv2.rectangle(img, (x, y), (x + 50, y + 40), tuple(int(c) for c in rng.integers(0, 255, 3)), -1)
    return img


def with_square(img: np.ndarray, x: int, y: int, side: int = 80, color: tuple[int, int, int] = (0, 230, 255)
                ) -> np.ndarray:
    out = img.copy()
    out[y : y + side, x : x + side] = color
    return out


def video_frame(img: np.ndarray) -> VideoFrame:
    """As aiortc's decoder hands it over: yuv420p."""
    return VideoFrame.from_ndarray(img, format="bgr24").reformat(format="yuv420p")


class Clock:
    """A hand-driven monotonic clock."""

    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, s: float) -> None:
        self.t += s


# ----- camera devices over real WebRTC -----


async def connect_camera_device(
    url: str, device_id: str, video: MediaStreamTrack
) -> tuple[Device, RTCRtpTransceiver]:
    """A device peer like the Pi agent: a microphone (silence) and a camera track; returns its video transceiver."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    mic = SpeechSource()
    dev = Device(device_id, pc, mic)
    pc.addTransceiver(mic, direction="sendrecv")
    camera = pc.addTransceiver(video, direction="sendonly")
    await pc.setLocalDescription(await pc.createOffer())
    status, body = await post_connect(url, {"device_id": device_id, "sdp": pc.localDescription.sdp})
    assert status == 200, body
    await pc.setRemoteDescription(RTCSessionDescription(sdp=body["sdp"], type="answer"))
    await until(lambda: pc.connectionState == "connected", 10, f"{device_id} connected")
    return dev, camera


async def frames_grow(ai: VisionAI, device_id: str, by: int, within_s: float) -> None:
    start = len(ai.frames[device_id])
    await until(lambda: len(ai.frames[device_id]) >= start + by, within_s, f"{by} more frames from {device_id}")

