"""What a media blob really is, from its first bytes (magic numbers), and an image's size.

Why not trust the declared format: uploads come from browsers, apps and anything on the LAN,
and spec §15.3 asks for uploads to be checked before processing. A file that claims to be a
JPEG and is not goes no further.

Why a table here and not the ``filetype`` package: it reports Ogg Opus as plain "ogg" and an
``M4A`` MP4 as video, and the whitelist (spec §8.6, §12.2) needs exactly those distinctions;
the nine formats below are a dozen lines of well-documented signatures.

Image width and height come from Pillow, which only parses the header here (``Image.open``
is lazy); an image whose header Pillow cannot read is refused as corrupt, one over Pillow's
pixel limit (:func:`ai_server.media.analysis.limit_pixels`) as :class:`TooManyPixels`.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Final

from PIL import Image, UnidentifiedImageError

#: Declared names that mean the same format.
ALIASES: Final = {"jpg": "jpeg", "ogg": "opus", "oga": "opus"}

#: ISO base media (MP4) brands of still images (HEIF/AVIF): an ``ftyp`` box, but not a clip.
_IMAGE_BRANDS: Final = {b"heic", b"heix", b"mif1", b"msf1", b"avif", b"avis"}
_M4A_BRANDS: Final = {b"M4A ", b"M4B ", b"M4P "}
# The same container (ISO BMFF) is declared "m4a" for audio and "mp4" for video; both are accepted.
_SAME_CONTAINER: Final = {"m4a": {"m4a", "mp4"}, "mp4": {"mp4", "m4a"}}


def normalise(declared: str) -> str:
    """Lower-case a declared format and map aliases (``jpg`` -> ``jpeg``)."""
    name = declared.strip().lower()
    return ALIASES.get(name, name)


def detect(data: bytes) -> str | None:
    """The format of ``data`` by its signature, or ``None`` when it is none we know.

    Returns one of: jpeg, png, gif, webp, wav, opus, ogg (not Opus), mp3, m4a, mp4, webm, mkv.
    """
    head = data[:512]
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "gif"
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "webp"
    if head.startswith(b"RIFF") and head[8:12] == b"WAVE":
        return "wav"
    if head.startswith(b"OggS"):
        # The first Ogg page holds the codec's identification header: "OpusHead" for Opus
        # (RFC 7845 §5.1), right after the 27-byte page header and its segment table.
        return "opus" if b"OpusHead" in head[:300] else "ogg"
    if head.startswith(b"ID3") or _mpeg_audio_frame(head):
        return "mp3"
    if head[4:8] == b"ftyp" and len(head) >= 12:
        major = head[8:12]
        if major in _IMAGE_BRANDS:
            return None
        return "m4a" if major in _M4A_BRANDS else "mp4"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        # EBML header: the DocType element (0x4282, then a one-byte size) says WebM or Matroska.
        if b"\x42\x82\x84webm" in head[:64]:
            return "webm"
        if b"\x42\x82\x88matroska" in head[:64]:
            return "mkv"
    return None


def _mpeg_audio_frame(head: bytes) -> bool:
    """An MPEG audio layer III frame header without an ID3 tag (11 sync bits, sane fields)."""
    if len(head) < 4 or head[0] != 0xFF or head[1] & 0xE0 != 0xE0:
        return False
    version = (head[1] >> 3) & 0b11  # 0b01 is reserved
    layer = (head[1] >> 1) & 0b11  # 0b01 is layer III
    bitrate = head[2] >> 4  # 0b1111 is invalid
    sample_rate = (head[2] >> 2) & 0b11  # 0b11 is reserved
    return version != 0b01 and layer == 0b01 and bitrate != 0b1111 and sample_rate != 0b11


def matches(declared: str, detected: str | None) -> bool:
    """True when content detected as ``detected`` may be declared as ``declared`` (normalised)."""
    if detected is None:
        return False
    return detected in _SAME_CONTAINER.get(declared, {declared})


class TooManyPixels(ValueError):
    """The header declares more pixels than the process allows (a decompression bomb)."""


@dataclass(frozen=True, slots=True)
class ImageInfo:
    width: int
    height: int


def image_info(data: bytes) -> ImageInfo:
    """Width and height from the image header; raises ``ValueError`` when it cannot be read."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            width, height = img.size
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise TooManyPixels(str(exc)) from None
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise ValueError(f"not a readable image: {exc}") from None
    if width <= 0 or height <= 0:
        raise ValueError(f"image has no pixels ({width}x{height})")
    return ImageInfo(int(width), int(height))
