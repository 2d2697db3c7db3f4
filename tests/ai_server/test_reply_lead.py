"""A reply's first words start at once: the TTS voice's lead-in silence is cut before the first
clause only (between clauses it is the natural pause)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import numpy as np
import pytest

from ai_server.pipeline import LEAD_KEEP_MS, Turn, Voice, trim_lead
from shared.audio import Int16Array
from shared.contract import pb

pytestmark = pytest.mark.unit

RATE = 22050
LEAD = RATE * 35 // 1000  # piper's shipped voice: 30-40 ms of near silence before each clause


def clause_audio() -> Int16Array:
    t = np.arange(RATE // 5) / RATE
    hiss = np.full(LEAD, 20, dtype=np.int16)  # below -50 dBFS: quiet, not digital zero
    return np.concatenate([hiss, (np.cos(2 * np.pi * 300 * t) * 6000).astype(np.int16)])


class LeadInTTS:
    sample_rate = RATE

    async def synthesize(self, text: str) -> AsyncIterator[Int16Array]:
        yield clause_audio()

    async def warm(self) -> None:
        pass

    async def close(self) -> None:
        pass


def test_trim_lead_keeps_a_few_ms_before_the_first_loud_sample() -> None:
    x = clause_audio()
    y = trim_lead(x, RATE)
    assert x.size - y.size == LEAD - RATE * LEAD_KEEP_MS // 1000
    quiet = np.zeros(500, dtype=np.int16)
    assert trim_lead(quiet, RATE) is quiet  # nothing loud: nothing cut


async def test_only_the_replys_first_clause_loses_its_lead_in() -> None:
    sent: list[pb.AudioOutput] = []
    turn = Turn(1, "kitchen", "c1", 0.0, sink=lambda _t, m: sent.append(m))
    voice = Voice(LeadInTTS(), chunk_ms=40)  # type: ignore[arg-type]
    await voice.speak_clause(turn, "First.")
    first = sum(len(m.audio_pcm) for m in sent) // 2
    sent.clear()
    await voice.speak_clause(turn, "Second.")
    second = sum(len(m.audio_pcm) for m in sent) // 2
    full = clause_audio().size
    assert second == full
    assert first == full - (LEAD - RATE * LEAD_KEEP_MS // 1000)
