"""What an image shows, in words computed without a model: the sentence made of detected labels and
read text, and the lighting. Every source uses them (a live frame, an upload, a stored snapshot:
ai_server/media/analysis.py), so they take plain labels and pixels, not a camera view.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

import cv2
import numpy as np

from ai_server.vision.detector import BGRImage


def _plural(label: str, n: int) -> str:
    if n == 1:
        return f"1 {label}"
    if label == "person":
        return f"{n} people"
    return f"{n} {label}" if label.endswith("s") else f"{n} {label}s"


def describe(labels: Iterable[str] | None, text: Sequence[str] = ()) -> str:
    """A sentence composed from detected labels and read text (no vision-language model needed).

    ``labels`` is None for an image that was not analysed. Any source uses it (a live frame,
    an upload: ai_server.media.analysis), so it takes plain labels, not a camera view.
    """
    if labels is None and not text:
        return "Not analysed."
    counts = Counter(labels or ())
    if labels is None:
        sentence = "Objects not analysed."
    elif counts:
        parts = [_plural(label, n) for label, n in counts.most_common()]
        listed = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
        sentence = f"{listed[0].upper()}{listed[1:]} in view."
    else:
        sentence = "No objects detected."
    if text:
        quoted = "; ".join(f'"{line}"' for line in text[:5])
        sentence += f" Text reads: {quoted}{' and more' if len(text) > 5 else ''}."
    return sentence


def lighting(image: bytes | BGRImage) -> str | None:
    """Dark / dim / bright from the mean luminance of encoded bytes or a decoded BGR image.

    A 320x240 JPEG decodes in about a millisecond; an already decoded image is not decoded again.
    """
    if isinstance(image, bytes):
        img = cv2.imdecode(np.frombuffer(image, np.uint8), cv2.IMREAD_GRAYSCALE)
    else:
        img = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
    if img is None or img.size == 0:
        return None
    mean = float(img.mean())
    return "dark" if mean < 40 else "dim" if mean < 100 else "bright"
