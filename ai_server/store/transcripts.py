"""Conversation transcripts: one row per finished exchange, spoken or typed.

Written through :class:`TranscriptSink` (the sink of :class:`ai_server.conversation.Conversations`),
read by :mod:`ai_server.media.history` for "what was I asking about yesterday". Text only: the
audio of a turn is never stored (spec §14.3). Pruned by age with the event history
(:mod:`ai_server.store.retention`).

The table lives in the media store's database, behind its lock; :class:`TranscriptStore` is
blocking, :class:`TranscriptSink` is the event loop's non-blocking front.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final, Literal

from ai_server.store.filters import time_query

log = logging.getLogger(__name__)

Channel = Literal["voice", "chat"]

_COLUMNS: Final = "id, time, device_id, room, thread, channel, user_text, reply_text"
#: Chat threads are keyed ``chat:<session>:<conversation>`` (ai_server/control/chat.py).
CHAT_PREFIX: Final = "chat:"


def chat_asker(session_id: str) -> str:
    """Who asks from a chat session, as a looker's device id (ai_server.media.history.Asker): never a
    device id, since ':' cannot occur in one."""
    return f"{CHAT_PREFIX}{session_id}"


@dataclass(frozen=True, slots=True)
class TranscriptRecord:
    id: int
    time: datetime
    device_id: str
    room: str
    thread: str
    channel: str
    user_text: str
    reply_text: str


class TranscriptStore:
    """The ``transcripts`` table; blocking (call through ``asyncio.to_thread`` from the event loop)."""

    def __init__(self, db: sqlite3.Connection, lock: threading.Lock) -> None:
        self._db = db
        self._lock = lock

    def add(self, *, time: datetime, device_id: str, room: str, thread: str, user_text: str,
            reply_text: str) -> TranscriptRecord:
        when = time.astimezone(UTC)
        channel: Channel = "chat" if device_id.startswith(CHAT_PREFIX) else "voice"
        with self._lock:
            cur = self._db.execute(
                f"INSERT INTO transcripts ({_COLUMNS}) VALUES (NULL, ?, ?, ?, ?, ?, ?, ?)",
                (when.isoformat(), device_id, room, thread, channel, user_text, reply_text),
            )
            row_id = cur.lastrowid
        assert row_id is not None
        return TranscriptRecord(row_id, when, device_id, room, thread, channel, user_text, reply_text)

    def query(self, *, since: datetime | None = None, until: datetime | None = None,
              channel: Channel | None = None, device_id: str | None = None, device_prefix: str | None = None,
              limit: int = 100, newest_first: bool = True) -> list[TranscriptRecord]:
        """Exchanges with ``since <= time < until``, of one ``device_id`` and/or those whose
        ``device_id`` starts with ``device_prefix`` (a chat session's threads: ``chat:<session>:``)."""
        sql, args = time_query("transcripts", _COLUMNS, since=since, until=until, newest_first=newest_first,
                               limit=limit, equal={"channel": channel, "device_id": device_id},
                               prefix={"device_id": device_prefix})
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
        return [
            TranscriptRecord(int(r[0]), datetime.fromisoformat(str(r[1])), str(r[2]), str(r[3]), str(r[4]),
                             str(r[5]), str(r[6]), str(r[7]))
            for r in rows
        ]


@dataclass(frozen=True)
class Recorded:
    """One finished exchange, as handed to ``Conversations.sink``. Defined here, in the store layer,
    so the store takes it without importing the conversation logic above it."""

    device_id: str
    thread: str  # the history key: another device's when the user walked over (follow)
    room: str
    user: str
    assistant: str


class TranscriptSink:
    """``Conversations.sink``: takes the time now, writes in a worker thread, never blocks the loop.

    One write at a time, in order, through a queue drained by one task: the SQLite lock would
    serialise them anyway, and a burst of turns must not start a thread each. ``close`` writes
    what is queued, then stops (before the store closes).
    """

    def __init__(self, store: TranscriptStore, now: Callable[[], datetime]) -> None:
        self.store = store
        self.now = now
        self._queue: asyncio.Queue[tuple[datetime, Recorded] | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self.written = 0
        self.failed = 0

    def __call__(self, exchange: Recorded) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._drain(), name="transcript-writer")
        self._queue.put_nowait((self.now(), exchange))

    async def _drain(self) -> None:
        while (item := await self._queue.get()) is not None:
            when, ex = item
            try:
                await asyncio.to_thread(self.store.add, time=when, device_id=ex.device_id, room=ex.room,
                                        thread=ex.thread, user_text=ex.user, reply_text=ex.assistant)
                self.written += 1
            except Exception:  # a full disk must not cost the user the conversation: log, count, go on
                self.failed += 1
                log.exception("transcript of %s not stored", ex.device_id)

    async def flush(self) -> None:
        """Wait until everything queued so far is written (tests, shutdown)."""
        if self._task is None:
            return
        self._queue.put_nowait(None)
        task, self._task = self._task, None
        await task

    async def close(self) -> None:
        await self.flush()
