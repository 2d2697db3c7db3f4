"""Image analysis (ai_server/media/analysis.py) with the real YOLO checkpoint and the real OCR models."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from PIL import Image

from ai_server.media.analysis import BadImage, ImageAnalyser, decode_image, save_analysis
from ai_server.media.ocr import RapidOcr
from ai_server.store import MediaStore
from ai_server.vision.detector import YoloDetector
from shared.mqtt import VisualContext
from tests.ai_server.media.conftest import bus_jpeg, text_png

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

T0 = datetime(2026, 11, 23, 15, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def ocr() -> Iterator[RapidOcr]:
    reader = RapidOcr()
    reader.load()
    yield reader


def as_format(data: bytes, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.open(io.BytesIO(data)).convert("RGB").save(buf, format=fmt)
    return buf.getvalue()


async def test_bus_jpg_gives_the_spec_context_with_people(yolo: YoloDetector, ocr: RapidOcr) -> None:
    analyser = ImageAnalyser(yolo, ocr)
    await analyser.analyse(bus_jpeg(), source="mqtt_upload", session_id="warm")  # first call: thread pools
    started = time.perf_counter()
    found = await analyser.analyse(bus_jpeg(), source="mqtt_snapshot", device_id="bus_cam", declared_format="jpg",
                                   question="how many people?", timestamp=T0)
    total_ms = (time.perf_counter() - started) * 1000
    ctx = found.context
    assert VisualContext.model_validate_json(ctx.model_dump_json()) == ctx  # the spec §8.11 shape, exactly
    assert (ctx.source.type, ctx.source.device_id, ctx.source.session_id) == ("mqtt_snapshot", "bus_cam", None)
    assert (ctx.media.type, ctx.media.format, ctx.media.width, ctx.media.height) == ("image", "jpeg", 810, 1080)
    assert ctx.media.timestamp == T0 and ctx.user_context == "how many people?"
    people = [o for o in ctx.analysis.objects if o.label == "person"]
    assert len(people) >= 3, ctx.analysis.objects
    assert all(0 <= o.bbox[0] < 810 and 0 <= o.bbox[1] < 1080 and o.bbox[2] > 0 for o in people)
    assert ctx.analysis.description.startswith(f"{len(people)} people")
    assert ctx.analysis.lighting in ("dim", "bright")
    print(f"\nbus.jpg 810x1080 (CPU, 2 cores): YOLO {found.yolo_ms:.0f} ms, OCR {found.ocr_ms:.0f} ms "
          f"(side by side), total {total_ms:.0f} ms; text {ctx.analysis.text_detected}")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "GIF"])
async def test_rendered_text_is_read_from_any_format(yolo: YoloDetector, ocr: RapidOcr, fmt: str) -> None:
    data = as_format(text_png(), fmt)
    found = await ImageAnalyser(yolo, ocr).analyse(data, source="http_upload", session_id="web-1")
    assert found.context.media.format == fmt.lower()
    assert "NAILA" in found.context.analysis.text_detected
    assert "Meeting at 3pm" in found.context.analysis.text_detected
    assert '"NAILA"' in found.context.analysis.description
    print(f"\ntext {fmt} 320x240: YOLO {found.yolo_ms:.0f} ms, OCR {found.ocr_ms:.0f} ms")


def test_bad_bytes_raise_a_clear_error() -> None:
    bus = bus_jpeg()
    with pytest.raises(BadImage) as truncated:
        decode_image(bus[: len(bus) // 2], "jpeg")
    assert truncated.value.reason == "corrupt" and "truncated" in truncated.value.detail
    with pytest.raises(BadImage) as mismatch:
        decode_image(bus, "png")
    assert mismatch.value.reason == "content_mismatch"
    assert str(mismatch.value) == "content_mismatch: declared png but the content is jpeg"
    with pytest.raises(BadImage) as junk:
        decode_image(b"\xff\xd8\xff\xe0 definitely not a jpeg", None)
    assert junk.value.reason == "corrupt"
    with pytest.raises(BadImage) as bmp:
        decode_image(as_format(text_png(), "BMP"))
    assert bmp.value.reason == "unsupported_format"


async def test_without_models_the_context_says_not_analysed_and_keeps_text_empty() -> None:
    found = await ImageAnalyser(None, None).analyse(text_png(), source="webrtc_stream", device_id="cam")
    assert found.context.analysis.description == "Not analysed."
    assert found.context.analysis.objects == [] and found.context.analysis.text_detected == []
    assert (found.yolo_ms, found.ocr_ms) == (0.0, 0.0)


async def test_the_context_is_saved_into_the_stored_item(ocr: RapidOcr, tmp_path: Path) -> None:
    store = MediaStore(tmp_path)
    try:
        data = text_png()
        record = store.add(data, source="mqtt_snapshot", media_type="image", format="png", device_id="desk_cam",
                           analysis={"width": 320, "height": 240})
        found = await ImageAnalyser(None, ocr).analyse(data, source="mqtt_snapshot", device_id="desk_cam")
        await save_analysis(store, record.id, found)
        stored = store.get(record.id)
        assert stored is not None and stored.analysis is not None
        assert stored.analysis["width"] == 320  # what was there stays
        assert VisualContext.model_validate_json(json.dumps(stored.analysis["visual_context"])) == found.context
        with pytest.raises(KeyError):
            await save_analysis(store, "no-such-id", found)
    finally:
        store.close()


class SlowReader:
    """A text reader that takes ``seconds`` (a real blocking read in its worker thread)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def read(self, image: object) -> list[str]:
        import threading

        threading.Event().wait(self.seconds)
        return ["OPEN 24 HOURS"]


async def test_a_spoken_question_does_not_wait_past_its_text_budget() -> None:
    """A live-view question waits at most text_budget_s for OCR and is answered from the objects;
    without a budget (uploads, 'read the sign') the text is waited for."""
    analyser = ImageAnalyser(None, SlowReader(1.0))
    started = time.perf_counter()
    quick = await analyser.analyse(text_png(), source="webrtc_stream", device_id="cam", text_budget_s=0.2)
    assert time.perf_counter() - started < 0.8
    assert quick.context.analysis.text_detected == [] and analyser.text_late == 1
    patient = await analyser.analyse(text_png(), source="webrtc_stream", device_id="cam")
    assert patient.context.analysis.text_detected == ["OPEN 24 HOURS"]
