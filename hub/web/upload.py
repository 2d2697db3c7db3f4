"""Image questions from the web app: HTTP upload -> MQTT WebUpload -> ChatReply -> HTTP answer.

Spec 8.7/8.9: the web service does not talk to the AI server directly; it publishes the upload
on ``naila/uploads/{session_id}/image`` exactly as any other client would (``context`` = the
question) and waits for the answer on ``naila/chat/{session_id}/reply``.

The upload is checked before anything is published: at most ``MEDIA_MAX_UPLOAD_SIZE`` bytes
(the MQTT uploads' limit, shared.config.MediaSettings), and a JPEG, PNG or WebP by its first
bytes (the browser's content type and file name are not trusted).

Matching answers: every upload gets a fresh ``conversation_id``; the AI server's ChatReply
is expected to repeat it. A reply on the session's topic with another conversation id
answers the session's oldest waiting upload.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import unquote

from shared.mqtt import (
    MEDIA_MAX_UPLOAD_SIZE,
    ChatReply,
    MessageError,
    OutboundMessage,
    WebUpload,
    build,
    decode_message,
    outbound,
    topics,
)

log = logging.getLogger("naila.hub.web")

IMAGE_FORMATS = ("jpeg", "png", "webp")
MAX_PENDING = 8  # uploads waiting for an answer at once: each holds its image in memory until published


class UploadError(Exception):
    """An upload refused; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Publisher(Protocol):
    """The hub's MQTT link as the bridge uses it (hub.mqtt_control.HubMqtt)."""

    @property
    def connected(self) -> bool: ...

    async def publish(self, msg: OutboundMessage) -> None: ...


def sniff_image(data: bytes) -> str | None:
    """The image format by its magic bytes, or None when it is not one we accept."""
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None


_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9_. -]+")


def safe_filename(name: str | None, fmt: str) -> str:
    """A bare, printable file name for the WebUpload (never a path), with the sniffed extension."""
    # Some clients percent-encode the multipart file name (RFC 7578 allows it): decode, then drop any path.
    base = unquote(name or "").replace("\\", "/").rsplit("/", 1)[-1]
    base = _UNSAFE_NAME.sub("_", base).strip(" .")[:100]
    stem = base.rsplit(".", 1)[0] if "." in base else base
    ext = "jpg" if fmt == "jpeg" else fmt
    return f"{stem or 'upload'}.{ext}"


def _encode(
    session_id: str, fmt: str, filename: str, question: str, conversation_id: str, image: bytes
) -> OutboundMessage:
    """The WebUpload for one image question, validated and serialized (run in a thread)."""
    msg = build(
        WebUpload,
        session_id=session_id,
        media_type="image",
        format=fmt,
        filename=filename,
        context=question,
        conversation_id=conversation_id,
        data=image,
    )
    return outbound(topics.upload(session_id, "image"), msg)


@dataclass
class _Pending:
    session_id: str
    conversation_id: str
    future: asyncio.Future[ChatReply]


class UploadBridge:
    """Publishes image questions and hands each its ChatReply."""

    def __init__(
        self,
        mqtt: Publisher | None,
        *,
        timeout_s: float,
        max_bytes: int = MEDIA_MAX_UPLOAD_SIZE,
        formats: tuple[str, ...] = IMAGE_FORMATS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.mqtt = mqtt
        self.timeout_s = timeout_s
        self.max_bytes = max_bytes
        self.formats = formats
        self._clock = clock
        self._pending: list[_Pending] = []

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def on_mqtt(self, topic: str, payload: bytes) -> None:
        """Handler for ``naila/chat/+/reply``."""
        try:
            _parsed, message = decode_message(topic, payload)
        except MessageError as err:
            log.info("upload bridge: dropped chat reply on %r: %s", topic[:200], err)
            return
        if not isinstance(message, ChatReply):
            return
        waiting = [p for p in self._pending if p.session_id == message.session_id and not p.future.done()]
        exact = [p for p in waiting if p.conversation_id == message.conversation_id]
        candidates = exact or waiting
        if candidates:
            candidates[0].future.set_result(message)

    def check(self, image: bytes) -> str:
        """The image's format if it may be published: within the size limit and of an accepted format."""
        if len(image) > self.max_bytes:
            raise UploadError(413, f"image over {self.max_bytes} bytes")
        fmt = sniff_image(image)
        if fmt is None or fmt not in self.formats:
            raise UploadError(415, f"not an image of an accepted format ({', '.join(self.formats)})")
        return fmt

    async def ask(
        self,
        session_id: str,
        image: bytes,
        question: str,
        filename: str | None,
    ) -> dict[str, object]:
        """Publish one image question and wait for its answer. Raises UploadError."""
        fmt = self.check(image)
        if self.mqtt is None:
            raise UploadError(503, "the hub has no MQTT broker configured (HUB_MQTT), so it cannot reach the AI server")
        if not self.mqtt.connected:
            raise UploadError(503, "the hub is not connected to the MQTT broker right now; try again shortly")
        if len(self._pending) >= MAX_PENDING:
            raise UploadError(429, "too many image questions waiting for an answer; try again shortly")
        conversation_id = f"upload-{secrets.token_hex(8)}"
        pending = _Pending(session_id, conversation_id, asyncio.get_running_loop().create_future())
        # Counted as waiting before the encode, so MAX_PENDING also bounds the encodes in flight.
        self._pending.append(pending)
        started = self._clock()
        try:
            try:
                # Base64 and JSON of up to MEDIA_MAX_UPLOAD_SIZE take ~100 ms: in a thread, so every
                # device's audio on the event loop keeps flowing meanwhile (M9).
                out = await asyncio.to_thread(
                    _encode, session_id, fmt, safe_filename(filename, fmt), question, conversation_id, image
                )
            except MessageError as err:
                raise UploadError(400, f"upload refused: {err}") from None
            try:
                await self.mqtt.publish(out)
            except Exception as err:  # aiomqtt.MqttError, or the link dropped mid-publish
                raise UploadError(503, f"could not publish the upload: {err}") from None
            try:
                async with asyncio.timeout(self.timeout_s):  # not wait_for: see shared/aio.py
                    reply = await asyncio.shield(pending.future)
            except TimeoutError:
                raise UploadError(504, f"no answer from the AI server within {self.timeout_s:.0f} s") from None
        finally:
            self._pending.remove(pending)
        return {
            "session_id": session_id,
            "conversation_id": reply.conversation_id,
            "answer": reply.text,
            "error": reply.error,
            "format": fmt,
            "bytes": len(image),
            "elapsed_ms": round((self._clock() - started) * 1000),
        }

    def close(self) -> None:
        for p in self._pending:
            if not p.future.done():
                p.future.set_exception(UploadError(503, "the hub is shutting down"))
        with contextlib.suppress(Exception):
            for p in self._pending:
                p.future.exception()  # mark retrieved: no "never retrieved" warnings at exit
