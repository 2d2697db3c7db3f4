"""The transcripts table: the v2 -> v3 migration of a real v2 file, and exchanges recorded from a voice turn
(the real Pipeline with the fake backends) and from typed chat, through the non-blocking sink."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import pytest

from ai_server.control.chat import Chat
from ai_server.conversation import Conversations
from ai_server.fakes import FakeLLM, FakeSTT, FakeTTS
from ai_server.pipeline import Pipeline
from ai_server.session import ConversationSession
from ai_server.store import MediaStore
from ai_server.store.schema import MIGRATIONS, SCHEMA_VERSION
from ai_server.store.transcripts import Recorded, TranscriptSink
from shared.contract import pb
from tests.ai_server.test_preemptive import frames, msg, queued, quiet, settle, tone

pytestmark = pytest.mark.unit

NOW = datetime(2026, 11, 23, 9, 30, tzinfo=UTC)


def test_a_v2_store_migrates_to_v3_keeping_media_and_events(tmp_path: Path) -> None:
    root = tmp_path / "media"
    (root / "files").mkdir(parents=True)
    (root / "files" / "abc.jpeg").write_bytes(b"jpg")
    # A store exactly as the v2 code left it: media + events, one row each, user_version 2.
    with sqlite3.connect(root / "media.sqlite3") as db:
        db.executescript(MIGRATIONS[0] + MIGRATIONS[1])
        db.execute("INSERT INTO media VALUES ('abc', 'alert_snapshot', 'door', NULL, 'porch', ?, 'image', 'jpeg', "
                   "3, 'files/abc.jpeg', 'x', NULL)", (NOW.isoformat(),))
        db.execute("INSERT INTO events VALUES (NULL, ?, 'door', 'porch', 'person_detected', 'person', 0.9, 1, "
                   "'alerted', 'abc', 'files/abc.jpeg')", (NOW.isoformat(),))
        db.execute("PRAGMA user_version=2")
    store = MediaStore(root)
    try:
        with sqlite3.connect(root / "media.sqlite3") as db:
            assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION >= 3  # later versions add tables
            indexes = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        assert {"transcripts_by_time", "events_by_media"} <= indexes
        record = store.get("abc")
        assert record is not None and record.stored and store.read("abc") == b"jpg"  # old rows: stored
        assert store.events.query()[0].media_id == "abc"
        added = store.transcripts.add(time=NOW, device_id="kitchen", room="kitchen", thread="kitchen",
                                      user_text="hi", reply_text="hello")
        assert store.transcripts.query() == [added] and added.channel == "voice"
    finally:
        store.close()
    MediaStore(root).close()  # reopening a v3 store migrates nothing


async def test_a_voice_turn_is_recorded_with_its_room(tmp_path: Path) -> None:
    store = MediaStore(tmp_path / "media")
    sink = TranscriptSink(store.transcripts, lambda: NOW)
    conversations = Conversations("sys", 4, sink=sink)
    pipeline = Pipeline(FakeSTT("what is on the calendar today"), FakeLLM("Nothing."), FakeTTS(), conversations)
    session = ConversationSession(pipeline)
    start = msg(pb.START, tone(300), device="kitchen-1")
    start.room = "kitchen"
    session.handle(start)
    frames(session, quiet(100), device="kitchen-1")
    session.handle(msg(pb.END, quiet(20), device="kitchen-1"))
    await settle()
    assert queued(session)[-1].is_final
    await sink.flush()
    [row] = store.transcripts.query()
    assert (row.time, row.device_id, row.room, row.thread, row.channel) == (NOW, "kitchen-1", "kitchen", "kitchen-1",
                                                                            "voice")
    assert (row.user_text, row.reply_text) == ("what is on the calendar today", "Nothing.")
    store.close()


async def test_typed_chat_is_recorded_too(tmp_path: Path) -> None:
    store = MediaStore(tmp_path / "media")
    sink = TranscriptSink(store.transcripts, lambda: NOW)
    conversations = Conversations("sys", 4, sink=sink)
    pipeline = Pipeline(FakeSTT(), FakeLLM("Paris."), FakeTTS(), conversations)
    chat = Chat(cast(Any, None), pipeline, cast(Any, None), cast(Any, None), timeout_s=5)
    assert await chat.ask("phone", "c1", "capital of France?", room="office") == "Paris."
    await sink.flush()
    [row] = store.transcripts.query()
    assert (row.device_id, row.room, row.channel) == ("chat:phone:c1", "office", "chat")
    assert (row.user_text, row.reply_text) == ("capital of France?", "Paris.")
    store.close()


async def test_the_sink_never_blocks_and_a_failing_store_costs_nothing(tmp_path: Path) -> None:
    store = MediaStore(tmp_path / "media")
    sink = TranscriptSink(store.transcripts, lambda: NOW)
    conversations = Conversations("sys", 0, sink=sink)  # history off: the transcript is still recorded
    conversations.record("hall", "q1", "a1", room="hall")
    conversations.record("hall", "", "ignored")  # nothing said: nothing recorded
    assert store.transcripts.query() == []  # queued, not yet written: record() did no disk I/O
    await sink.flush()
    assert [r.user_text for r in store.transcripts.query()] == ["q1"]
    store.close()
    conversations.record("hall", "q2", "a2")  # the store is closed: logged and counted, not raised
    await sink.flush()
    assert sink.failed == 1 and sink.written == 1


def test_a_sink_that_raises_does_not_cost_the_history() -> None:
    def broken(_: Recorded) -> None:
        raise RuntimeError("disk full")

    conversations = Conversations("sys", 4, sink=broken)
    conversations.record("hall", "q", "a")
    assert [e.user for e in conversations.history("hall")] == ["q"]
