"""Uploads from the web service or any client: ``naila/uploads/{session_id}/{image|audio|video}`` (spec §8.7, §8.9).

Every upload is answered on ``naila/chat/{session_id}/reply`` with a :class:`ChatReply` that
repeats the upload's ``conversation_id`` (a fresh one when it had none):

* refused (size, format whitelist, content that is not the declared format, unreadable image,
  and everything the plane refuses before decoding): ``text`` empty, ``error`` says why;
* accepted without ``context``: ``text`` acknowledges what was stored (type, format, size,
  image size, media id);
* accepted with ``context`` (a question): ``text`` is the LLM's answer, given a one-line
  description of the media (there is no vision model yet, so the model does not see it).

Accepted media is stored in the media store (source ``mqtt_upload``, with the session id).
"""

from __future__ import annotations

import logging

from ai_server.control.chat import Chat, new_conversation_id, reply_message
from ai_server.control.inbound import InboundGuard, Rejected
from ai_server.control.media import DeviceMedia
from ai_server.control.media_check import MediaPolicy
from ai_server.control.metrics import ControlMetrics
from ai_server.pipeline import one_line
from shared.mqtt import ChatReply, WebUpload

log = logging.getLogger(__name__)


class Uploads:
    def __init__(
        self, policy: MediaPolicy, media: DeviceMedia, chat: Chat, guard: InboundGuard, metrics: ControlMetrics
    ) -> None:
        self.policy = policy
        self.media = media
        self.chat = chat
        self.guard = guard
        self.metrics = metrics

    async def on_upload(self, topic: str, upload: WebUpload) -> ChatReply:
        """Check, store and answer one decoded upload; publishes and returns the reply."""
        session_id = upload.session_id
        conversation_id = upload.conversation_id or new_conversation_id()
        try:
            checked = self.policy.check(upload.media_type, upload.format, upload.data)
        except Rejected as exc:
            self.guard.refused(topic, exc)
            reply = reply_message(session_id, conversation_id, error=f"refused ({exc.reason}): {exc.detail}")
            await self.chat.publish_reply(reply)
            return reply
        try:
            record = await self.media.store_media(checked, source="mqtt_upload", session_id=session_id)
        except Exception as exc:
            self.metrics.event("upload_store_failed")
            log.exception("upload from session %s could not be stored", session_id)
            reply = reply_message(session_id, conversation_id, error=f"upload could not be stored: {one_line(exc)}")
            await self.chat.publish_reply(reply)
            return reply
        self.metrics.event("upload_stored")
        description = checked.describe()
        log.info("upload %s from session %s stored as %s (%s)", upload.filename, session_id, record.id, description)
        if not upload.context.strip():
            text = f"Received {upload.filename} ({description}), stored as {record.id}."
            reply = reply_message(session_id, conversation_id, text)
            await self.chat.publish_reply(reply)
            return reply
        try:
            answer = await self.chat.ask(session_id, conversation_id, upload.context.strip(), attachment=description)
        except Exception as exc:
            self.metrics.event("chat_failed")
            log.warning("upload question from session %s: no answer: %s", session_id, one_line(exc))
            error = f"stored as {record.id}, but no answer: {one_line(exc)}"
            reply = reply_message(session_id, conversation_id, error=error)
        else:
            self.metrics.event("chat_answered")
            reply = reply_message(session_id, conversation_id, answer)
        await self.chat.publish_reply(reply)
        return reply
