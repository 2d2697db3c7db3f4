"""The one admission check for media, whoever sent it: size, format whitelist, real content.

Uploads (``naila/uploads/...``), device snapshots and clips, and alert snapshots all pass here
before they are stored or processed (spec §8.6 formats, §12.2 MEDIA_* settings, §15.3 "uploaded
files scanned before processing").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from ai_server.control.errors import Rejected
from ai_server.media import sniff
from shared.config import MediaSettings
from shared.mqtt.fields import MediaType

_MEDIA_TYPES: Final[dict[str, MediaType]] = {"image": "image", "audio": "audio", "video": "video"}


@dataclass(frozen=True, slots=True)
class CheckedMedia:
    """Media that passed :meth:`MediaPolicy.check`; ``format`` is normalised (``jpg`` -> ``jpeg``)."""

    media_type: MediaType
    format: str
    data: bytes
    width: int | None = None
    height: int | None = None

    @property
    def size(self) -> int:
        return len(self.data)

    def describe(self) -> str:
        """One line for people and for the LLM: ``image, jpeg, 48.2 kB, 640x480``."""
        parts = [self.media_type, self.format, human_size(self.size)]
        if self.width is not None and self.height is not None:
            parts.append(f"{self.width}x{self.height}")
        return ", ".join(parts)


def human_size(n: int) -> str:
    if n < 1000:
        return f"{n} bytes"
    if n < 1_000_000:
        return f"{n / 1000:.1f} kB"
    return f"{n / 1_000_000:.1f} MB"


#: AI_MEDIA_MAX_PIXELS' default, for callers without AI server settings.
DEFAULT_MAX_PIXELS: Final = 40_000_000


class MediaPolicy:
    def __init__(self, media: MediaSettings, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
        self.max_bytes = media.media_max_upload_size
        self.max_pixels = max_pixels
        self.formats: dict[str, frozenset[str]] = {
            "image": frozenset(sniff.normalise(f) for f in media.media_supported_image_formats),
            "audio": frozenset(sniff.normalise(f) for f in media.media_supported_audio_formats),
            "video": frozenset(sniff.normalise(f) for f in media.media_supported_video_formats),
        }

    def check(self, media_type: str, declared_format: str, data: bytes) -> CheckedMedia:
        """Accept ``data`` as ``media_type`` / ``declared_format`` or raise :class:`Rejected`."""
        if len(data) > self.max_bytes:
            raise Rejected("oversized", f"{len(data)} bytes, over the {self.max_bytes}-byte media limit")
        kind = _MEDIA_TYPES.get(media_type)
        if kind is None:
            raise Rejected("unsupported_format", f"unknown media type {media_type!r}")
        allowed = self.formats[kind]
        fmt = sniff.normalise(declared_format)
        if fmt not in allowed:
            accepted = ", ".join(sorted(allowed))
            raise Rejected("unsupported_format", f"{media_type} format {declared_format!r} is not one of {accepted}")
        detected = sniff.detect(data)
        if not sniff.matches(fmt, detected):
            what = f"looks like {detected}" if detected else "matches no known signature"
            raise Rejected("content_mismatch", f"declared {fmt} but the content {what}")
        if kind != "image":
            return CheckedMedia(kind, fmt, data)
        try:
            info = sniff.image_info(data)
        except sniff.TooManyPixels as exc:
            raise Rejected("oversized", f"declared {fmt}: {exc}") from None
        except ValueError as exc:
            raise Rejected("corrupt", f"declared {fmt}: {exc}") from None
        # From the header, before a single pixel is decoded (finding H7: a 20 kB PNG of 13000x13000
        # would otherwise cost gigabytes in the decoder and its copies).
        pixels = info.width * info.height
        if pixels > self.max_pixels:
            raise Rejected("oversized", f"{info.width}x{info.height} image is {pixels} pixels, over the "
                           f"{self.max_pixels}-pixel limit")
        return CheckedMedia(kind, fmt, data, info.width, info.height)
