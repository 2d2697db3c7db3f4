"""The real shipped models behind each stage: faster-whisper tiny.en, piper joe-us, SmolLM2."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from typing import Any

import numpy as np
import pytest

from ai_server.errors import StartupError
from ai_server.stt import WhisperSTT
from ai_server.tts import EspeakTTS, PiperTTS, build_tts
from shared.aio import closing
from shared.audio import rms_dbfs

from .conftest import UTTERANCES, speech, word_errors

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# Measured on this project's 2-core machine (tiny.en, int8, beam 1, the default 10 s
# short-utterance window), utterances framed as the hub sends them: 3 word errors in 69
# reference words, WER 0.043 ("jazz" -> "task", "who wrote" -> "road"); the standard 30 s
# window scored 0.058 on the same audio (0.029 on untrimmed espeak output). Known-bad inputs on the same set: 22.05 kHz
# audio read as 16 kHz 0.145, audio 54 dB too quiet 0.22, byte-swapped PCM 1.0. The bound
# 0.10 (7 errors) leaves room for CPU / CTranslate2 numeric differences and still fails
# on each of those.
WER_BOUND = 0.10


async def test_whisper_transcribes_espeak_questions_within_the_wer_bound(real_stt: WhisperSTT) -> None:
    errors = total = 0
    misses = []
    for text in UTTERANCES:
        hyp = await real_stt.transcribe(speech(text))
        e, n = word_errors(text, hyp)
        errors, total = errors + e, total + n
        if e:
            misses.append((text, hyp))
    wer = errors / total
    print(f"WER {wer:.3f} over {len(UTTERANCES)} utterances ({errors}/{total}); misses: {misses}")
    assert len(UTTERANCES) >= 10
    assert wer <= WER_BOUND, misses


async def test_whisper_returns_nothing_for_silence(real_stt: WhisperSTT) -> None:
    assert await real_stt.transcribe(np.zeros(16000, dtype=np.int16)) == ""


async def test_long_utterances_take_the_standard_30_s_path(real_stt: WhisperSTT) -> None:
    parts = ["turn on the kitchen lights", "set a timer for ten minutes", "what is the capital of france",
             "play some jazz music in the living room"]
    audio = np.concatenate([speech(p) for p in parts])
    assert audio.size > 9 * 16000  # longer than the 10 s window minus its 1 s margin
    hyp = await real_stt.transcribe(audio)
    e, n = word_errors(" ".join(parts), hyp)
    assert e / n <= 0.2, hyp


def test_missing_stt_model_is_a_startup_error_naming_the_path(tmp_path: Any) -> None:
    with pytest.raises(StartupError, match=re.escape(str(tmp_path / "nope"))):
        WhisperSTT(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(StartupError, match=r"model\.bin"):
        WhisperSTT(str(tmp_path / "empty"))


async def test_piper_speaks_audibly_at_the_voice_rate(real_tts: PiperTTS) -> None:
    assert real_tts.sample_rate == 22050
    chunks = []
    async with closing(real_tts.synthesize("The front door is locked. All lights are off.")) as it:
        async for c in it:
            chunks.append(c)
    assert len(chunks) == 2  # piper yields per sentence: the first is ready before the second is made
    audio = np.concatenate(chunks)
    seconds = audio.size / real_tts.sample_rate
    assert 1.5 < seconds < 6.0
    assert rms_dbfs(audio) > -30


async def test_espeak_fallback_speaks_and_streams() -> None:
    tts = EspeakTTS()
    chunks = [c async for c in tts.synthesize("-Hello there, this is the fallback voice.")]
    audio = np.concatenate(chunks)
    assert len(chunks) > 1 and tts.sample_rate == 22050
    assert audio.size / 22050 > 1.0 and rms_dbfs(audio) > -35


def test_an_explicit_missing_voice_is_an_error_not_a_fallback(tmp_path: Any) -> None:
    with pytest.raises(StartupError, match=r"missing\.onnx"):
        build_tts("piper", str(tmp_path / "missing.onnx"))
    assert build_tts("espeak").name == "espeak-ng"


async def test_embedded_llm_answers(real_llm: Any) -> None:
    messages = [{"role": "system", "content": "Answer in one short sentence."},
                {"role": "user", "content": "What color is the sky on a clear day?"}]
    async with closing(real_llm.stream(messages)) as pieces:
        reply = "".join([p async for p in pieces])
    assert len(reply.split()) >= 2
    assert real_llm.generating == 0


async def test_embedded_llm_stops_generating_when_cancelled(real_llm: Any) -> None:
    messages = [{"role": "user", "content": "Write a long story about a dragon and a castle."}]
    got: list[str] = []

    three = asyncio.Event()

    async def consume() -> None:
        async with closing(real_llm.stream(messages)) as pieces:
            async for p in pieces:
                got.append(p)
                if len(got) == 3:
                    three.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(three.wait(), 60)
    t0 = time.monotonic()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    stopped_in = time.monotonic() - t0
    assert real_llm.generating == 0, "the llama.cpp worker must have left generation"
    assert stopped_in < 1.0
    n = len(got)
    await asyncio.sleep(0.2)
    assert len(got) == n
