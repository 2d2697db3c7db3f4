"""A representative still from a video clip (spec §8.3 "Video → Frames"), decoded with PyAV.

The middle frame: a device's clip usually starts and ends on whatever triggered and stopped the
recording (a door opening, a hand on the button); the middle is what it was recording for. The
clip is decoded twice (count, then take the middle) rather than holding every frame in memory.
"""

from __future__ import annotations

import io
from typing import Final

import av
import numpy as np

from ai_server.media.analysis import BadImage, DecodedImage
from ai_server.vision.detector import BGRImage

#: PyAV's demuxer names for the clip formats of spec §8.6.
_CONTAINERS: Final = {"mp4": ("mp4", "mov"), "webm": ("webm", "matroska")}
_MAX_FRAMES: Final = 10_000  # ~5 min at 30 fps: a clip longer than that is not "a clip"


def middle_frame(data: bytes, declared: str) -> DecodedImage:
    """The clip's middle frame as BGR (blocking); raises :class:`BadImage` for a clip that does not decode."""
    fmt = declared.lower()
    if fmt not in _CONTAINERS:
        raise BadImage("unsupported_format", f"{declared} is not one of {', '.join(_CONTAINERS)}")
    try:
        count = _count(data, fmt)
        if count == 0:
            raise BadImage("corrupt", "the clip has no decodable video frame")
        with av.open(io.BytesIO(data), mode="r") as container:
            stream = container.streams.video[0]
            for i, frame in enumerate(container.decode(stream)):
                if i == count // 2:
                    bgr: BGRImage = np.ascontiguousarray(frame.to_ndarray(format="bgr24"))
                    height, width = bgr.shape[:2]
                    return DecodedImage(fmt, int(width), int(height), bgr)
    except BadImage:
        raise
    except (av.FFmpegError, OSError, ValueError, IndexError) as exc:
        raise BadImage("corrupt", f"cannot decode the clip: {exc}") from None
    raise BadImage("corrupt", "the clip changed between two reads")  # unreachable for bytes


def _count(data: bytes, fmt: str) -> int:
    with av.open(io.BytesIO(data), mode="r") as container:
        names = container.format.name.split(",")
        if not any(n in names for n in _CONTAINERS[fmt]):
            raise BadImage("content_mismatch", f"declared {fmt} but the content is {container.format.name}")
        if not container.streams.video:
            raise BadImage("corrupt", "the clip has no video stream")
        count = 0
        # Packets are decoded, not just counted: a truncated clip yields fewer frames than it declares.
        for _ in container.decode(container.streams.video[0]):
            count += 1
            if count >= _MAX_FRAMES:
                break
        return count
