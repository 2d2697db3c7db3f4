"""Content sniffing on files made by real encoders, the media policy, and the media store."""

from __future__ import annotations

import io
import sqlite3
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from ai_server.control.errors import Rejected
from ai_server.control.media_check import MediaPolicy
from ai_server.media import sniff
from ai_server.store import MediaStore
from shared.config import MediaSettings, load
from tests.ai_server.control.conftest import image_bytes

pytestmark = pytest.mark.unit
av = pytest.importorskip("av")


def _audio(fmt: str, codec: str, rate: int = 48000) -> bytes:
    buf = io.BytesIO()
    with av.open(buf, "w", format=fmt) as c:
        stream = c.add_stream(codec, rate=rate)
        stream.layout = "mono"
        for i in range(10):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 960), np.int16), format="s16", layout="mono")
            frame.sample_rate, frame.pts = rate, i * 960
            for packet in stream.encode(frame):
                c.mux(packet)
        for packet in stream.encode(None):
            c.mux(packet)
    return buf.getvalue()


def _video(fmt: str, codec: str) -> bytes:
    buf = io.BytesIO()
    with av.open(buf, "w", format=fmt) as c:
        stream = c.add_stream(codec, rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for _ in range(3):
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.zeros((48, 64, 3), np.uint8), format="rgb24")):
                c.mux(packet)
        for packet in stream.encode(None):
            c.mux(packet)
    return buf.getvalue()


SAMPLES: dict[str, Callable[[], bytes]] = {
    "jpeg": lambda: image_bytes("JPEG"),
    "png": lambda: image_bytes("PNG"),
    "gif": lambda: image_bytes("GIF"),
    "webp": lambda: image_bytes("WEBP"),
    "wav": lambda: _audio("wav", "pcm_s16le"),
    "opus": lambda: _audio("ogg", "libopus"),
    "mp3": lambda: _audio("mp3", "mp3", 44100),
    "m4a": lambda: _audio("ipod", "aac"),
    "mp4": lambda: _video("mp4", "mpeg4"),
    "webm": lambda: _video("webm", "libvpx"),
    "mkv": lambda: _video("matroska", "libvpx"),
}


@pytest.mark.parametrize("fmt", sorted(SAMPLES))
def test_each_format_is_recognised_from_a_real_file(fmt: str) -> None:
    assert sniff.detect(SAMPLES[fmt]()) == fmt


def test_signatures_that_are_close_but_not_ours() -> None:
    assert sniff.detect(b"OggS" + bytes(24) + b"\x01vorbis" + bytes(30)) == "ogg"  # Ogg, but not Opus
    assert sniff.detect(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic") is None  # HEIF image, not a clip
    assert sniff.detect(b"\xff\xfe\x00\x00 text") is None  # UTF-16 BOM: no MPEG layer III frame header
    assert sniff.detect(b"\xff\xfb\x90\x64" + bytes(100)) == "mp3"  # a bare MPEG-1 layer III frame
    assert sniff.detect(b"RIFF\x00\x00\x00\x00AVI LIST") is None
    assert sniff.detect(b"") is None


@pytest.mark.parametrize(
    ("declared", "detected", "ok"),
    [
        ("jpeg", "jpeg", True),
        ("m4a", "mp4", True),
        ("mp4", "m4a", True),
        ("opus", "ogg", False),
        ("webm", "mkv", False),
        ("png", "jpeg", False),
        ("wav", None, False),
    ],
)
def test_declared_against_detected(declared: str, detected: str | None, ok: bool) -> None:
    assert sniff.matches(declared, detected) is ok


def test_the_policy_checks_size_whitelist_content_and_image_header() -> None:
    policy = MediaPolicy(load(MediaSettings, media_max_upload_size=2048))
    png = image_bytes("PNG", (20, 10))
    checked = policy.check("image", "PNG", png)
    assert (checked.format, checked.width, checked.height) == ("png", 20, 10)
    assert checked.describe() == f"image, png, {len(png)} bytes, 20x10"
    assert policy.check("image", "jpg", image_bytes("JPEG", (8, 8))).format == "jpeg"
    wav = SAMPLES["wav"]()[:1500]
    assert policy.check("audio", "wav", wav).describe() == "audio, wav, 1.5 kB"

    def reason(media_type: str, fmt: str, data: bytes) -> str:
        with pytest.raises(Rejected) as err:
            policy.check(media_type, fmt, data)
        return err.value.reason

    assert reason("image", "png", png + bytes(2048)) == "oversized"
    assert reason("image", "tiff", png) == "unsupported_format"
    assert reason("document", "pdf", b"%PDF-1.4") == "unsupported_format"
    assert reason("audio", "png", png) == "unsupported_format"  # a format of another media type
    assert reason("image", "jpeg", png) == "content_mismatch"
    assert reason("image", "png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 40) == "corrupt"


def test_the_store_keeps_files_and_rows(tmp_path: Path) -> None:
    # keep_raw_audio: this test reads the audio back (the default drops it: tests/ai_server/store/test_raw_audio.py)
    store = MediaStore(tmp_path / "media", keep_raw_audio=True)
    first = store.add(b"abc", source="mqtt_upload", media_type="image", format="png", session_id="s1")
    second = store.add(
        b"defg",
        source="mqtt_recording",
        media_type="audio",
        format="wav",
        device_id="d1",
        zone="z",
        analysis={"transcript": "hi"},
    )
    assert first.path == tmp_path / "media" / "files" / f"{first.id}.png" and first.path.read_bytes() == b"abc"
    assert first.sha256 == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert store.get(second.id) == second and store.read(second.id) == b"defg"
    assert [r.id for r in store.recent()] == [second.id, first.id]
    assert [r.id for r in store.recent(source="mqtt_upload")] == [first.id]
    assert [r.id for r in store.recent(device_id="d1")] == [second.id]
    store.set_analysis(first.id, {"description": "a red square"})
    assert store.get(first.id).analysis == {"description": "a red square"}  # type: ignore[union-attr]
    with pytest.raises(KeyError):
        store.set_analysis("nope", {})
    assert not list((tmp_path / "media" / "files").glob(".*.tmp"))
    store.close()

    reopened = MediaStore(tmp_path / "media")  # the index survives a restart
    assert reopened.get(first.id) is not None
    reopened.close()
    with sqlite3.connect(tmp_path / "media" / "media.sqlite3") as db:
        db.execute("PRAGMA user_version=99")
    with pytest.raises(RuntimeError, match="newer"):
        MediaStore(tmp_path / "media")


def test_a_failed_insert_leaves_no_file(tmp_path: Path) -> None:
    store = MediaStore(tmp_path)
    store.close()  # every insert now fails
    with pytest.raises(sqlite3.ProgrammingError):
        store.add(b"x", source="mqtt_upload", media_type="image", format="png")
    assert list((tmp_path / "files").iterdir()) == []
