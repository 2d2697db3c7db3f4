"""Finding H7, video: clips are probed (size, length) before a frame is decoded, the middle frame is
reached by seeking (one pass), and decoding runs in its own small pool with a deadline. Clips are
made small with PyAV: what matters is what they declare."""

from __future__ import annotations

import asyncio
import io
import threading
import time

import av
import numpy as np
import pytest

from ai_server.media.analysis import BadImage
from ai_server.media.frames import ClipDecoder, ClipLimits, middle_frame

pytestmark = [pytest.mark.unit, pytest.mark.timeout(60)]


def clip(*, fmt: str = "mp4", size: tuple[int, int] = (64, 48), seconds: float = 2.0, fps: int = 10,
         live: bool = False) -> bytes:
    """Frame i has grey level i (0, 1, 2 ...) so a test can tell which frame it got.
    ``live``: a WebM without duration or cues, as a browser's MediaRecorder writes it."""
    buf = io.BytesIO()
    with av.open(buf, mode="w", format=fmt, options={"live": "1"} if live else {}) as out:
        stream = out.add_stream("libx264" if fmt == "mp4" else "libvpx", rate=fps)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        if fmt == "mp4":
            stream.options = {"qp": "0"}  # lossless: the grey level survives exactly
        frames = int(seconds * fps)
        for i in range(frames):
            level = round(i * 200 / max(1, frames - 1))
            picture = np.full((size[1], size[0], 3), level, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(picture, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buf.getvalue()


def level(frames: int, index: int) -> int:
    return round(index * 200 / max(1, frames - 1))


@pytest.mark.parametrize("fmt", ["mp4", "webm"])
def test_the_middle_frame_is_found_by_seeking(fmt: str) -> None:
    image = middle_frame(clip(fmt=fmt, seconds=6.0), fmt)
    assert (image.width, image.height) == (64, 48)
    assert abs(float(image.bgr.mean()) - level(60, 30)) < 6


def test_a_webm_without_duration_is_measured_by_demuxing() -> None:
    image = middle_frame(clip(fmt="webm", seconds=4.0, live=True), "webm")
    assert abs(float(image.bgr.mean()) - level(40, 20)) < 8


@pytest.mark.parametrize("fmt", ["mp4", "webm"])
def test_frames_over_the_pixel_cap_are_refused_before_decoding(fmt: str) -> None:
    data = clip(fmt=fmt, size=(2560, 1440), seconds=0.2)  # 3.7 MP > 1920x1080, a few kB
    assert len(data) < 100_000
    started = time.perf_counter()
    with pytest.raises(BadImage) as bad:
        middle_frame(data, fmt, ClipLimits(max_pixels=1920 * 1080))
    assert bad.value.reason == "oversized" and "2560x1440" in bad.value.detail
    assert time.perf_counter() - started < 1.0


@pytest.mark.parametrize("live", [False, True])
def test_clips_longer_than_the_cap_are_refused(live: bool) -> None:
    fmt = "webm" if live else "mp4"
    data = clip(fmt=fmt, size=(32, 32), seconds=400, fps=1, live=live)  # 400 s in ~12 kB
    with pytest.raises(BadImage) as bad:
        middle_frame(data, fmt, ClipLimits(max_s=300))
    assert bad.value.reason == "oversized" and "over the 300 s limit" in bad.value.detail


def test_the_deadline_stops_the_decode() -> None:
    with pytest.raises(BadImage) as bad:
        middle_frame(clip(), "mp4", deadline=time.monotonic() - 1)  # already past: stops at its first check
    assert bad.value.reason == "timeout"


def test_a_mislabelled_or_broken_clip_is_refused() -> None:
    with pytest.raises(BadImage) as bad:
        middle_frame(clip(fmt="webm"), "mp4")
    assert bad.value.reason == "content_mismatch"
    with pytest.raises(BadImage) as bad:
        middle_frame(b"\x1a\x45\xdf\xa3 not really", "webm")
    assert bad.value.reason == "corrupt"


async def test_decoding_runs_in_its_own_bounded_pool() -> None:
    decoder = ClipDecoder(ClipLimits(), workers=2)
    try:
        data = clip()
        loop_thread = threading.current_thread().name
        results = await asyncio.gather(*(decoder.middle(data, "mp4") for _ in range(6)))
        assert all(r.width == 64 for r in results)
        names = sorted({t.name for t in threading.enumerate() if t.name.startswith("clip-decode")})
        assert 1 <= len(names) <= 2 and loop_thread not in names
    finally:
        decoder.close()


async def test_the_pool_answers_timeout_at_the_deadline() -> None:
    decoder = ClipDecoder(ClipLimits(deadline_s=0.0))
    try:
        with pytest.raises(BadImage) as bad:
            await decoder.middle(clip(), "mp4")
        assert bad.value.reason == "timeout"
    finally:
        decoder.close()
