"""An optional image description from a vision-capable model behind an OpenAI-compatible server.

Configured with ``VISION_DESCRIBE_URL`` / ``VISION_DESCRIBE_MODEL``; the image goes as a
``data:`` URL in an ``image_url`` content part (the chat-completions shape llama.cpp, Ollama,
vLLM and OpenAI all accept). The model sees what YOLO and OCR found too, so its sentence agrees
with the objects in the context. Any failure (timeout, refusal, empty answer) returns None: the
caller keeps the composed description, and ``failures`` counts it.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from typing import Any

import cv2

from ai_server.vision.detector import BGRImage
from shared.errors import one_line
from shared.mqtt.limits import MAX_TEXT_LEN

log = logging.getLogger(__name__)

_PROMPT = ("Describe this image in one or two plain sentences for a voice assistant. "
           "An object detector and OCR already found: {found}")


class VisionDescriber:
    def __init__(self, base_url: str, model: str, *, api_key: str = "not-needed", timeout_s: float = 10.0) -> None:
        from openai import AsyncOpenAI  # the LLM backend's client: already a dependency

        self.model = model
        self.timeout_s = timeout_s
        self._client = AsyncOpenAI(base_url=base_url, api_key=api_key, timeout=timeout_s, max_retries=0)
        self.failures = 0
        self.described = 0

    async def describe(self, image: BGRImage, composed: str, question: str = "") -> str | None:
        """One or two sentences, or None (the composed description stays)."""
        try:
            url = await asyncio.to_thread(_data_url, image)
            # Any: the client's message TypedDicts cannot tell a content-part list from a string.
            content: Any = [
                {"type": "text", "text": _PROMPT.format(found=composed) + (f" The user asks: {question}"
                                                                           if question else "")},
                {"type": "image_url", "image_url": {"url": url}},
            ]
            async with asyncio.timeout(self.timeout_s):
                response: Any = await self._client.chat.completions.create(
                    model=self.model, messages=[{"role": "user", "content": content}], max_tokens=120,
                    temperature=0.2,
                )
            text = str(response.choices[0].message.content or "").strip()
            if not text:
                raise ValueError("empty description")
        except Exception as exc:  # the model is an extra: any failure falls back, never fails the analysis
            self.failures += 1
            log.warning("vision model description failed (%s); using the composed one", one_line(exc))
            return None
        self.described += 1
        return text[:MAX_TEXT_LEN]


def _data_url(image: BGRImage) -> str:
    """A JPEG (quality 85) data URL: a fraction of a PNG's size for a camera picture."""
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 85])
    if not ok:
        raise ValueError("cannot encode the image")
    return "data:image/jpeg;base64," + base64.b64encode(buf.tobytes()).decode("ascii")
