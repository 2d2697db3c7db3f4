"""Analyse any image, whatever its source, into the unified visual context of spec §8.11.

One path for a live-stream frame, a device snapshot, an upload from the web bridge or any MQTT
client: decode fully (so a truncated or mislabelled file is refused before anything is stored),
then YOLO objects (the vision pipeline's :class:`~ai_server.vision.detector.Detector`) and OCR
text lines (:mod:`ai_server.media.ocr`) in worker threads, then a description composed from both
(:func:`ai_server.vision.scene.describe`) and the lighting. The caller says where the image came
from; the result is ``shared.mqtt.VisualContext`` exactly, with the two model timings beside it.

A detector whose model failed to load is not retried here: the detector remembers the failure with
a back-off for every caller (:class:`~ai_server.vision.detector.LoadBackoff`, issue 18 M6), and
the image is still answered, its OCR text included, with a description that starts
"Vision model unavailable." and ``Analysed.model_error`` saying why.
"""

from __future__ import annotations

import asyncio
import io
import logging
import math
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final, Literal

import numpy as np
from PIL import Image, UnidentifiedImageError

from ai_server.media import sniff
from ai_server.media.describe import VisionDescriber
from ai_server.media.ocr import TextReader
from ai_server.store import MediaStore
from ai_server.vision.detector import BGRImage, Box, Detector, ModelUnavailable
from ai_server.vision.scene import describe, lighting
from ai_server.vision.view import Detection
from shared.mqtt import VisualContext
from shared.mqtt.limits import MAX_LABEL_LEN, MAX_LIST_ITEMS, MAX_TEXT_LEN
from shared.mqtt.models import DetectedObject, VisualAnalysis, VisualMedia, VisualSource

log = logging.getLogger(__name__)

SourceType = Literal["webrtc_stream", "mqtt_snapshot", "http_upload", "mqtt_upload"]
BadImageReason = Literal["corrupt", "content_mismatch", "unsupported_format", "oversized", "timeout"]

#: Pillow's format names for the image formats spec §8.11 covers, as the wire spells them.
_FORMATS: Final = {"JPEG": "jpeg", "PNG": "png", "WEBP": "webp", "GIF": "gif"}
_MAX_OBJECTS: Final = 64  # as ask.py: enough for any room, and the prompt stays short
#: Pixels an image is decoded to for analysis: YOLO looks at 320-1920 px and OCR reads text at
#: this size; decoding more only costs memory (3-4 copies of the whole picture).
ANALYSIS_PIXELS: Final = 4_000_000
#: Largest image decoded at all (AI_MEDIA_MAX_PIXELS); :func:`limit_pixels` sets it at start-up.
_max_pixels = 40_000_000


def limit_pixels(max_pixels: int) -> None:
    """Refuse images over ``max_pixels`` everywhere in the process (finding H7).

    Pillow's own guard warns above ``MAX_IMAGE_PIXELS`` and raises only above twice that; the
    warning is turned into an error so Pillow itself raises above the cap, whichever code opens
    the image (:func:`decode_image` also checks width x height from the header before decoding).
    """
    global _max_pixels
    _max_pixels = max_pixels
    Image.MAX_IMAGE_PIXELS = max_pixels
    warnings.filterwarnings("error", category=Image.DecompressionBombWarning)


class BadImage(ValueError):
    """The bytes are not a whole image of the declared format; ``reason`` matches the control plane's."""

    def __init__(self, reason: BadImageReason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason: BadImageReason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class DecodedImage:
    format: str  # jpeg | png | webp | gif
    width: int  # of the image as sent
    height: int
    bgr: BGRImage  # possibly reduced to about ANALYSIS_PIXELS
    scale: float = 1.0  # width / bgr's width: detections on ``bgr`` times this are in the image's pixels


@dataclass(frozen=True, slots=True)
class Analysed:
    context: VisualContext
    yolo_ms: float  # 0 when there is no detector
    ocr_ms: float  # 0 when there is no text reader
    model_error: str | None = None  # "vision model unavailable: ...": objects were not looked for

    def json(self) -> dict[str, object]:
        """The context as stored in a media record's ``analysis`` (``None`` fields left out)."""
        return self.context.model_dump(mode="json", exclude_none=True)


def decode_image(
    data: bytes, declared: str | None = None, *, max_pixels: int | None = None, analysis_pixels: int = ANALYSIS_PIXELS
) -> DecodedImage:
    """Decode the whole file (blocking); raises :class:`BadImage`.

    Every byte is decoded, so a truncated file is refused, but not at full size: an image over
    ``max_pixels`` (default AI_MEDIA_MAX_PIXELS) is refused from its header, before any pixel is
    decoded, and a larger one than ``analysis_pixels`` is decoded smaller: a JPEG by its DCT
    scaling (``draft``: 1/2 to 1/8 of the work and memory), any other format reduced right after.

    Pillow, not OpenCV: ``cv2.imdecode`` returns a half-grey picture for a truncated JPEG, which
    would be analysed as if it were whole; Pillow raises. GIFs give their first frame.
    """
    cap = _max_pixels if max_pixels is None else max_pixels
    try:
        with Image.open(io.BytesIO(data)) as img:
            fmt = _FORMATS.get(str(img.format))
            if fmt is None:
                raise BadImage("unsupported_format", f"{img.format} is not one of {', '.join(_FORMATS.values())}")
            if declared is not None and sniff.normalise(declared) != fmt:
                raise BadImage("content_mismatch", f"declared {sniff.normalise(declared)} but the content is {fmt}")
            width, height = img.size
            if width * height > cap:
                raise BadImage("oversized", f"{width}x{height} is {width * height} pixels, over the {cap}-pixel limit")
            factor = math.sqrt(width * height / analysis_pixels)
            if factor > 1 and fmt == "jpeg":
                img.draft("RGB", (math.ceil(width / factor), math.ceil(height / factor)))
            img.load()
            small: Image.Image = img
            reduce = math.ceil(math.sqrt(img.width * img.height / analysis_pixels))
            if reduce > 1:
                # reduce() takes L/RGB(A) only; 1-bit and palette images become L / RGB first (<= 3 B/pixel).
                if small.mode not in ("L", "RGB", "RGBA"):
                    small = small.convert("L" if small.mode == "1" else "RGB")
                small = small.reduce(reduce)
            rgb = np.asarray(small.convert("RGB"), dtype=np.uint8)
    except BadImage:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise BadImage("oversized", f"{exc}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise BadImage("corrupt", f"cannot decode the image: {exc}") from None
    rows, cols = rgb.shape[:2]
    if cols < 1 or rows < 1 or width < 1 or height < 1:
        raise BadImage("corrupt", "the image has no pixels")
    bgr: BGRImage = np.ascontiguousarray(rgb[:, :, ::-1])
    return DecodedImage(fmt, int(width), int(height), bgr, width / cols)


#: How a description starts when the detector's model is unavailable (the LLM and the stored context see it).
MODEL_UNAVAILABLE: Final = "Vision model unavailable."


def _drop_late_read(task: asyncio.Future[tuple[list[str], float]]) -> None:
    """A read that missed its budget: its text is no longer wanted; a failure is only logged."""
    if not task.cancelled() and task.exception() is not None:
        log.debug("a late OCR read failed: %s", task.exception())


class ImageAnalyser:
    """YOLO + OCR + a composed description; either model may be absent (then it is skipped)."""

    def __init__(
        self, detector: Detector | None, reader: TextReader | None, describer: VisionDescriber | None = None
    ) -> None:
        self.detector = detector
        self.reader = reader
        self.describer = describer  # VISION_DESCRIBE_URL: a vision model's sentence instead of the composed one
        self.model_unavailable = 0  # images analysed without objects: the detector's model failed to load
        self.text_late = 0  # spoken questions answered without OCR: it missed their text_budget_s

    async def analyse(
        self,
        data: bytes,
        *,
        source: SourceType,
        device_id: str | None = None,
        session_id: str | None = None,
        declared_format: str | None = None,
        question: str = "",
        timestamp: datetime | None = None,
        detections: Sequence[Detection] | None = None,
        text_budget_s: float | None = None,
        objects_only: bool = False,
    ) -> Analysed:
        """Decode (off the loop) and analyse; raises :class:`BadImage` for bytes that are not a whole image."""
        image = await asyncio.to_thread(decode_image, data, declared_format)
        return await self.analyse_decoded(image, source=source, device_id=device_id, session_id=session_id,
                                          question=question, timestamp=timestamp, detections=detections,
                                          text_budget_s=text_budget_s, objects_only=objects_only)

    async def analyse_decoded(
        self,
        image: DecodedImage,
        *,
        source: SourceType,
        device_id: str | None = None,
        session_id: str | None = None,
        question: str = "",
        timestamp: datetime | None = None,
        detections: Sequence[Detection] | None = None,
        media_type: Literal["image", "video"] = "image",
        media_format: str | None = None,
        text_budget_s: float | None = None,
        objects_only: bool = False,
    ) -> Analysed:
        """``detections``: a live frame the vision pipeline already ran YOLO on is not detected twice.
        ``media_type``/``media_format``: a frame taken from a clip is described as that clip (mp4, webm).
        ``text_budget_s``: a spoken question waits at most this long (from the start) for OCR, then is
        answered from the objects alone; the read finishes in its thread and is dropped.
        ``objects_only``: no OCR and no model description (a count or yes/no question answered by code)."""
        # Both models block for ~0.3 s on CPU: in worker threads, side by side, the loop keeps serving.
        started = time.perf_counter()
        reading = None if objects_only else asyncio.ensure_future(asyncio.to_thread(self._read, image.bgr))
        boxes, yolo_ms = await asyncio.to_thread(self._detect, image.bgr, detections, image.scale)
        text: list[str] = []
        ocr_ms = 0.0
        if reading is not None and text_budget_s is None:
            text, ocr_ms = await reading
        elif reading is not None and text_budget_s is not None:
            left = max(0.0, text_budget_s - (time.perf_counter() - started))
            done, _ = await asyncio.wait({reading}, timeout=left)
            if done:
                text, ocr_ms = reading.result()
            else:
                self.text_late += 1
                reading.add_done_callback(_drop_late_read)
        model_error = None
        if isinstance(boxes, ModelUnavailable):
            model_error, boxes = str(boxes), None
        objects = [
            DetectedObject(label=object_label(b.label), confidence=round(b.confidence, 3),
                           bbox=_rounded(b.xywh))
            for b in sorted(boxes or (), key=lambda b: -b.confidence)[:_MAX_OBJECTS]
        ]
        lines = [line[:MAX_TEXT_LEN] for line in text[:MAX_LIST_ITEMS]]
        description = describe(None if boxes is None else [o.label for o in objects], lines)
        if model_error is not None:
            description = f"{MODEL_UNAVAILABLE} {description}"
        if self.describer is not None and not objects_only:
            description = await self.describer.describe(image.bgr, description, question) or description
        context = VisualContext(
            source=VisualSource(type=source, device_id=device_id, session_id=session_id),
            media=VisualMedia(type=media_type, format=media_format or image.format, width=image.width,
                              height=image.height, timestamp=(timestamp or datetime.now(UTC)).astimezone(UTC)),
            analysis=VisualAnalysis(
                description=description,
                objects=objects,
                lighting=lighting(image.bgr),
                text_detected=lines,
            ),
            user_context=question[:MAX_TEXT_LEN] or None,
        )
        log.debug("analysed a %dx%d %s from %s: %s (YOLO %.0f ms, OCR %.0f ms)", image.width, image.height,
                 image.format, source, context.analysis.description, yolo_ms, ocr_ms)
        return Analysed(context, yolo_ms, ocr_ms, model_error)

    def _detect(
        self, image: BGRImage, known: Sequence[Detection] | None, scale: float = 1.0
    ) -> tuple[list[Box] | ModelUnavailable | None, float]:
        if known is not None:
            return [Box(d.bbox[0], d.bbox[1], d.bbox[0] + d.bbox[2], d.bbox[1] + d.bbox[3], d.confidence, -1, d.label)
                    for d in known], 0.0
        if self.detector is None:
            return None, 0.0
        try:
            self.detector.load()  # the first image loads the model: not part of its inference time
        except ModelUnavailable as exc:  # failed now or within its back-off: not tried again here
            self.model_unavailable += 1
            log.warning("image analysed without objects: %s", exc)
            return exc, 0.0
        started = time.perf_counter()
        [boxes] = self.detector.detect_batch([image])
        return self._full_size(boxes, scale), (time.perf_counter() - started) * 1000

    @staticmethod
    def _full_size(boxes: list[Box] | None, scale: float) -> list[Box] | None:
        """Boxes found on a reduced image, in the pixels of the image as sent."""
        if boxes is None or scale == 1.0:
            return boxes
        return [Box(b.x1 * scale, b.y1 * scale, b.x2 * scale, b.y2 * scale, b.confidence, b.class_id, b.label)
                for b in boxes]

    def _read(self, image: BGRImage) -> tuple[list[str], float]:
        if self.reader is None:
            return [], 0.0
        started = time.perf_counter()
        return self.reader.read(image), (time.perf_counter() - started) * 1000


async def save_analysis(store: MediaStore, media_id: str, analysed: Analysed) -> None:
    """Put the context into a stored item's ``analysis`` (kept beside what is there, e.g. a transcript)."""

    def update() -> None:
        record = store.get(media_id)
        if record is None:
            raise KeyError(media_id)
        store.set_analysis(media_id, {**(record.analysis or {}), "visual_context": analysed.json()})

    await asyncio.to_thread(update)


def _rounded(box: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
    x, y, w, h = box
    return round(x, 1), round(y, 1), round(w, 1), round(h, 1)


def object_label(name: str) -> str:
    """The label people and the LLM see for a detector class (renamed by the detector: VISION_LABELS)."""
    return name[:MAX_LABEL_LEN] or "object"
