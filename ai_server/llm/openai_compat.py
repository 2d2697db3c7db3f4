"""Any OpenAI-compatible chat server (Ollama, vLLM, llama.cpp server) via the ``openai`` client.

Streams ``chat.completions`` with ``stream=True``. No retries: a retry would double the
latency the user hears; a failure becomes LLM_FAILED for this turn and the next turn
tries again. Closing the iterator closes the HTTP response, which stops generation on
servers that watch for disconnects (llama.cpp server, vLLM, Ollama all do).

With :class:`~ai_server.llm.tools.Tools` (the household's actions) they go along as ``tools=``. A
reply that calls tools runs them through the intent registry, sends the results back and
streams the model's next reply (the sentence that is spoken), up to ``MAX_TOOL_ROUNDS`` rounds.
A plain answer still streams from its first piece: only content that starts like JSON (``{``,
``[``, a code fence, ``<tool_call>``) is held back, because small models served without a tool
parser write their call there instead of in ``tool_calls``.

Prompt caching: the messages are byte-stable and append-only from turn to turn
(:class:`~ai_server.conversation.Conversations`), so a server that caches prompt prefixes
evaluates only the new user turn. vLLM (``--enable-prefix-caching``) and Ollama do that on
their own; llama.cpp's server does it per request with ``cache_prompt`` (sent unless
LLM_CACHE_PROMPT=false: a server that refuses unknown fields would fail every turn).
"""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from ai_server.errors import LLMError
from ai_server.llm import Message
from ai_server.llm.tools import ToolCall, Tools, content_says, content_tool_calls, parse_arguments

log = logging.getLogger(__name__)

#: Model requests per turn: one that may call tools, then one without tools that answers, so
#: the turn always ends in a sentence. Offered tools again, Qwen 0.5B went on calling unrelated
#: ones after the time was told (a voice command is one step; chaining is not worth a loop here).
MAX_TOOL_ROUNDS = 2
_SUSPECT = ("{", "[", "```", "<tool")  # how a tool call written as content starts


@dataclass
class _Round:
    """One streamed model reply: its text and the tool calls it made (pieces merged by index)."""

    content: str = ""
    held: bool = False  # content looked like a tool call: not yielded yet
    calls: dict[int, dict[str, str]] = field(default_factory=dict)


class OpenAICompatLLM:
    name = "openai-compatible"

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str = "not-needed",
        max_tokens: int = 96,
        temperature: float = 0.3,
        timeout_s: float = 30.0,
        tools: Tools | None = None,
        cache_prompt: bool = True,
    ) -> None:
        from openai import AsyncOpenAI

        self.model = model
        self.base_url = base_url
        self._max_tokens = max_tokens
        self._temperature = temperature
        self._client = AsyncOpenAI(base_url=base_url, api_key=api_key, timeout=timeout_s, max_retries=0)
        self.tools = tools
        self._ids = itertools.count(1)
        self._extra_body: dict[str, Any] | None = {"cache_prompt": True} if cache_prompt else None
        log.info("LLM: OpenAI-compatible server %s, model %s", base_url, model)

    async def stream(self, messages: list[Message]) -> AsyncIterator[str]:
        specs = self.tools.specs() if self.tools is not None else []
        if not specs:
            async for piece in self._plain(messages):
                yield piece
            return
        assert self.tools is not None
        convo: list[dict[str, Any]] = [dict(m) for m in messages]
        question = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
        done: dict[str, str] = {}  # call (name + arguments) -> result: a repeated call is not run twice
        results: list[str] = []
        for round_no in range(MAX_TOOL_ROUNDS):
            last = round_no == MAX_TOOL_ROUNDS - 1
            turn = _Round()
            async for piece in self._round(convo, None if last else specs, turn):
                yield piece
            calls = [] if last else self._calls(turn)
            fresh = [c for c in calls if _key(c) not in done]  # a repeated call is not run again
            if not fresh:
                # The answer. Held content is said only as far as it is not JSON; a model that said
                # nothing after its tools, or only repeated a call, has its tools' results said.
                if turn.held or not turn.content.strip():
                    says = content_says(turn.content) if turn.held else None
                    if not says and results:
                        says = " ".join(results)
                    if says:
                        yield says
                return
            convo.append(
                {
                    "role": "assistant",
                    "content": "",
                    "tool_calls": [  # "" not None: some servers refuse null
                        {
                            "id": c.id,
                            "type": "function",
                            "function": {"name": c.name, "arguments": json.dumps(c.arguments)},
                        }
                        for c in fresh
                    ],
                }
            )
            for call in fresh:
                result = await self.tools.run(call, question)
                log.info("tool %s(%s) -> %s", call.name, json.dumps(call.arguments), result)
                done[_key(call)] = result
                results.append(result)
                convo.append({"role": "tool", "tool_call_id": call.id, "content": result})

    def _calls(self, turn: _Round) -> list[ToolCall]:
        assert self.tools is not None
        calls: list[ToolCall] = []
        for index in sorted(turn.calls):
            raw = turn.calls[index]
            try:
                args = parse_arguments(raw.get("arguments"))
            except ValueError as exc:  # the tool result tells the model; the turn goes on
                args = {"action": f"<{exc}>"}
            calls.append(ToolCall(raw.get("name", ""), args, raw.get("id") or f"call_{next(self._ids)}"))
        if not calls and turn.held:
            calls = [
                ToolCall(c.name, c.arguments, f"call_{next(self._ids)}")
                for c in content_tool_calls(turn.content, self.tools.names())
            ]
        return calls

    async def _round(
        self, convo: list[dict[str, Any]], specs: list[dict[str, Any]] | None, turn: _Round
    ) -> AsyncIterator[str]:
        """Stream one reply: content pieces are yielded as they come unless the content starts
        like a tool call; ``turn`` collects the content and the tool calls."""
        extra: dict[str, Any] = {"tools": specs, "tool_choice": "auto"} if specs else {}
        response = await self._create(convo, **extra)
        decided = False
        try:
            async for chunk in response:
                if not chunk.choices:
                    continue
                delta = chunk.choices[0].delta
                for tc in delta.tool_calls or ():
                    slot = turn.calls.setdefault(tc.index or 0, {})
                    if tc.id:
                        slot["id"] = tc.id
                    if tc.function is not None:
                        if tc.function.name:
                            slot["name"] = slot.get("name", "") + tc.function.name
                        if tc.function.arguments:
                            slot["arguments"] = slot.get("arguments", "") + tc.function.arguments
                piece = delta.content
                if not piece:
                    continue
                turn.content += piece
                if not decided:
                    head = turn.content.lstrip()
                    if not head:
                        continue
                    if any(head.startswith(s) for s in _SUSPECT):
                        turn.held = decided = True
                    elif not any(s.startswith(head) for s in _SUSPECT):  # "`" or "<to": wait for more
                        decided = True
                        yield turn.content
                    continue
                if not turn.held:
                    yield piece
        except Exception as exc:
            raise LLMError(f"{self.base_url}: stream broke: {type(exc).__name__}: {exc}") from exc
        finally:
            await response.close()
        if not decided and turn.content:  # only "`" or "<" came: hold it for the caller to decide
            turn.held = True

    async def _create(self, messages: list[dict[str, Any]], **extra: Any) -> Any:
        try:
            return await self._client.chat.completions.create(
                model=self.model,
                messages=messages,  # type: ignore[arg-type]
                stream=True,
                max_tokens=self._max_tokens,
                temperature=self._temperature,
                extra_body=self._extra_body,
                **extra,
            )
        except Exception as exc:
            raise LLMError(f"{self.base_url}: {type(exc).__name__}: {exc}") from exc

    async def _plain(self, messages: list[Message]) -> AsyncIterator[str]:
        """Without tools: exactly the request and streaming of before."""
        response = await self._create([dict(m) for m in messages])
        try:
            async for chunk in response:
                if not chunk.choices:
                    continue
                piece = chunk.choices[0].delta.content
                if piece:
                    yield piece
        except Exception as exc:
            raise LLMError(f"{self.base_url}: stream broke: {type(exc).__name__}: {exc}") from exc
        finally:
            await response.close()

    def first_clause_out(self) -> None:
        pass  # nothing computes here (the server, or the script, has its own cores)

    async def prefill(self, messages: list[Message]) -> None:
        """Not done: a remote server keeps its own prompt cache per request."""

    async def warm(self) -> None:
        """Nothing to load here; the server may be down at start-up and come up later."""

    async def close(self) -> None:
        await self._client.close()


def _key(call: ToolCall) -> str:
    return call.name + json.dumps(call.arguments, sort_keys=True)
