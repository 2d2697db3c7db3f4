"""Camera sources (Pi camera, a file, a synthetic scene), the WebRTC video track and JPEG snapshots.

Sources are blocking (``read()`` returns the next frame) and are called from a worker thread,
so a slow camera or decoder never stalls the event loop that also carries the audio.
``picamera2`` exists only on Raspberry Pi OS; it is imported lazily (optional ``camera`` extra)
and nothing else needs it.
"""

from __future__ import annotations

import asyncio
import fractions
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import VideoFrame

from shared.config import ConfigError, DeviceSettings, VideoSettings

log = logging.getLogger(__name__)

VIDEO_CLOCK_RATE = 90_000
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff"}


class FrameSource(Protocol):
    width: int
    height: int
    name: str

    def read(self) -> VideoFrame:
        """The next frame at ``width`` x ``height`` (may block for up to a frame period)."""
        ...

    def close(self) -> None: ...


class SyntheticSource:
    """A moving square over a gradient, with a frame counter bar: motion for the hub's detector."""

    def __init__(self, width: int, height: int, fps: int = 15) -> None:
        self.width, self.height, self.fps = width, height, fps
        self.name = f"synthetic {width}x{height}"
        self._n = 0
        x = np.linspace(0, 255, width, dtype=np.float32)
        y = np.linspace(0, 255, height, dtype=np.float32)
        bg = np.empty((height, width, 3), dtype=np.uint8)
        bg[..., 0] = (x[None, :] * 0.5).astype(np.uint8)
        bg[..., 1] = (y[:, None] * 0.5).astype(np.uint8)
        bg[..., 2] = 64
        self._bg = bg

    def read(self) -> VideoFrame:
        img = self._bg.copy()
        side = max(4, min(self.width, self.height) // 5)
        t = self._n / max(self.fps, 1)
        cx = int((0.5 + 0.4 * np.sin(2 * np.pi * t / 4)) * (self.width - side))
        cy = int((0.5 + 0.4 * np.cos(2 * np.pi * t / 4)) * (self.height - side))
        img[cy : cy + side, cx : cx + side] = (255, 220, 0)
        bar = (self._n % 64) * self.width // 64
        img[-4:, :bar] = 255
        self._n += 1
        return VideoFrame.from_ndarray(img, format="rgb24")

    def close(self) -> None:
        pass


class FileSource:
    """An image (repeated) or a video (looped) read with PyAV, scaled to the configured size."""

    def __init__(self, path: str | Path, width: int, height: int) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise ConfigError(f"DEVICE_CAMERA_FILE={str(self.path)!r}: no such file")
        self.width, self.height = width, height
        self.name = f"file {self.path.name} {width}x{height}"
        self._container: Any = None
        self._frames: Any = None
        self._still: VideoFrame | None = None
        if self.path.suffix.lower() in IMAGE_SUFFIXES:
            with av.open(str(self.path)) as c:
                first = next(c.decode(video=0))
            self._still = self._scale(first)

    def _scale(self, frame: VideoFrame) -> VideoFrame:
        return frame.reformat(width=self.width, height=self.height, format="rgb24")

    def _open(self) -> None:
        self.close()
        self._container = av.open(str(self.path))
        self._frames = self._container.decode(video=0)

    def read(self) -> VideoFrame:
        if self._still is not None:
            return self._still
        for _attempt in range(2):
            if self._frames is None:
                self._open()
            try:
                return self._scale(next(self._frames))
            except StopIteration:
                self._frames = None  # end of the video: loop
        raise ConfigError(f"DEVICE_CAMERA_FILE={str(self.path)!r}: no video frames")

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
        self._container = None
        self._frames = None


class PiCameraSource:
    """The Raspberry Pi camera through picamera2 (libcamera), RGB frames at the configured size."""

    def __init__(self, width: int, height: int, fps: int) -> None:
        try:
            from picamera2 import Picamera2
        except ImportError as exc:
            raise ConfigError(
                "DEVICE_CAMERA=picamera2 needs picamera2 "
                f"(Raspberry Pi OS, pip install 'naila[camera]'): {exc}"
            ) from None
        self.width, self.height = width, height
        self.name = f"picamera2 {width}x{height}@{fps}"
        self._cam = Picamera2()
        config = self._cam.create_video_configuration(
            main={"size": (width, height), "format": "RGB888"},
            controls={"FrameRate": fps},
        )
        self._cam.configure(config)
        self._cam.start()

    def read(self) -> VideoFrame:
        # picamera2's "RGB888" is BGR byte order in memory.
        array = self._cam.capture_array("main")
        return VideoFrame.from_ndarray(np.ascontiguousarray(array[..., :3]), format="bgr24")

    def close(self) -> None:
        self._cam.stop()
        self._cam.close()


@dataclass(frozen=True)
class Snapshot:
    jpeg: bytes
    width: int
    height: int


def encode_jpeg(frame: VideoFrame, quality: int = 85, size: tuple[int, int] | None = None) -> Snapshot:
    """JPEG-encode one frame with PyAV's mjpeg encoder (no Pillow/OpenCV on the Pi)."""
    if not 1 <= quality <= 100:
        raise ValueError("quality must be 1-100")
    width, height = size or (frame.width, frame.height)
    ctx = av.CodecContext.create("mjpeg", "w")
    ctx.width, ctx.height = width, height
    ctx.pix_fmt = "yuvj420p"
    ctx.time_base = fractions.Fraction(1, 25)
    q = round(2 + (100 - quality) * 29 / 99)  # mjpeg qscale: 2 (best) .. 31 (worst)
    ctx.qmin = ctx.qmax = q
    packets = ctx.encode(frame.reformat(width=width, height=height, format="yuvj420p"))
    packets += ctx.encode(None)
    return Snapshot(b"".join(bytes(p) for p in packets), width, height)


class Camera:
    """One source shared by the WebRTC track and on-demand snapshots."""

    def __init__(self, source: FrameSource, fps: int) -> None:
        self.source = source
        self.fps = fps
        self._lock = threading.Lock()
        self._latest: tuple[float, VideoFrame] | None = None
        self.frames_read = 0

    def read_blocking(self) -> VideoFrame:
        with self._lock:
            frame = self.source.read()
            self._latest = (time.monotonic(), frame)
            self.frames_read += 1
            return frame

    async def read(self) -> VideoFrame:
        return await asyncio.to_thread(self.read_blocking)

    async def snapshot(self, quality: int = 85, size: tuple[int, int] | None = None) -> Snapshot:
        """A JPEG of the current view (reuses the track's latest frame when it is fresh)."""
        latest = self._latest
        if latest is not None and time.monotonic() - latest[0] < 2.0 / self.fps:
            frame = latest[1]
        else:
            frame = await self.read()
        return await asyncio.to_thread(encode_jpeg, frame, quality, size)

    def track(self) -> CameraTrack:
        return CameraTrack(self)

    def close(self) -> None:
        with self._lock:
            self.source.close()


class CameraTrack(MediaStreamTrack):
    """Video frames from a :class:`Camera`, paced at its frame rate on a 90 kHz clock."""

    kind = "video"

    def __init__(self, camera: Camera) -> None:
        super().__init__()
        self.camera = camera
        self._period = 1.0 / camera.fps
        self._time_base = fractions.Fraction(1, VIDEO_CLOCK_RATE)
        self._start: float | None = None
        self._n = 0

    async def recv(self) -> VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        loop = asyncio.get_running_loop()
        if self._start is None:
            self._start = loop.time()
        else:
            due = self._start + self._n * self._period
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            elif wait < -1.0:  # fell far behind (slow camera): restart the schedule
                self._start = loop.time() - self._n * self._period
        frame = await self.camera.read()
        frame.pts = round(self._n * self._period * VIDEO_CLOCK_RATE)
        frame.time_base = self._time_base
        self._n += 1
        return frame


def make_camera(device: DeviceSettings, video: VideoSettings) -> Camera | None:
    """The camera ``DEVICE_CAMERA`` names at ``VIDEO_RESOLUTION`` / ``VIDEO_MAX_FPS``, or None."""
    width, height = video.resolution
    fps = video.video_max_fps
    source: FrameSource
    if device.device_camera == "none":
        return None
    if device.device_camera == "synthetic":
        source = SyntheticSource(width, height, fps)
    elif device.device_camera == "file":
        if not device.device_camera_file:
            raise ConfigError("DEVICE_CAMERA=file needs DEVICE_CAMERA_FILE")
        source = FileSource(device.device_camera_file, width, height)
    else:
        source = PiCameraSource(width, height, fps)
    log.info("camera: %s at %d fps", source.name, fps)
    return Camera(source, fps)
