"""Media tracks: the mic track's frames and pacing, frame conversion, camera sources, track and snapshots."""

from __future__ import annotations

import asyncio
import fractions
import io
import time
from pathlib import Path

import av
import numpy as np
import pytest

from device_agent.audio_pipeline import MicBuffer
from device_agent.camera import (
    Camera,
    FileSource,
    SyntheticSource,
    encode_jpeg,
    make_camera,
)
from device_agent.tracks import MicTrack, int16_to_frame
from shared.audio import frame_to_mono
from shared.config import ConfigError, DeviceSettings, VideoSettings, load

pytestmark = pytest.mark.unit


async def test_mic_track_frames_come_from_the_buffer() -> None:
    buf = MicBuffer()
    track = MicTrack(buf)
    first = asyncio.create_task(track.recv())
    await asyncio.sleep(0.005)  # the track clears stale audio when it starts
    buf.push(np.arange(1920, dtype=np.int16))
    f1 = await first
    f2 = await track.recv()
    assert (f1.samples, f1.sample_rate, f1.format.name, f1.layout.name) == (960, 48_000, "s16", "mono")
    assert (f1.pts, f2.pts) == (0, 960) and f1.time_base == fractions.Fraction(1, 48_000)
    assert np.array_equal(f2.to_ndarray().ravel(), np.arange(960, 1920))


async def test_mic_track_keeps_real_time_with_silence_when_the_mic_stalls() -> None:
    track = MicTrack(MicBuffer(), slack_s=0.01)
    t0 = time.monotonic()
    frames = [await track.recv() for _ in range(6)]
    elapsed = time.monotonic() - t0
    assert 0.1 < elapsed < 0.3  # ~6 x 20 ms, not a busy loop, not stuck
    assert not any(f.to_ndarray().any() for f in frames)
    assert track.silence_frames == 6


def test_frame_to_mono_handles_packed_stereo_and_planar_float() -> None:
    stereo = np.zeros((1, 2 * 480), np.int16)
    stereo[0, 0::2], stereo[0, 1::2] = 1000, 3000
    f = av.AudioFrame.from_ndarray(stereo, format="s16", layout="stereo")
    f.sample_rate = 48_000
    x = frame_to_mono(f)
    assert x.size == 480 and (x == 2000).all()
    planar = np.full((2, 160), 0.5, np.float32)
    g = av.AudioFrame.from_ndarray(planar, format="fltp", layout="stereo")
    g.sample_rate = 16_000
    y = frame_to_mono(g)
    assert (y == 16384).all()
    z = frame_to_mono(int16_to_frame(np.arange(5, dtype=np.int16), 48_000))
    assert np.array_equal(z, np.arange(5))


def test_synthetic_source_moves() -> None:
    src = SyntheticSource(160, 120, fps=10)
    a, b = src.read().to_ndarray(), src.read().to_ndarray()
    assert a.shape == (120, 160, 3) and np.abs(a.astype(int) - b.astype(int)).sum() > 0


async def test_camera_track_paces_frames_at_the_configured_rate() -> None:
    cam = Camera(SyntheticSource(64, 48, fps=20), fps=20)
    track = cam.track()
    t0 = time.monotonic()
    frames = [await track.recv() for _ in range(6)]
    elapsed = time.monotonic() - t0
    assert 0.2 < elapsed < 0.45  # 5 periods of 50 ms
    assert [f.pts for f in frames] == [i * 4500 for i in range(6)]
    assert (frames[0].width, frames[0].height) == (64, 48)


async def test_snapshot_is_a_jpeg_at_the_requested_size() -> None:
    cam = Camera(SyntheticSource(160, 120), fps=15)
    snap = await cam.snapshot(quality=80, size=(80, 60))
    assert snap.jpeg[:2] == b"\xff\xd8" and (snap.width, snap.height) == (80, 60)
    with av.open(io.BytesIO(snap.jpeg), mode="r") as c:
        img = next(c.decode(video=0))
    assert (img.width, img.height) == (80, 60)
    small = encode_jpeg(SyntheticSource(160, 120).read(), quality=10)
    big = encode_jpeg(SyntheticSource(160, 120).read(), quality=100)
    assert len(small.jpeg) < len(big.jpeg)


def test_file_source_reads_an_image_and_a_looping_video(tmp_path: Path) -> None:
    img = tmp_path / "still.jpg"
    img.write_bytes(encode_jpeg(SyntheticSource(320, 240).read()).jpeg)
    src = FileSource(img, 64, 48)
    f = src.read()
    assert (f.width, f.height) == (64, 48)

    video = tmp_path / "clip.mp4"
    with av.open(str(video), "w") as out:
        stream = out.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        synth = SyntheticSource(64, 48)
        for _ in range(5):
            for packet in stream.encode(synth.read().reformat(format="yuv420p")):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    vsrc = FileSource(video, 32, 24)
    frames = [vsrc.read() for _ in range(12)]  # more than the clip holds: it loops
    assert all((fr.width, fr.height) == (32, 24) for fr in frames)
    vsrc.close()


def test_make_camera_follows_the_settings(tmp_path: Path) -> None:
    video = load(VideoSettings, video_resolution="320x240", video_max_fps=5)
    assert make_camera(load(DeviceSettings), video) is None
    cam = make_camera(load(DeviceSettings, device_camera="synthetic"), video)
    assert cam is not None and cam.fps == 5 and cam.source.width == 320
    with pytest.raises(ConfigError):
        make_camera(load(DeviceSettings, device_camera="file"), video)
    with pytest.raises(ConfigError):
        make_camera(load(DeviceSettings, device_camera="file", device_camera_file=str(tmp_path / "nope.mp4")), video)
    with pytest.raises(ConfigError, match="picamera2"):
        make_camera(load(DeviceSettings, device_camera="picamera2"), video)
