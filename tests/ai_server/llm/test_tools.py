"""The tool catalogue, the content-JSON reader, the tool loop (a scripted chat-completions server is
the one fake) and the embedded model catalogue's joining and hash check."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from ai_server.assist.core import AssistContext, AssistReply, IntentMatch, IntentRegistry
from ai_server.assist.tools import ToolBox
from ai_server.errors import StartupError
from ai_server.llm import models
from ai_server.llm.openai_compat import OpenAICompatLLM
from ai_server.llm.tools import ToolCall, content_says, content_tool_calls
from shared.aio import closing

NOW = dt.datetime(2026, 3, 4, 10, 42, tzinfo=dt.UTC)


def _registry(seen: list[IntentMatch]) -> IntentRegistry:
    reg = IntentRegistry()

    async def timer(match: IntentMatch, ctx: AssistContext) -> AssistReply:
        seen.append(match)
        return AssistReply(f"Timer set for {match.slots['minutes']} minutes.", match.intent)

    async def broken(match: IntentMatch, ctx: AssistContext) -> AssistReply:
        raise RuntimeError("boom")

    reg.register("HassStartTimer", timer)
    reg.register("HassCancelTimer", broken)
    return reg


def test_only_registered_actions_are_offered() -> None:
    specs = ToolBox(_registry([]), lambda: NOW).specs()
    assert [s["function"]["name"] for s in specs] == ["timer"]
    params = specs[0]["function"]["parameters"]
    assert params["properties"]["action"]["enum"] == ["start", "cancel"]
    assert list(params["properties"])[:3] == ["action", "minutes", "seconds"]  # minutes before hours


async def test_a_call_becomes_an_intent_match_and_bad_calls_a_one_line_error() -> None:
    seen: list[IntentMatch] = []
    box = ToolBox(_registry(seen), lambda: NOW)
    ok = await box.run(ToolCall("timer", {"action": "start", "minutes": "5", "hours": 0, "name": ""}), "five min")
    assert ok == "Timer set for 5 minutes."
    assert seen == [IntentMatch("HassStartTimer", {"minutes": 5}, "five min")]
    assert (await box.run(ToolCall("lights", {"action": "on"}))).startswith("Error: unknown tool")
    assert (await box.run(ToolCall("timer", {"action": "explode"}))).startswith("Error: tool 'timer' has no action")
    assert "minutes must be a whole number" in await box.run(ToolCall("timer", {"action": "start", "minutes": "x"}))
    assert await box.run(ToolCall("timer", {"action": "cancel"})) == "Error: HassCancelTimer failed (RuntimeError)."
    assert box.counts == {"tool_calls": 5, "tool_errors": 4}


async def test_tool_slots_become_the_slots_the_handlers_read() -> None:
    """A model fills "place" and "task"/"when"; the handlers read hassil's "city" (an IANA zone)
    and "reminder" (the rest of the sentence): one adapter keeps both paths on one handler."""
    seen: list[IntentMatch] = []
    reg = IntentRegistry()

    async def record(match: IntentMatch, ctx: AssistContext) -> AssistReply:
        seen.append(match)
        return AssistReply("ok", match.intent)

    for intent in ("HassGetCurrentTime", "NailaTimeIn", "NailaRemind", "NailaCancelReminder"):
        reg.register(intent, record)
    box = ToolBox(reg, lambda: NOW)
    assert await box.run(ToolCall("clock", {"action": "time", "place": "Tokyo"})) == "ok"
    assert await box.run(ToolCall("clock", {"action": "time"})) == "ok"
    assert (await box.run(ToolCall("clock", {"action": "time", "place": "Atlantis"}))).startswith("Error: no time zone")
    await box.run(ToolCall("reminder", {"action": "add", "task": "take out the trash", "when": "tomorrow at 8 am"}))
    await box.run(ToolCall("reminder", {"action": "cancel", "task": "trash"}))
    assert [(m.intent, dict(m.slots)) for m in seen] == [
        ("NailaTimeIn", {"city": "Asia/Tokyo"}),
        ("HassGetCurrentTime", {}),
        ("NailaRemind", {"reminder": "to take out the trash tomorrow at 8 am"}),
        ("NailaCancelReminder", {"reminder_name": "trash"}),
    ]


@pytest.mark.parametrize("content", [
    '{"name": "timer", "arguments": {"action": "start", "minutes": 5}}',
    '```json\n{"name": "timer", "arguments": {"action": "start", "minutes": 5}}\n```',
    '<tool_call>\n{"name": "timer", "arguments": "{\\"action\\": \\"start\\", \\"minutes\\": 5}"}\n</tool_call>',
    '[{"function": {"name": "timer", "parameters": {"action": "start", "minutes": 5}}}]',
    '{"name": "timer", "arguments": {"action": "start", "minutes": 5}}\n{"response": "ok"}',
])
def test_calls_written_as_content_are_read(content: str) -> None:
    assert content_tool_calls(content, {"timer"}) == [ToolCall("timer", {"action": "start", "minutes": 5})]


def test_what_is_said_of_held_content_is_never_json() -> None:
    assert content_tool_calls('{"name": "rm", "arguments": {}}', {"timer"}) == []
    assert content_says('{"name": "timer", "arguments": {}}\n{"response": "Timer set."}') == "Timer set."
    assert content_says('{"name": "timer", "arguments": {}}') is None
    assert content_says("[1] is a footnote") == "[1] is a footnote"


class Scripted:
    """Answers each chat request with the next scripted reply, streamed as SSE chunks."""

    def __init__(self, replies: list[dict[str, Any]], gate: asyncio.Event | None = None) -> None:
        self.replies = replies
        self.requests: list[dict[str, Any]] = []
        self.gate = gate  # held open after the first piece until the test sets it

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(body)
        reply = self.replies[len(self.requests) - 1]
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        deltas = [{"content": p} for p in reply.get("content", [])]
        for i, call in enumerate(reply.get("tool_calls", [])):
            deltas.append({"tool_calls": [{"index": i, "id": f"c{i}", "type": "function",
                                           "function": {"name": call[0], "arguments": ""}}]})
            deltas.append({"tool_calls": [{"index": i, "function": {"arguments": json.dumps(call[1])}}]})
        for n, delta in enumerate(deltas):
            chunk = {"id": "x", "object": "chat.completion.chunk", "created": int(time.time()), "model": "m",
                     "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
            await resp.write(f"data: {json.dumps(chunk)}\n\n".encode())
            if n == 0 and self.gate is not None:
                await self.gate.wait()
        await resp.write(b"data: [DONE]\n\n")
        return resp


async def _serve(fake: Scripted) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_post("/v1/chat/completions", fake.chat)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/v1"  # type: ignore[union-attr]
    await runner.cleanup()


async def _run(fake: Scripted, seen: list[IntentMatch]) -> tuple[list[str], OpenAICompatLLM]:
    async for url in _serve(fake):
        llm = OpenAICompatLLM(url, "m", tools=ToolBox(_registry(seen), lambda: NOW))
        async with closing(llm.stream([{"role": "user", "content": "set a timer for 5 minutes"}])) as it:
            pieces = [p async for p in it]
        await llm.close()
        return pieces, llm
    raise AssertionError("unreachable")


async def test_native_tool_calls_run_and_the_next_reply_is_said_without_tools() -> None:
    seen: list[IntentMatch] = []
    fake = Scripted([{"tool_calls": [("timer", {"action": "start", "minutes": 5})]},
                     {"content": ["Your timer ", "is set."]}])
    pieces, _ = await _run(fake, seen)
    assert "".join(pieces) == "Your timer is set."
    assert [m.intent for m in seen] == ["HassStartTimer"]
    assert "tools" in fake.requests[0] and "tools" not in fake.requests[1]
    tool_msg = fake.requests[1]["messages"][-1]
    assert tool_msg == {"role": "tool", "tool_call_id": "c0", "content": "Timer set for 5 minutes."}


async def test_a_call_in_the_content_runs_and_json_is_never_said() -> None:
    seen: list[IntentMatch] = []
    fake = Scripted([{"content": ['{"name": "timer", ', '"arguments": {"action": "start", "minutes": 5}}']},
                     {"content": ['{"name": "timer", "arguments": {"action": "start", "minutes": 5}}']}])
    pieces, _ = await _run(fake, seen)
    assert pieces == ["Timer set for 5 minutes."]  # the model only repeated itself: the result is said
    assert len(seen) == 1


async def test_a_plain_answer_streams_its_first_piece_before_the_reply_ends() -> None:
    gate = asyncio.Event()
    fake = Scripted([{"content": ["Paris ", "is the capital."]}], gate)
    async for url in _serve(fake):
        llm = OpenAICompatLLM(url, "m", tools=ToolBox(_registry([]), lambda: NOW))
        async with closing(llm.stream([{"role": "user", "content": "capital of france"}])) as it:
            first = await asyncio.wait_for(anext(it), 10)  # the server holds the rest until the gate opens
            gate.set()
            rest = [p async for p in it]
        await llm.close()
    assert first == "Paris " and rest == ["is the capital."]


def _fake_parts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, blobs: list[bytes]) -> models.EmbeddedModel:
    pkgs = []
    for i, blob in enumerate(blobs, start=1):
        d = tmp_path / "site" / f"fakepart{i}" / "data"
        d.mkdir(parents=True)
        (d.parent / "__init__.py").write_text("")
        (d / f"part{i:02d}.bin").write_bytes(blob)
        pkgs.append(f"fakepart{i}")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    model = models.EmbeddedModel("fake", "fake.gguf", tuple(pkgs),
                                 hashlib.sha256(b"".join(blobs)).hexdigest(), 6, "pip install fake")
    monkeypatch.setitem(models.CATALOGUE, "fake", model)
    return model


def test_split_model_is_joined_once_and_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_parts(tmp_path, monkeypatch, [b"abc", b"def"])
    path = models.model_path("fake", tmp_path / "cache")
    assert path.read_bytes() == b"abcdef"
    mtime = path.stat().st_mtime_ns
    assert models.model_path("fake", tmp_path / "cache").stat().st_mtime_ns == mtime  # not joined again
    path.write_bytes(b"abcdeX")  # corrupted on disk: the stamp no longer matches, the hash is checked
    with pytest.raises(StartupError, match=r"has sha256 .* expected"):
        models.model_path("fake", tmp_path / "cache")


def test_wrong_parts_are_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = _fake_parts(tmp_path, monkeypatch, [b"abc", b"def"])
    monkeypatch.setitem(models.CATALOGUE, "fake", models.EmbeddedModel(
        "fake", "fake.gguf", model.packages, "0" * 64, 6, "pip install fake"))
    with pytest.raises(StartupError, match="joined parts have sha256"):
        models.model_path("fake", tmp_path / "cache")
    assert not list((tmp_path / "cache").iterdir())  # no half or wrong model left behind
    with pytest.raises(StartupError, match="unknown LLM_EMBEDDED_MODEL"):
        models.model_path("gpt-5")


def test_the_pinned_qwen_parts_join_to_the_pinned_hash() -> None:
    # Installed by scripts/setup.sh (extra llm-qwen05); joined once into ~/.cache/naila/models.
    assert models.model_path("qwen2.5-0.5b").stat().st_size == models.CATALOGUE["qwen2.5-0.5b"].size
