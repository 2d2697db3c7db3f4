"""What the LLM is told each turn: system prompt, visual context, recent history per device.

History is kept per device_id (not per conversation_id) so a kitchen device keeps its
thread across hub reconnects; it is bounded to ``history_turns`` exchanges. When full, the
oldest *half* goes at once rather than one exchange per turn: every eviction changes the
prompt right after the system message, which invalidates the LLM's cached prompt prefix
(a full re-evaluation: seconds for the embedded model on 2 cores), so it should happen
every few turns, not on every turn. The visual
context slot holds a short description of what the device's camera sees (filled by the
vision work); when set it goes in as a second system message.
"""

from __future__ import annotations

from dataclasses import dataclass

from ai_server.llm import Message


@dataclass(frozen=True)
class Exchange:
    user: str
    assistant: str


class Conversations:
    def __init__(self, system_prompt: str, history_turns: int) -> None:
        self.system_prompt = system_prompt
        self.history_turns = history_turns
        self._history: dict[str, list[Exchange]] = {}
        self._visual: dict[str, str] = {}

    def set_visual_context(self, device_id: str, text: str) -> None:
        """What the camera sees for this device; an empty string clears it."""
        if text:
            self._visual[device_id] = text
        else:
            self._visual.pop(device_id, None)

    def visual_context(self, device_id: str) -> str:
        return self._visual.get(device_id, "")

    def history(self, device_id: str) -> list[Exchange]:
        return list(self._history.get(device_id, ()))

    def messages(self, device_id: str, user_text: str, room: str = "") -> list[Message]:
        system = self.system_prompt
        if room:
            system += f" The user is speaking from the {room}."
        out: list[Message] = [{"role": "system", "content": system}]
        visual = self._visual.get(device_id)
        if visual:
            out.append({"role": "system", "content": f"What the camera currently sees: {visual}"})
        for ex in self._history.get(device_id, ()):
            out.append({"role": "user", "content": ex.user})
            out.append({"role": "assistant", "content": ex.assistant})
        out.append({"role": "user", "content": user_text})
        return out

    def record(self, device_id: str, user_text: str, reply_text: str) -> None:
        """Remember one exchange (a cut-off reply is kept as far as it was spoken)."""
        if self.history_turns <= 0 or not user_text:
            return
        hist = self._history.setdefault(device_id, [])
        if len(hist) >= self.history_turns:
            del hist[: len(hist) - self.history_turns // 2]
        hist.append(Exchange(user_text, reply_text))

    def forget(self, device_id: str) -> None:
        self._history.pop(device_id, None)
