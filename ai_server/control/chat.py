"""Typed conversations: ChatRequest on ``naila/chat/{session}/request`` -> LLM -> ChatReply on ``.../reply``.

The answer comes from the same LLM and history machinery as spoken turns
(:class:`ai_server.conversation.Conversations`), keyed by session *and* conversation id, so
a client keeps its thread by repeating ``conversation_id`` and cannot read another session's
thread by guessing one. A request without ``conversation_id`` starts a new conversation; the
reply always carries the id to continue with.

ChatReply semantics (documented for clients):

* ``text`` set, ``error`` null: the answer.
* ``text`` empty, ``error`` set: no answer (the LLM failed or timed out, or the request was
  refused before it reached the LLM: malformed, rate limited, busy).
* ``text`` set *and* ``error`` set: the answer, but ``speak_on`` could not be honoured (unknown
  or offline device, no hub stream, over the announcement budget AI_ANNOUNCE_PER_MIN, which all
  sessions share); ``error`` says why. Speech that starts and then fails
  (TTS) is only logged and counted (``naila_ai_mqtt_events{event="speech_failed"}``): the
  reply has gone out by then.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from datetime import datetime

from ai_server.assist.core import AssistContext, AssistReply
from ai_server.control.metrics import ControlMetrics
from ai_server.control.speech import CHAT_ASKER, Speaker, SpeakError
from ai_server.control.wire import Publish, send
from ai_server.pipeline import Pipeline, Seen
from ai_server.store.transcripts import chat_asker
from shared.aio import closing
from shared.errors import one_line
from shared.mqtt import ChatReply, ChatRequest, build, outbound, topics
from shared.mqtt.limits import MAX_ERROR_LEN, MAX_TEXT_LEN

log = logging.getLogger(__name__)


def new_conversation_id() -> str:
    return f"chat-{uuid.uuid4().hex[:16]}"


def reply_message(session_id: str, conversation_id: str, text: str = "", error: str | None = None) -> ChatReply:
    """A ChatReply with text and error cut to the wire limits."""
    return build(
        ChatReply,
        session_id=session_id,
        text=text[:MAX_TEXT_LEN],
        conversation_id=conversation_id,
        error=None if error is None else (error.strip() or "error")[:MAX_ERROR_LEN],
    )


class Chat:
    def __init__(
        self,
        publish: Publish,
        pipeline: Pipeline,
        speaker: Speaker,
        metrics: ControlMetrics,
        *,
        timeout_s: float,
        max_conversations: int = 256,
        assist: Callable[[str, AssistContext], Awaitable[AssistReply | None]] | None = None,
    ) -> None:
        self._publish = publish
        self.pipeline = pipeline
        self.speaker = speaker
        self.metrics = metrics
        self.timeout_s = timeout_s
        self.max_conversations = max_conversations
        # One LLM call at a time from MQTT: the model is shared with spoken turns, which must
        # not queue behind a burst of typed questions.
        self._llm_slot = asyncio.Semaphore(1)
        self._threads: OrderedDict[str, None] = OrderedDict()  # history keys, least recently used first
        # The intent fast path (ai_server.assist.router.AssistRouter.answer; None with ASSIST_ENABLED=false):
        # "what time is it in Tokyo" typed is answered by code as it is spoken.
        self.assist = assist

    async def publish_reply(self, reply: ChatReply) -> None:
        await send(self._publish, outbound(topics.chat_reply(reply.session_id), reply))

    async def on_request(self, request: ChatRequest) -> ChatReply:
        """Answer one ChatRequest (and speak it if asked); publishes and returns the reply."""
        conversation_id = request.conversation_id or new_conversation_id()
        room = ""  # where the answer will be heard, for the system prompt
        if request.speak_on is not None:
            registry = self.speaker.registry
            target = registry.get(request.speak_on)
            if target is not None:
                room = target.room or ""
            elif registry.in_room(request.speak_on):
                room = request.speak_on
        try:
            command = await self._command(request, room)
            seen = Seen(answer=command.text) if command is not None else await self._look(request, room)
            if seen.answer:  # a fact from the store, or "no camera shows it": said as it is
                text = seen.answer
                self.pipeline.conversations.record(self._thread(request.session_id, conversation_id), request.text,
                                                   text, room=room)
            else:
                text = await self.ask(request.session_id, conversation_id, request.text, room=room,
                                      visual=seen.prompt)
        except Exception as exc:
            self.metrics.event("chat_failed")
            log.warning("chat %s/%s: no answer: %s", request.session_id, conversation_id, one_line(exc))
            reply = reply_message(request.session_id, conversation_id, error=f"no answer: {one_line(exc)}")
            await self.publish_reply(reply)
            return reply
        error = None
        if request.speak_on is not None:
            try:
                self.speaker.speak(request.speak_on, text, asker=CHAT_ASKER)  # one budget for all sessions
            except SpeakError as exc:
                self.metrics.event("speech_refused")
                error = f"not spoken on {request.speak_on}: {exc}"
                log.info("chat %s/%s: %s", request.session_id, conversation_id, error)
        self.metrics.event("chat_answered")
        reply = reply_message(request.session_id, conversation_id, text, error)
        await self.publish_reply(reply)
        return reply

    async def ask(
        self,
        session_id: str,
        conversation_id: str,
        question: str,
        *,
        room: str = "",
        attachment: str = "",
        visual: str = "",
    ) -> str:
        """The LLM's answer to ``question`` in this conversation; recorded in its history.

        ``attachment`` describes media the user sent with the question; ``visual`` is what vision
        found in it (ai_server.media.analysis: the spec §8.11 context). Without ``visual`` the
        model is told it cannot see the content. Raises on LLM failure or after ``timeout_s``.
        """
        key = self._thread(session_id, conversation_id)
        conversations = self.pipeline.conversations
        if attachment and not visual:
            visual = (f"The user attached a file ({attachment}). You cannot see or hear its content yet: "
                      "answer from the description only, and say so if the question needs the content.")
        messages = conversations.messages(key, question, room, visual)
        try:
            async with (
                self._llm_slot,
                asyncio.timeout(self.timeout_s),
                closing(self.pipeline.llm.stream(messages)) as it,
            ):
                pieces = [piece async for piece in it]
        except TimeoutError:
            raise TimeoutError(f"the model took longer than {self.timeout_s:g} s (AI_CHAT_TIMEOUT_S)") from None
        answer = "".join(pieces).strip()
        if not answer:
            raise RuntimeError("the model produced an empty answer")
        conversations.record(key, question if not attachment else f"{question} [attached: {attachment}]", answer,
                             room=room)
        return answer

    async def _command(self, request: ChatRequest, room: str) -> AssistReply | None:
        """A household command's answer by code, or None (the LLM and the cameras answer). The asker is the
        session; a request failing here is the LLM's to answer, as when nothing matched."""
        if self.assist is None:
            return None
        now = datetime.now().astimezone()
        try:
            return await self.assist(request.text, AssistContext(now=now, room=room or None,
                                                                 session_id=request.session_id))
        except Exception as exc:
            self.metrics.event("chat_intent_failed")
            log.warning("chat %s: intent fast path failed: %s", request.session_id, one_line(exc))
            return None

    async def _look(self, request: ChatRequest, room: str) -> Seen:
        """A typed question goes through the same source selection as a spoken one (spec §8.10):
        "what did the porch camera see last night", "is anyone at the front door?". The asker is
        the session, also when the answer is spoken on a device: a session may hear its own history,
        never the device's (finding H3); the device's room still picks the cameras."""
        looker = self.pipeline.looker
        if looker is None:
            return Seen()
        try:
            return await looker.look(chat_asker(request.session_id), room, request.text)
        except Exception as exc:  # vision trouble costs the view, not the answer
            self.metrics.event("chat_visual_failed")
            log.warning("chat %s: visual context failed: %s", request.session_id, one_line(exc))
            return Seen()

    def _thread(self, session_id: str, conversation_id: str) -> str:
        # ':' cannot occur in a session id (a topic segment), so this never collides with a device id.
        key = f"chat:{session_id}:{conversation_id}"
        self._threads[key] = None
        self._threads.move_to_end(key)
        while len(self._threads) > self.max_conversations:
            oldest, _ = self._threads.popitem(last=False)
            self.pipeline.conversations.forget(oldest)
        return key
