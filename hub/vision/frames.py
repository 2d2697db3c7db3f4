"""Decoded video frames -> what the vision pipeline needs: a small grey image, a small JPEG.

aiortc hands the hub ``av.VideoFrame`` (yuv420p from its VP8/H.264 decoder). Both conversions
let libswscale (``VideoFrame.reformat``) scale and convert colour in one pass, which measured
faster here than ``to_ndarray`` + ``cv2.resize`` (640x480 -> 160x120 grey: ~75 µs vs ~330 µs;
-> 320x240 BGR: ~180 µs vs ~220 µs). AREA interpolation averages the pixels it drops, which also
smooths sensor noise before the motion gate.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from av import VideoFrame

from hub.vision.motion import REDUCED_SIZE, GrayImage


class FrameError(ValueError):
    """A frame the pipeline cannot use (empty, or a pixel format libswscale cannot convert)."""


@dataclass(frozen=True, slots=True)
class Jpeg:
    data: bytes
    width: int
    height: int


def to_gray(frame: VideoFrame, size: tuple[int, int] = REDUCED_SIZE) -> GrayImage:
    """The frame scaled to ``size`` (width, height) in 8-bit grey, for the motion gate.

    The aspect ratio is not kept: the gate measures the changed *fraction*, which a uniform
    stretch does not alter, and one fixed size keeps the background valid across frames.
    """
    if frame.width <= 0 or frame.height <= 0:
        raise FrameError(f"empty frame {frame.width}x{frame.height}")
    try:
        gray = frame.reformat(width=size[0], height=size[1], format="gray", interpolation="AREA").to_ndarray()
    except Exception as exc:  # av raises its own errors (ValueError, FFmpegError) for odd formats
        raise FrameError(f"cannot convert {frame.format.name} {frame.width}x{frame.height}: {exc}") from exc
    return np.ascontiguousarray(gray, dtype=np.uint8)


def fit(width: int, height: int, box: tuple[int, int]) -> tuple[int, int]:
    """The largest size within ``box`` with the frame's aspect ratio, never larger than the frame."""
    scale = min(1.0, box[0] / width, box[1] / height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def encode_jpeg(frame: VideoFrame, box: tuple[int, int], quality: int) -> Jpeg:
    """Scale the frame into ``box`` (spec §7.2: 640x480 -> 320x240 before YOLO) and JPEG-encode it."""
    if frame.width <= 0 or frame.height <= 0:
        raise FrameError(f"empty frame {frame.width}x{frame.height}")
    width, height = fit(frame.width, frame.height, box)
    try:
        bgr = frame.reformat(width=width, height=height, format="bgr24", interpolation="AREA").to_ndarray()
    except Exception as exc:
        raise FrameError(f"cannot convert {frame.format.name} {frame.width}x{frame.height}: {exc}") from exc
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise FrameError(f"JPEG encoding of a {width}x{height} frame failed")
    return Jpeg(buf.tobytes(), width, height)
