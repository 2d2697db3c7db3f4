"""Whole turns over gRPC loopback with the real shipped models (whisper, SmolLM2, piper)."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import numpy as np
import pytest

from ai_server.client import StreamClient
from shared.audio import rms_dbfs
from shared.contract import pb, pb_grpc

from .conftest import speech, word_errors

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
async def real_server(make_server: Any, real_stt: Any, real_llm: Any, real_tts: Any) -> Any:
    return await make_server(stt=real_stt, llm=real_llm, tts=real_tts)


async def test_spoken_question_gets_transcript_then_spoken_reply_then_final(real_server: Any) -> None:
    async with StreamClient(real_server.address) as client:
        end = await client.speak("kitchen", speech("what is the capital of france"), realtime=True)
        r = await client.turn("kitchen", end, within_s=120)
    msgs = [m for _, m in r.messages]
    assert msgs[0].final_stt and not msgs[0].audio_pcm, "transcript first, before any audio"
    assert word_errors("what is the capital of france", r.transcript or "")[0] == 0
    assert r.audio, "a spoken reply"
    assert {m.sample_rate for m in r.audio} == {22050}
    assert r.audio[0].reply_text, "the first chunk carries its clause text"
    assert rms_dbfs(r.pcm) > -35 and r.pcm.size / 22050 > 0.3
    seqs = [m.sequence_num for m in msgs]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    final = r.final
    assert final is not None and final.error_code == pb.NONE
    assert final.reply_text == " ".join(m.reply_text for m in r.audio if m.reply_text)
    t = final.timing
    assert 0 < t.stt_ms <= t.llm_first_token_ms <= t.first_sentence_ms <= t.tts_first_audio_ms
    assert t.tts_first_audio_ms <= t.first_frame_sent_ms <= t.total_ms
    async with grpc.aio.insecure_channel(real_server.address) as ch:
        status = await pb_grpc.NailaAIStub(ch).GetStatus(pb.StatusRequest())
    assert (status.stt_backend, status.llm_backend, status.tts_backend) == ("faster-whisper", "llama-cpp", "piper")
    assert status.stt_model == "tiny.en" and status.llm_model.endswith(".gguf")
    assert status.tts_model == "en_US-joe-medium"


async def test_barge_in_mid_reply_stops_the_reply(real_server: Any, real_llm: Any) -> None:
    async with StreamClient(real_server.address) as client:
        await client.speak("kitchen", speech("tell me a long story about a dragon"))
        while True:
            _, m = await client.next("kitchen", 120)
            if m.audio_pcm:
                break
            assert not m.is_final, "the model answered too briefly to interrupt"
        sent = client.interrupt("kitchen")
        while True:
            t, m = await client.next("kitchen", 10)
            if m.is_final:
                break
        assert t - sent < 0.5
        assert m.error_message == "interrupted"
        await asyncio.sleep(0.5)
        assert client.pending("kitchen") == 0, "no audio after is_final of a cancelled turn"
        assert real_llm.generating == 0, "generation stopped"
        # The following utterance is served normally on the same stream.
        end = await client.speak("kitchen", speech("what time is it"))
        r = await client.turn("kitchen", end, within_s=120)
    assert r.final is not None and r.final.error_code == pb.NONE
    assert np.asarray(r.pcm).size > 0
