"""The tool-calling wire shapes of the OpenAI-compatible engine: what a tool call is, what the engine
needs of the tools it offers (:class:`Tools`; the household's actions are
:class:`ai_server.assist.tools.ToolBox`, given to the engine by the composition root), and the
readers of calls a model wrote as text.

Small local models do not always return ``tool_calls``: Qwen through llama-cpp-python's
template writes the call as JSON in the content (``{"name": ..., "arguments": ...}``, sometimes
code-fenced or inside ``<tool_call>`` tags). :func:`content_tool_calls` reads those.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: Mapping[str, Any]
    id: str = ""


class Tools(Protocol):
    """What the engine offers the model and runs its calls through (an engine imports no domain
    code: the household's actions arrive as an object with these methods)."""

    def specs(self) -> list[dict[str, Any]]:
        """OpenAI ``tools=`` for the next request (empty: offer none)."""
        ...

    def names(self) -> set[str]:
        """The tools' names, to read calls a model wrote as text."""
        ...

    async def run(self, call: ToolCall, text: str = "") -> str:
        """The tool result for the model; never raises."""
        ...


_FENCE = re.compile(r"^```[a-zA-Z]*\s*|\s*```$")
_TAGGED = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.DOTALL)


_SAYS = ("response", "answer", "message", "reply", "content", "text")


def _json_values(text: str) -> list[object] | None:
    """Every JSON value in ``text``, back to back (models write several objects in a row), or None
    when anything else is in between."""
    decoder = json.JSONDecoder()
    values: list[object] = []
    pos = 0
    while pos < len(text):
        if text[pos].isspace():
            pos += 1
            continue
        try:
            value, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError:
            return None
        values.append(value)
    return values


def _bodies(content: str) -> list[str]:
    text = content.strip()
    return _TAGGED.findall(text) or [_FENCE.sub("", text)]


def content_tool_calls(content: str, names: set[str]) -> list[ToolCall]:
    """Tool calls a model wrote as text instead of ``tool_calls``: ``{"name", "arguments"}``
    objects (one or several, a list, ``<tool_call>`` tags, a code fence, ``parameters`` for
    ``arguments``). Only calls of known tools count; other JSON values are skipped."""
    calls: list[ToolCall] = []
    for body in _bodies(content):
        for value in _json_values(body) or []:
            for item in value if isinstance(value, list) else [value]:
                call = _as_call(item, names)
                if call is not None:
                    calls.append(call)
    return calls


def content_says(content: str) -> str | None:
    """What to say of a held reply that is not (only) a tool call: the text of its
    ``{"response": ...}``-like fields when it is JSON, the content itself when it is not JSON,
    None when it is JSON with nothing to say (never read JSON aloud)."""
    said: list[str] = []
    json_seen = False
    for body in _bodies(content):
        values = _json_values(body)
        if values is None:
            said.append(body)
            continue
        json_seen = True
        for value in values:
            if isinstance(value, dict):
                said.extend(v for k, v in value.items() if k in _SAYS and isinstance(v, str) and v.strip())
    if not said:
        return None if json_seen else content.strip() or None
    return " ".join(x.strip() for x in said)


def _as_call(item: object, names: set[str]) -> ToolCall | None:
    if not isinstance(item, dict):
        return None
    body: dict[str, Any] = item
    if isinstance(body.get("function"), dict):  # the OpenAI shape, written out
        body = body["function"]
    name = body.get("name")
    args = body.get("arguments", body.get("parameters", {}))
    if isinstance(args, str):
        try:
            args = json.loads(args or "{}")
        except json.JSONDecodeError:
            return None
    if name not in names or not isinstance(args, dict):
        return None
    return ToolCall(str(name), args)


def parse_arguments(raw: str | None) -> Mapping[str, Any]:
    """``tool_calls[].function.arguments`` (a JSON string) as a dict; a clear error otherwise."""
    try:
        args = json.loads(raw or "{}")
    except json.JSONDecodeError as exc:
        raise ValueError(f"arguments are not JSON ({exc.msg})") from None
    if not isinstance(args, dict):
        raise ValueError("arguments must be a JSON object")
    return args
