"""Transcribing before END: reuse the background run only when nothing was said after it."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from ai_server.fakes import FakeSTT
from ai_server.utterance import Utterance
from shared.audio import Int16Array

pytestmark = pytest.mark.unit
RATE = 16000


def tone(ms: int, amp: int = 8000) -> Int16Array:
    t = np.arange(RATE * ms // 1000) / RATE
    return (np.sin(2 * np.pi * 200 * t) * amp).astype(np.int16)


def quiet(ms: int) -> Int16Array:
    return np.zeros(RATE * ms // 1000, dtype=np.int16)


def feed(u: Utterance, x: Int16Array) -> None:
    for i in range(0, x.size, 320):  # 20 ms frames, as the hub sends them
        u.add(x[i : i + 320].tobytes())



async def test_quiet_tail_starts_a_run_that_end_reuses() -> None:
    stt = FakeSTT(lambda a: f"{a.size} samples")
    u = Utterance(stt, speculate_ms=100)
    feed(u, tone(600))
    assert u.speculative_runs == 0
    feed(u, quiet(120))
    assert u.speculative_runs == 1
    feed(u, quiet(200))  # rest of the hangover: no second run
    await asyncio.sleep(0)
    assert await u.transcript() == f"{RATE * 700 // 1000} samples"  # snapshot after 100 ms quiet
    assert u.reused and stt.calls == 1


async def test_speech_after_the_snapshot_forces_a_fresh_transcription() -> None:
    stt = FakeSTT(lambda a: f"{a.size} samples")
    u = Utterance(stt, speculate_ms=100)
    feed(u, tone(400))
    feed(u, quiet(120))  # a pause mid-sentence: background run
    await asyncio.sleep(0)
    feed(u, tone(300))  # more speech, then END without enough quiet for another run
    feed(u, quiet(60))
    text = await u.transcript()
    assert not u.reused
    assert text == f"{u.samples} samples"
    assert stt.calls == 2


async def test_off_means_one_transcription_at_end() -> None:
    stt = FakeSTT()
    u = Utterance(stt, speculate_ms=0)
    feed(u, tone(400))
    feed(u, quiet(400))
    assert u.speculative_runs == 0
    assert await u.transcript() == "hello there"
    assert stt.calls == 1


async def test_only_noise_floor_skips_whisper() -> None:
    stt = FakeSTT()
    u = Utterance(stt, speculate_ms=100)
    feed(u, tone(500, amp=10))  # about -73 dBFS
    assert await u.transcript() == ""
    assert stt.calls == 0


async def test_a_failed_background_run_falls_back_to_a_fresh_one() -> None:
    stt = FakeSTT(fail=True)
    u = Utterance(stt, speculate_ms=100)
    feed(u, tone(300))
    feed(u, quiet(150))
    await asyncio.sleep(0.01)
    stt.fail = False
    assert await u.transcript() == "hello there"
    assert not u.reused and stt.calls == 2


async def test_audio_beyond_the_cap_is_dropped_and_the_kept_part_is_transcribed_once() -> None:
    """H4: a voice that never pauses (a TV) fills the utterance to ``max_s`` and no further; reaching
    the cap starts one background run over the kept audio, which END then reuses."""
    stt = FakeSTT(lambda a: f"{a.size} samples")
    u = Utterance(stt, speculate_ms=100, max_s=2.0)
    feed(u, tone(1500))
    assert u.speculative_runs == 0 and not u.capped
    feed(u, tone(60_000))  # a minute more, no pause
    assert u.capped and u.samples == 2 * RATE and u.held_bytes <= 2 * RATE * 2
    assert u.dropped_samples == RATE * 61_500 // 1000 - 2 * RATE
    assert u.speculative_runs == 1
    feed(u, tone(1000))
    assert u.speculative_runs == 1  # the kept audio cannot change: never transcribed again
    assert await u.transcript() == f"{2 * RATE} samples"
    assert u.reused and stt.calls == 1
