"""Saved KV states of the conversations that share one llama.cpp context.

llama-cpp-python keeps one token sequence in its context and, on each call, reuses the
longest prefix of the new prompt that matches it. One conversation is therefore cheap turn
after turn, but two devices taking turns on the one model overwrite each other's prefix, and
each turn re-evaluates its whole system prompt + history (~300 tokens: seconds on 2 cores).

Before a call, :meth:`PromptStates.switch` looks for a saved state that shares a longer
prefix with the new prompt than the context does now; if there is one, it saves the
context's sequence (so its conversation can come back) and loads the saved one. A context
the new prompt would overwrite (it diverges early) is saved too, even with nothing to load. Only the
KV cells of sequence 0 (the one llama-cpp-python decodes into) are copied, with
``llama_state_seq_get_data``/``set_data``: measured here, ~5 ms each way for ~300 tokens
(7 MB with SmolLM2), against 60-130 ms for ``Llama.save_state``/``load_state`` and its
``LlamaRAMCache``, which also copy a 100 MB logits buffer that sampling no longer uses.
States are kept least-recently-used within ``capacity_bytes``; a saved state that the
current sequence extends (the same conversation, some turns on) is replaced by it.
"""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

log = logging.getLogger(__name__)

#: A load costs about as much as evaluating one or two tokens; below this gain, evaluate.
MIN_GAIN_TOKENS = 8


@dataclass(frozen=True, slots=True, eq=False)  # compared by identity (arrays inside)
class _State:
    tokens: npt.NDArray[np.intc]
    data: bytes


def common_prefix(a: npt.NDArray[np.intc], b: npt.NDArray[np.intc]) -> int:
    """Length of the longest common prefix of two token arrays."""
    n = min(a.size, b.size)
    differ = np.flatnonzero(a[:n] != b[:n])
    return int(differ[0]) if differ.size else n


class PromptStates:
    """Per-conversation KV states for one ``llama_cpp.Llama``; used from its one worker thread only."""

    def __init__(self, capacity_bytes: int) -> None:
        self.capacity_bytes = capacity_bytes
        self._saved: list[_State] = []  # least recently used first
        self.loads = 0
        self.saves = 0

    @property
    def size_bytes(self) -> int:
        return sum(len(s.data) for s in self._saved)

    def __len__(self) -> int:
        return len(self._saved)

    def switch(self, llm: Any, prompt: Sequence[int]) -> int:
        """Make the context hold the saved state that best matches ``prompt``; return the prefix
        length the context now shares with it (what llama.cpp will not evaluate again)."""
        want = np.asarray(prompt, dtype=np.intc)
        current = _current(llm)
        here = common_prefix(current, want)
        best, best_len = None, here
        for state in self._saved:
            n = common_prefix(state.tokens, want)
            if n > best_len:
                best, best_len = state, n
        if best is None or best_len - here < MIN_GAIN_TOKENS:
            if current.size - here >= MIN_GAIN_TOKENS:
                self.save(llm)  # another conversation is about to overwrite this one
            return here
        self._saved.remove(best)  # out of reach of the capacity eviction that save() may do
        self.save(llm)
        self._load(llm, best)
        self._saved.append(best)  # most recently used
        return best_len

    def save(self, llm: Any) -> None:
        """Keep the context's current sequence, dropping saved ones it extends."""
        tokens = _current(llm).copy()
        if tokens.size == 0 or self.capacity_bytes <= 0:
            return
        ctx = llm._ctx.ctx
        size = int(_lib().llama_state_seq_get_size(ctx, 0))
        buf = (ctypes.c_uint8 * size)()
        got = int(_lib().llama_state_seq_get_data(ctx, buf, size, 0))
        if got <= 0 or got > size:
            log.warning("llama.cpp did not save the sequence (%d of %d bytes); not kept", got, size)
            return
        self._saved = [s for s in self._saved if common_prefix(s.tokens, tokens) < s.tokens.size]
        self._saved.append(_State(tokens, bytes(memoryview(buf)[:got])))
        self.saves += 1
        while self.size_bytes > self.capacity_bytes and self._saved:
            self._saved.pop(0)

    def _load(self, llm: Any, state: _State) -> None:
        data = (ctypes.c_uint8 * len(state.data)).from_buffer_copy(state.data)
        if int(_lib().llama_state_seq_set_data(llm._ctx.ctx, data, len(state.data), 0)) != len(state.data):
            # The context may now hold a part of it: forget what it holds, so it is evaluated again.
            llm.n_tokens = 0
            log.warning("llama.cpp refused a saved sequence; the prompt is evaluated again")
            return
        n = state.tokens.size
        llm.input_ids[:n] = state.tokens
        llm.n_tokens = n
        # What Llama.load_state sets: the logits in the context are not this sequence's, so an
        # exactly cached prompt must be decoded again before sampling.
        llm._requires_eval = True
        self.loads += 1


def _current(llm: Any) -> npt.NDArray[np.intc]:
    return np.asarray(llm.input_ids[: llm.n_tokens], dtype=np.intc)


def _lib() -> Any:
    import llama_cpp

    return llama_cpp
