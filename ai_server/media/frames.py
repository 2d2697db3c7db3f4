"""A representative still from a video clip (spec §8.3 "Video → Frames"), decoded with PyAV.

The middle frame: a device's clip usually starts and ends on whatever triggered and stopped the
recording (a door opening, a hand on the button); the middle is what it was recording for.

A clip is a decode bomb waiting to happen (finding H7): a few kB of VP9 can declare 16384x16384
frames, a tiny file can last hours. So, before any frame is decoded, the container is *probed*:
width x height from the stream header against ``max_pixels`` (AI_MEDIA_MAX_VIDEO_PIXELS), the
duration (header, else the last packet's time from demuxing, which reads packets but decodes
nothing) against ``max_s`` (AI_MEDIA_MAX_VIDEO_S). Then it seeks to the middle and decodes from
the keyframe before it, one pass, each decoded frame checked again (a stream may change size).
Decoding runs in :class:`ClipDecoder`'s own small thread pool (not the default executor that
store writes and OCR share) with a deadline the decoding loop itself checks: a thread cannot be
killed, so it stops itself at the deadline and the caller gets ``timeout`` at the same moment.
"""

from __future__ import annotations

import asyncio
import io
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from typing import Final

import av
import numpy as np
from av.container import InputContainer
from av.video.stream import VideoStream

from ai_server.media.analysis import BadImage, DecodedImage
from ai_server.vision.detector import BGRImage

#: PyAV's demuxer names for the clip formats of spec §8.6.
_CONTAINERS: Final = {"mp4": ("mp4", "mov"), "webm": ("webm", "matroska")}
_MAX_FRAMES: Final = 10_000  # frames decoded after the seek, at most (a keyframe-less clip)


@dataclass(frozen=True, slots=True)
class ClipLimits:
    max_pixels: int = 1920 * 1080  # AI_MEDIA_MAX_VIDEO_PIXELS
    max_s: float = 300.0  # AI_MEDIA_MAX_VIDEO_S
    deadline_s: float = 10.0  # probe, seek and decode together, from when the work was queued


def middle_frame(
    data: bytes, declared: str, limits: ClipLimits | None = None, *, deadline: float | None = None
) -> DecodedImage:
    """The clip's middle frame as BGR (blocking); raises :class:`BadImage` for a clip that does
    not decode, or is over ``limits`` (``oversized``), or is not done by ``deadline`` (``timeout``,
    a ``time.monotonic()`` value; default ``limits.deadline_s`` from now)."""
    lim = limits or ClipLimits()
    until = time.monotonic() + lim.deadline_s if deadline is None else deadline
    fmt = declared.lower()
    if fmt not in _CONTAINERS:
        raise BadImage("unsupported_format", f"{declared} is not one of {', '.join(_CONTAINERS)}")
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            stream, seconds = _probe(container, fmt, lim, until)
            bgr = _decode_middle(container, stream, seconds, lim, until)
    except BadImage:
        raise
    except (av.FFmpegError, OSError, ValueError, IndexError) as exc:
        raise BadImage("corrupt", f"cannot decode the clip: {exc}") from None
    height, width = bgr.shape[:2]
    return DecodedImage(fmt, int(width), int(height), bgr)


def _check_time(until: float) -> None:
    if time.monotonic() > until:
        raise BadImage("timeout", "the clip took too long to decode")


def _check_size(width: int, height: int, lim: ClipLimits) -> None:
    if width * height > lim.max_pixels:
        raise BadImage("oversized", f"{width}x{height} video is over the {lim.max_pixels}-pixel limit")


def _probe(container: InputContainer, fmt: str, lim: ClipLimits, until: float) -> tuple[VideoStream, float]:
    """The video stream and the clip's length in seconds, once both are known to be within ``lim``."""
    names = container.format.name.split(",")
    if not any(n in names for n in _CONTAINERS[fmt]):
        raise BadImage("content_mismatch", f"declared {fmt} but the content is {container.format.name}")
    if not container.streams.video:
        raise BadImage("corrupt", "the clip has no video stream")
    stream = container.streams.video[0]
    width, height = stream.codec_context.width, stream.codec_context.height
    if width <= 0 or height <= 0:
        raise BadImage("corrupt", "the clip's video stream has no size")
    _check_size(width, height, lim)
    seconds = _duration_s(container, stream, until)
    if seconds > lim.max_s:
        raise BadImage("oversized", f"the clip lasts {seconds:.0f} s, over the {lim.max_s:g} s limit")
    return stream, seconds


def _duration_s(container: InputContainer, stream: VideoStream, until: float) -> float:
    """From the header; else (a browser's WebM has none) the last packet's time, demuxed, not decoded."""
    base = stream.time_base or Fraction(1, 1000)
    if stream.duration:
        return float(stream.duration * base)
    if container.duration:
        return container.duration / av.time_base
    last = first = None
    for packet in container.demux(stream):
        if packet.pts is not None:
            first = packet.pts if first is None else min(first, packet.pts)
            last = packet.pts if last is None else max(last, packet.pts)
        _check_time(until)
    container.seek(0)  # back to the start for the decode
    return 0.0 if first is None or last is None else float((last - first) * base)


def _decode_middle(
    container: InputContainer, stream: VideoStream, seconds: float, lim: ClipLimits, until: float
) -> BGRImage:
    base = stream.time_base or Fraction(1, 1000)
    start = stream.start_time or 0
    target = start + int(seconds / 2 / base) if seconds > 0 else start
    if target > start:
        # Lands on the keyframe at or before the target; frames from there are decoded up to it.
        try:
            container.seek(target, stream=stream, backward=True, any_frame=False)
        except av.FFmpegError:  # no index to seek with: decode from the start (still bounded)
            container.seek(0)
    # The frame on screen at the target time: the last one that starts at or before it.
    chosen: av.VideoFrame | None = None
    for count, frame in enumerate(container.decode(stream)):
        _check_time(until)
        _check_size(frame.width, frame.height, lim)
        if chosen is not None and frame.pts is not None and frame.pts > target:
            break
        chosen = frame
        if frame.pts is None or count >= _MAX_FRAMES:
            break
    if chosen is None:
        raise BadImage("corrupt", "the clip has no decodable video frame")
    return np.ascontiguousarray(chosen.to_ndarray(format="bgr24"))


class ClipDecoder:
    """:func:`middle_frame` off the event loop, in ``workers`` threads of its own, within ``limits.deadline_s``."""

    def __init__(self, limits: ClipLimits | None = None, *, workers: int = 2) -> None:
        self.limits = limits or ClipLimits()
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="clip-decode")

    async def middle(self, data: bytes, declared: str) -> DecodedImage:
        deadline = time.monotonic() + self.limits.deadline_s
        work = asyncio.get_running_loop().run_in_executor(
            self._pool, lambda: middle_frame(data, declared, self.limits, deadline=deadline)
        )
        try:
            # A little past the deadline: the worker raises "timeout" itself at the deadline, and
            # this only covers a single call into FFmpeg that outlasts it.
            async with asyncio.timeout(self.limits.deadline_s + 1.0):
                return await work
        except TimeoutError:
            raise BadImage("timeout", "the clip took too long to decode") from None

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
