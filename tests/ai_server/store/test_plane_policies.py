"""The control plane wires the store's policies: chat transcripts recorded, retention run at start-up and
counted, AI_KEEP_RAW_AUDIO handed to the store it opens."""

from __future__ import annotations

import pytest

from ai_server.fakes import FakeLLM
from tests.ai_server.control.conftest import ControlFactory, Watch, uid, until
from tests.ai_server.control.test_chat import chat

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


async def test_chat_is_transcribed_and_retention_runs(control_server: ControlFactory, watch: Watch) -> None:
    _server, plane = await control_server(llm=FakeLLM("Paris."))
    assert plane.media.store.keep_raw_audio is False  # spec 14.3 by default
    sid = uid("chat")
    reply = await chat(watch, sid, {"session_id": sid, "text": "capital of France?"})
    await _server.storage.transcripts.flush()
    [row] = plane.media.store.transcripts.query()
    assert (row.device_id, row.channel, row.user_text, row.reply_text) == (
        f"chat:{sid}:{reply['conversation_id']}", "chat", "capital of France?", "Paris.")
    await until(lambda: _server.storage.retention.metrics.runs >= 1)  # the start-up pass, in a worker thread
    assert "store_pruned_bytes_freed" in _server.storage.counters()  # GetStatus shows them, MQTT on or off


async def test_keep_raw_audio_reaches_the_store(control_server: ControlFactory) -> None:
    _server, plane = await control_server(settings={"ai_keep_raw_audio": True})
    assert plane.media.store.keep_raw_audio is True
