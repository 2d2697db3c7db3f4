"""Uploads from the web service or any client: ``naila/uploads/{session_id}/{image|audio|video}`` (spec §8.7, §8.9).

Every upload is answered on ``naila/chat/{session_id}/reply`` with a :class:`ChatReply` that
repeats the upload's ``conversation_id`` (a fresh one when it had none):

* refused (size, format whitelist, content that is not the declared format, an image that does
  not decode whole, and everything the plane refuses before decoding): ``text`` empty, ``error``
  says why;
* accepted without ``context``: ``text`` acknowledges what was stored (type, format, size,
  image size, media id);
* accepted with ``context`` (a question): ``text`` is the LLM's answer. An image is analysed
  first when an analyser is set (``analyser``, by ai_server/app.py when vision is on): YOLO
  objects, OCR text and a description, the spec §8.11 visual context, go into the prompt and
  into the record's analysis (``visual_context``). Otherwise the model gets a one-line
  description of the media and is told it cannot see it.

Accepted media is stored in the media store (source ``mqtt_upload``, with the session id).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from ai_server.control.chat import Chat, new_conversation_id, reply_message
from ai_server.control.errors import Rejected
from ai_server.control.media import DeviceMedia
from ai_server.control.media_check import CheckedMedia, MediaPolicy
from ai_server.control.metrics import ControlMetrics
from ai_server.media.analysis import Analysed, BadImage, DecodedImage, ImageAnalyser, decode_image
from ai_server.store import MediaRecord
from ai_server.store.transcripts import chat_asker
from ai_server.vision.ask import context_prompt
from shared.errors import one_line
from shared.mqtt import ChatReply, WebUpload

if TYPE_CHECKING:
    from ai_server.media.selection import SourceSelection

log = logging.getLogger(__name__)

#: Where a refusal is counted and logged: (topic, why).
Refused = Callable[[str, Rejected], None]


class Uploads:
    def __init__(
        self, policy: MediaPolicy, media: DeviceMedia, chat: Chat, refused: Refused, metrics: ControlMetrics,
        *, analyser: ImageAnalyser | None = None, selection: SourceSelection | None = None,
    ) -> None:
        self.policy = policy
        self.media = media
        self.chat = chat
        self.refused = refused  # the MQTT gate's accounting (InboundGuard.refused): counted and logged as one
        self.metrics = metrics
        self.analyser = analyser  # None when vision is off
        self.selection = selection  # spec §8.10 (step 1: the upload); None when vision is off

    async def on_upload(self, topic: str, upload: WebUpload) -> ChatReply:
        """Check, store and answer one decoded upload; publishes and returns the reply."""
        session_id = upload.session_id
        conversation_id = upload.conversation_id or new_conversation_id()
        question = upload.context.strip()
        try:
            checked = self.policy.check(upload.media_type, upload.format, upload.data)
            analysed = await self._analyse(checked, session_id, question)
        except Rejected as exc:
            self.refused(topic, exc)
            return await self._reply(session_id, conversation_id, error=f"refused ({exc.reason}): {exc.detail}")
        extra: dict[str, object] | None = None if analysed is None else {"visual_context": analysed.json()}
        try:
            record = await self.media.store_media(checked, source="mqtt_upload", session_id=session_id, extra=extra)
        except Exception as exc:
            self.metrics.event("upload_store_failed")
            log.exception("upload from session %s could not be stored", session_id)
            return await self._reply(session_id, conversation_id, error=f"upload could not be stored: {one_line(exc)}")
        self.metrics.event("upload_stored")
        description = checked.describe()
        log.info("upload %s from session %s stored as %s (%s)", upload.filename, session_id, record.id, description)
        visual = ""
        if checked.media_type == "audio":
            # Spec §8.13: uploaded audio goes through the same STT as a device's clip; a voice message
            # without a typed question is the question.
            transcript = await self._transcript(record)
            if transcript:
                visual = f"The attached audio ({description}) says: {transcript!r}"
                question = question or transcript
        if not question:
            return await self._reply(session_id, conversation_id, f"Received {upload.filename} ({description}), "
                                     f"stored as {record.id}.")
        if analysed is not None and self.selection is not None:
            chosen = await self.selection.select(chat_asker(session_id), "", question, attached=analysed,
                                                 attached_note=f"The user attached an image ({description})")
            visual = "" if chosen is None else chosen.prompt
        elif analysed is not None:
            context = analysed.context
            visual = context_prompt(f"The user attached an image ({description}). What vision found in it: "
                                    f"{context.analysis.description}", context)
        try:
            answer = await self.chat.ask(session_id, conversation_id, question, attachment=description, visual=visual)
        except Exception as exc:
            self.metrics.event("chat_failed")
            log.warning("upload question from session %s: no answer: %s", session_id, one_line(exc))
            return await self._reply(session_id, conversation_id,
                                     error=f"stored as {record.id}, but no answer: {one_line(exc)}")
        self.metrics.event("chat_answered")
        return await self._reply(session_id, conversation_id, answer)

    async def _transcript(self, record: MediaRecord) -> str:
        """The stored clip's transcript ("" when STT is off or cannot read the format)."""
        if self.media.stt is None or record.media_type != "audio":
            return ""
        done = await self.media.transcribe(record)
        text = (done.analysis or {}).get("transcript")
        if isinstance(text, str):
            self.metrics.event("upload_transcribed")
            return text.strip()
        return ""

    async def _analyse(self, checked: CheckedMedia, session_id: str, question: str) -> Analysed | None:
        """Decode an image whole (always: a truncated file must not be stored) and, for a question,
        analyse it; raises :class:`Rejected` for an image that does not decode."""
        if checked.media_type != "image":
            return None
        try:
            # Off the loop: a 50 MB image takes a while to decode.
            image: DecodedImage = await asyncio.to_thread(decode_image, checked.data, checked.format)
            if not question or self.analyser is None:
                return None
            return await self.analyser.analyse_decoded(image, source="mqtt_upload", session_id=session_id,
                                                       question=question)
        except BadImage as exc:
            raise Rejected(exc.reason, f"declared {checked.format}: {exc.detail}") from None

    async def _reply(
        self, session_id: str, conversation_id: str, text: str = "", error: str | None = None
    ) -> ChatReply:
        reply = reply_message(session_id, conversation_id, text, error)
        await self.chat.publish_reply(reply)
        return reply
