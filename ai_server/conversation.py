"""What the LLM is told each turn: system prompt, visual context, recent history per device.

History is kept per device_id (not per conversation_id) so a kitchen device keeps its
thread across hub reconnects. A thread may follow the user to another room's device within
``follow_s`` (:meth:`Conversations.follow`, LLM_FOLLOW_USER_S), but only when set: 0, the default,
never follows, since nothing yet tells that the next speaker is the same person and a follow hands
one person's conversation to whoever speaks next elsewhere. It is bounded to ``history_turns`` exchanges. When full, the
oldest *half* goes at once rather than one exchange per turn: every eviction changes the
prompt right after the system message, which invalidates the LLM's cached prompt prefix
(a full re-evaluation: seconds for the embedded model on 2 cores), so it should happen
every few turns, not on every turn; the pipeline evaluates the new prefix as soon as the reply
ends (while it plays), so even that re-evaluation does not land on the next question. The prompt
is otherwise append-only and byte-stable: nothing in it changes between turns (no clock, the
room fixed per device), and a reply goes into history as the model generated it (not as spoken). The visual
context slot holds a short description of what the device's camera sees (filled by the
vision work); when set it goes in as a second system message.

The user's words go to the model as a written sentence (:func:`as_written`): Whisper writes
"What is the capital of France?" from clean audio but often "what is the capital of france" from
a browser's or a room microphone's, and the shipped 135M model answers the bare words worse and
sometimes echoes them back as its reply (docs/benchmarks.md, Embedded models). History keeps the
words as heard; the prompt renders them through the same function every turn, so it stays
byte-stable.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from ai_server.clauses import CLOSERS, SENTENCE_MARKS
from ai_server.llm import Message
from ai_server.store.transcripts import Recorded

log = logging.getLogger(__name__)

#: A sentence that opens with one of these and has no end mark is a question.
QUESTION_OPENERS: Final = frozenset(
    {
        "what", "what's", "who", "who's", "whom", "whose", "where", "where's", "when", "why", "how", "how's",
        "which", "is", "isn't", "are", "aren't", "am", "was", "wasn't", "were", "do", "does", "doesn't", "did",
        "didn't", "don't", "can", "can't", "could", "will", "won't", "would", "should", "shall", "may", "might",
        "have", "has", "had",
    }
)  # fmt: skip


def as_written(words: str) -> str:
    """``words`` as a sentence: a capital first letter and an end mark ("?" after a question word,
    else "."); text that already ends in a mark keeps it. Nothing else changes."""
    text = words.strip()
    if not text:
        return text
    if text[0].islower():
        text = text[0].upper() + text[1:]
    if text.rstrip(CLOSERS)[-1:] in SENTENCE_MARKS:
        return text
    first = text.split(maxsplit=1)[0].lower().strip(",")
    return text + ("?" if first in QUESTION_OPENERS else ".")


@dataclass(frozen=True)
class Exchange:
    user: str
    assistant: str


class Conversations:
    def __init__(
        self,
        system_prompt: str,
        history_turns: int,
        *,
        follow_s: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
        sink: Callable[[Recorded], None] | None = None,
    ) -> None:
        self.system_prompt = system_prompt
        # Where finished exchanges also go (the transcript table): a callback, so this module stays
        # free of storage; it must not block (ai_server.store.transcripts.TranscriptSink queues).
        self.sink = sink
        self.history_turns = history_turns
        self.follow_s = follow_s
        self._clock = clock
        self._history: dict[str, list[Exchange]] = {}
        # Cross-room: a device may continue another device's thread (see follow()).
        self._thread_of: dict[str, str] = {}
        self._last: dict[str, float] = {}  # thread -> time of its latest exchange
        self._voice: set[str] = set()  # devices that had voice turns (chat keys never follow)

    def _key(self, device_id: str) -> str:
        return self._thread_of.get(device_id, device_id)

    def follow(self, device_id: str) -> str | None:
        """A voice turn starts on ``device_id``: continue the user's conversation if they walked here.

        When another device's conversation had an exchange within ``follow_s`` and this device's
        own is older (or empty), this device takes that thread over: same history, new room.
        Without speaker identification this is a heuristic (two people talking in two rooms
        within the window share one thread), hence a setting; 0 turns it off.
        Returns the device whose thread was taken, or None.
        """
        self._voice.add(device_id)
        if self.follow_s <= 0:
            return None
        now = self._clock()
        own = self._key(device_id)
        own_last = self._last.get(own, float("-inf"))
        best: tuple[float, str, str] | None = None
        for other in self._voice:
            thread = self._key(other)
            last = self._last.get(thread)
            if other == device_id or thread == own or last is None:
                continue
            if now - last <= self.follow_s and last > own_last and (best is None or last > best[0]):
                best = (last, thread, other)
        if best is None:
            return None
        self._thread_of[device_id] = best[1]
        log.info("conversation follows the user from %s to %s", best[2], device_id)
        return best[2]

    def history(self, device_id: str) -> list[Exchange]:
        return list(self._history.get(self._key(device_id), ()))

    def messages(self, device_id: str, user_text: str, room: str = "", visual: str = "") -> list[Message]:
        """The prompt: system, history, then ``visual`` (what a camera sees, for this question only)
        just before the user's words, so the cached prefix of system + history stays valid."""
        system = self.system_prompt
        if room:
            system += f" The user is speaking from the {room}."
        out: list[Message] = [{"role": "system", "content": system}]
        for ex in self._history.get(self._key(device_id), ()):
            out.append({"role": "user", "content": as_written(ex.user)})
            out.append({"role": "assistant", "content": ex.assistant})
        if visual:
            out.append({"role": "system", "content": visual})
        out.append({"role": "user", "content": as_written(user_text)})
        return out

    def record(self, device_id: str, user_text: str, reply_text: str, *, room: str = "") -> None:
        """Remember one exchange (a cut-off reply is kept as far as it was spoken)."""
        if not user_text:
            return
        key = self._key(device_id)
        if self.sink is not None:  # also with history_turns 0: the transcript is not the prompt
            try:
                self.sink(Recorded(device_id, key, room, user_text, reply_text))
            except Exception:  # storage trouble must not cost the turn its history
                log.exception("conversation sink failed for %s", device_id)
        if self.history_turns <= 0:
            return
        self._last[key] = self._clock()
        hist = self._history.setdefault(key, [])
        if len(hist) >= self.history_turns:
            del hist[: len(hist) - self.history_turns // 2]
        hist.append(Exchange(user_text, reply_text))

    def forget(self, device_id: str) -> None:
        key = self._thread_of.pop(device_id, device_id)
        self._history.pop(key, None)
        self._last.pop(key, None)
        self._voice.discard(device_id)
