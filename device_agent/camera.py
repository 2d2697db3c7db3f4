"""Camera sources (Pi camera, a V4L2/USB webcam, a file, a synthetic scene), the WebRTC video track and JPEG
snapshots, and the privacy switch (camera off: the source is closed and the track sends black frames).

Sources are blocking (``read()`` returns the next frame) and are called from a worker thread,
so a slow camera or decoder never stalls the event loop that also carries the audio.
``picamera2`` is Raspberry Pi OS's apt package, seen from a ``--system-site-packages`` venv
(scripts/install-pi-os.sh --camera); it is imported lazily and nothing else needs it.
"""

from __future__ import annotations

import asyncio
import fractions
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import VideoFrame

from shared.config import ConfigError, DeviceSettings, VideoSettings
from shared.errors import one_line

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


class AvSource:
    """A V4L2 webcam (``/dev/video0``) or a recorded MJPEG/H.264 stream, demuxed and decoded by PyAV.

    The same code reads both: ``av.open(url, format=..., options=...)``, decode, scale. A live
    device is opened with the ``v4l2`` demuxer and asked for ``video_size``/``framerate``/
    ``input_format`` (the driver may pick the nearest it has; frames are scaled to the configured
    size anyway). A recorded stream is looped, like :class:`FileSource`.
    """

    def __init__(
        self,
        url: str,
        width: int,
        height: int,
        *,
        demuxer: str | None = None,
        options: dict[str, str] | None = None,
        loop: bool = False,
    ) -> None:
        self.url = url
        self.width, self.height = width, height
        self.demuxer = demuxer
        self.options = dict(options or {})
        self.loop = loop
        self.name = f"{demuxer or 'av'} {url} {width}x{height}"
        self._container: Any = None
        self._frames: Any = None
        self._open()  # fail at start-up, with the reason, rather than on the first frame

    def _open(self) -> None:
        self.close()
        try:
            self._container = av.open(self.url, format=self.demuxer, options=self.options)
        except (OSError, av.FFmpegError) as exc:
            raise ConfigError(f"camera {self.url}: cannot open ({one_line(exc, with_type=False)})") from None
        stream = self._container.streams.video[0] if self._container.streams.video else None
        if stream is None:
            self.close()
            raise ConfigError(f"camera {self.url}: no video stream")
        self.codec = stream.codec_context.name
        self._frames = self._container.decode(stream)

    def read(self) -> VideoFrame:
        for _attempt in range(2):
            if self._frames is None:
                self._open()
            try:
                frame = next(self._frames)
            except StopIteration:
                if not self.loop:
                    raise OSError(f"camera {self.url}: end of stream") from None
                self._frames = None
                continue
            scaled: VideoFrame = frame.reformat(width=self.width, height=self.height, format="rgb24")
            return scaled
        raise OSError(f"camera {self.url}: no video frames")

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
                "DEVICE_CAMERA=picamera2 needs Raspberry Pi OS's python3-picamera2 seen from the venv "
                f"(scripts/install-pi-os.sh --camera): {exc}"
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


class CameraOff(Exception):
    """The camera is switched off (the privacy command): no frames, no snapshots, no clips."""


#: After a read error (a webcam unplugged, a driver hiccup), black frames for this long, then reopen.
REOPEN_AFTER_S = 2.0


class Camera:
    """One source shared by the WebRTC track, on-demand snapshots and clips; switchable off for privacy.

    Off closes the source, so the sensor stops (and a webcam's LED goes out); on opens a new one
    with ``reopen``. A source that fails to read is closed and reopened after
    :data:`REOPEN_AFTER_S`; meanwhile the track sends black frames, so the session stays up.
    """

    def __init__(
        self,
        source: FrameSource,
        fps: int,
        *,
        reopen: Callable[[], FrameSource] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.source: FrameSource | None = source
        self.name = source.name
        self.width, self.height = source.width, source.height
        self.fps = fps
        self._reopen = reopen
        self._clock = clock
        self._lock = threading.Lock()
        self._latest: tuple[float, VideoFrame] | None = None
        self._enabled = True
        self._failed_at: float | None = None
        self.frames_read = 0
        self.read_errors = 0
        self.black = VideoFrame.from_ndarray(np.zeros((self.height, self.width, 3), dtype=np.uint8), format="rgb24")

    @property
    def enabled(self) -> bool:
        return self._enabled

    def set_enabled(self, enabled: bool) -> None:
        """The privacy switch: off closes the source at once, on opens it again on the next read."""
        with self._lock:
            if enabled == self._enabled:
                return
            self._enabled = enabled
            self._latest = None
            if not enabled:
                self._close_source()
        log.info("camera %s", "on" if enabled else "off (privacy)")

    def _close_source(self) -> None:
        if self.source is not None:
            try:
                self.source.close()
            except Exception as exc:  # closing a broken device must not stop the switch
                log.warning("camera close failed: %s", one_line(exc, with_type=False))
            if self._reopen is not None:
                self.source = None

    def read_blocking(self) -> VideoFrame:
        """The next frame; raises :class:`CameraOff` when switched off, black while a broken source waits."""
        with self._lock:
            if not self._enabled:
                raise CameraOff("the camera is off")
            if self._failed_at is not None and self._clock() - self._failed_at < REOPEN_AFTER_S:
                return self.black
            try:
                if self.source is None:
                    assert self._reopen is not None
                    self.source = self._reopen()
                frame = self.source.read()
            except Exception as exc:
                self.read_errors += 1
                if self._failed_at is None:
                    log.warning(
                        "camera %s: %s; retrying every %.0f s",
                        self.name,
                        one_line(exc, with_type=False),
                        REOPEN_AFTER_S,
                    )
                self._failed_at = self._clock()
                self._close_source()
                return self.black
            if self._failed_at is not None:
                log.info("camera %s is back", self.name)
                self._failed_at = None
            self._latest = (self._clock(), frame)
            self.frames_read += 1
            return frame

    async def read(self) -> VideoFrame:
        return await asyncio.to_thread(self.read_blocking)

    async def current(self) -> VideoFrame:
        """The current view: the track's latest frame when it is fresh, else a new read."""
        if not self._enabled:
            raise CameraOff("the camera is off")
        latest = self._latest
        if latest is not None and self._clock() - latest[0] < 2.0 / self.fps:
            return latest[1]
        return await self.read()

    async def snapshot(self, quality: int = 85, size: tuple[int, int] | None = None) -> Snapshot:
        """A JPEG of the current view (reuses the track's latest frame when it is fresh)."""
        frame = await self.current()
        return await asyncio.to_thread(encode_jpeg, frame, quality, size)

    def track(self) -> CameraTrack:
        return CameraTrack(self)

    def close(self) -> None:
        with self._lock:
            if self.source is not None:
                self.source.close()


#: While the camera is off the track sends one black frame a second: the hub's session and its
#: dead-peer watchdog stay as they are (the track set is fixed at offer time, there is no
#: renegotiation), and a black VP8 frame costs next to nothing.
OFF_FPS = 1


class CameraTrack(MediaStreamTrack):
    """Video frames from a :class:`Camera`, paced at its frame rate on a 90 kHz clock (black, 1/s, when off)."""

    kind = "video"

    def __init__(self, camera: Camera) -> None:
        super().__init__()
        self.camera = camera
        self._period = 1.0 / camera.fps
        self._time_base = fractions.Fraction(1, VIDEO_CLOCK_RATE)
        self._start: float | None = None
        self._n = 0
        self.black_frames = 0

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
        step = 1
        try:
            frame = await self.camera.read()
        except CameraOff:
            frame = self.camera.black
            step = max(1, self.camera.fps // OFF_FPS)  # the next frame is due a second later
        if frame is self.camera.black:
            self.black_frames += 1
            frame = VideoFrame.from_ndarray(frame.to_ndarray(), format="rgb24")  # pts is per frame: a copy
        frame.pts = round(self._n * self._period * VIDEO_CLOCK_RATE)
        frame.time_base = self._time_base
        self._n += step
        return frame


def v4l2_source(device: DeviceSettings, width: int, height: int, fps: int) -> AvSource:
    """``DEVICE_CAMERA=v4l2``: the webcam ``DEVICE_CAMERA_DEVICE`` names (a recorded stream when it is a file)."""
    from device_agent.devices import resolve_camera

    path = resolve_camera(device.device_camera_device)
    if Path(path).is_file():  # a recorded MJPEG/H.264 stream through the same code, looped
        return AvSource(path, width, height, loop=True)
    options = {"video_size": f"{width}x{height}", "framerate": str(fps)}
    if device.device_camera_input_format:
        options["input_format"] = device.device_camera_input_format
    return AvSource(path, width, height, demuxer="v4l2", options=options)


def make_camera(device: DeviceSettings, video: VideoSettings) -> Camera | None:
    """The camera ``DEVICE_CAMERA`` names at ``VIDEO_RESOLUTION`` / ``VIDEO_MAX_FPS``, or None."""
    width, height = video.resolution
    fps = video.video_max_fps
    if device.device_camera == "none":
        return None
    opener: Callable[[], FrameSource]
    if device.device_camera == "synthetic":
        opener = partial(SyntheticSource, width, height, fps)
    elif device.device_camera == "file":
        if not device.device_camera_file:
            raise ConfigError("DEVICE_CAMERA=file needs DEVICE_CAMERA_FILE")
        opener = partial(FileSource, device.device_camera_file, width, height)
    elif device.device_camera == "v4l2":
        opener = partial(v4l2_source, device, width, height, fps)
    else:
        opener = partial(PiCameraSource, width, height, fps)
    source = opener()  # the first open fails at start-up with its reason
    log.info("camera: %s at %d fps", source.name, fps)
    return Camera(source, fps, reopen=opener)
