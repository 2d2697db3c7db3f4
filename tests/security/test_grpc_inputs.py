"""Bounded inputs on the AI server's gRPC surface (issue 18: C1, H4, L2), over real loopback grpc.

Scripted model backends (ai_server.fakes) stand in at the model boundary only; the stream, the
session, the validation and the utterance buffer are the production code.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import numpy as np
import pytest

from ai_server.app import AIServer, start_server
from ai_server.client import StreamClient, TurnReply, silence
from ai_server.fakes import FakeLLM, FakeSTT, FakeTTS
from ai_server.session import ConversationSession
from shared.audio import Int16Array
from shared.config import AIServerSettings, load
from shared.contract import pb, pb_grpc

pytestmark = pytest.mark.integration

Start = Callable[..., Awaitable[AIServer]]


@pytest.fixture
async def start() -> AsyncIterator[Start]:
    servers: list[AIServer] = []

    async def make(stt: Any = None, **over: Any) -> AIServer:
        settings = load(AIServerSettings, ai_server_host="127.0.0.1", vision_enabled=False, ai_mqtt=False, **over)
        server = await start_server(settings, stt=stt or FakeSTT("what time is it"), llm=FakeLLM("It is noon."),
                                    tts=FakeTTS(), port=0, warm=False)
        servers.append(server)
        return server

    yield make
    for server in servers:
        await server.stop(grace=0)


def voice(ms: int = 600) -> Int16Array:
    t = np.arange(16000 * ms // 1000) / 16000
    return np.concatenate([(np.sin(2 * np.pi * 180 * t) * 6000).astype(np.int16), silence(300)])


async def answered(client: StreamClient, device: str) -> TurnReply:
    end = await client.speak(device, voice())
    return await client.turn(device, end, within_s=20)


def counters(server: AIServer) -> dict[str, int]:
    return dict(server.pipeline.metrics.counters)


def frame(device: str, event: int = pb.CONTINUE, **kw: Any) -> pb.AudioInput:
    kw.setdefault("sample_rate", 16000)
    return pb.AudioInput(device_id=device, event=event, codec=pb.PCM_S16LE, **kw)  # type: ignore[arg-type]


async def test_sample_rate_8_is_refused_for_that_device_and_the_other_device_is_served(start: Start) -> None:
    server = await start()
    async with StreamClient(server.address) as client:
        # The review's attack: 3.9 MB at 8 Hz would be resampled into gigabytes.
        client.send(frame("attic", pb.START, sample_rate=8, audio_pcm=b"\x01\x00" * 4000))
        _, refusal = await client.next("attic", 5)
        for _ in range(20):  # the rest of that utterance is ignored, not answered 20 times
            client.send(frame("attic", sample_rate=8, audio_pcm=b"\x01\x00" * 4000))
        reply = await answered(client, "kitchen")
        client.send(frame("attic", pb.END))
        assert client.pending("attic") == 0
    assert refusal.is_final and refusal.error_code == pb.INTERNAL
    assert refusal.error_message.startswith("refused (bad_sample_rate): sample_rate 8 is not one of")
    assert reply.final is not None and reply.final.error_code == pb.NONE and reply.transcript == "what time is it"
    c = counters(server)
    assert c["bad_inputs_bad_sample_rate"] == 21  # every bad message is counted; one answer per utterance


@pytest.mark.parametrize(("fields", "reason"), [
    ({"audio_pcm": b"\x00" * 3}, "odd_pcm"),
    ({"audio_pcm": b"\x00" * 32_002}, "oversized_pcm"),  # more than 1 s at 16 kHz
    ({"sample_rate": 8000, "audio_pcm": b"\x00" * 16_002}, "oversized_pcm"),  # more than 1 s at 8 kHz
    ({"audio_opus": b"\x00" * 10}, "unsupported_codec"),
    ({"room": "x" * 200}, "bad_room"),
    ({"conversation_id": "a\nb"}, "bad_conversation_id"),
    ({"chunk_duration_ms": 60_000}, "bad_chunk"),
])
async def test_each_bad_field_is_refused_with_its_reason(start: Start, fields: dict[str, Any], reason: str) -> None:
    server = await start()
    async with StreamClient(server.address) as client:
        client.send(frame("kitchen", pb.START, **fields))
        _, refusal = await client.next("kitchen", 5)
        assert refusal.is_final and refusal.error_message.startswith(f"refused ({reason})")
        reply = await answered(client, "kitchen")  # its next utterance starts clean
    assert reply.final is not None and reply.final.error_code == pb.NONE
    assert counters(server)[f"bad_inputs_{reason}"] == 1


async def test_a_bad_device_id_is_dropped_and_counted(start: Start, caplog: pytest.LogCaptureFixture) -> None:
    server = await start()
    async with StreamClient(server.address) as client:
        for bad in ("", "..", "a/b", "kitchen\nINFO forged log line", "x" * 65):
            client.send(frame(bad, pb.START, audio_pcm=b"\x00\x00" * 320))
        reply = await answered(client, "kitchen")
    assert reply.final is not None and reply.final.error_code == pb.NONE
    assert counters(server)["bad_inputs_bad_device_id"] == 5
    assert not any("\nINFO forged" in r.getMessage() for r in caplog.records)  # ids are logged with repr
    assert len([r for r in caplog.records if "bad_device_id" in r.getMessage()]) <= 3  # a log budget, not a flood


async def test_a_stream_speaks_for_at_most_ai_max_devices_per_stream(start: Start) -> None:
    server = await start(ai_max_devices_per_stream=3)
    async with StreamClient(server.address) as client:
        for d in ("d1", "d2", "d3"):
            client.send(frame(d, pb.START, audio_pcm=b"\x00\x00" * 320))
        client.send(frame("d4", pb.START, audio_pcm=b"\x00\x00" * 320))
        _, refusal = await client.next("d4", 5)
        reply = await answered(client, "d1")
    assert refusal.is_final and refusal.error_message.startswith("refused (too_many_devices)")
    assert reply.final is not None and reply.final.error_code == pb.NONE
    assert counters(server)["bad_inputs_too_many_devices"] == 1


async def test_a_message_over_the_size_limit_ends_that_stream_and_the_server_serves_on(start: Start) -> None:
    server = await start(ai_grpc_max_message_bytes=65_536)
    async with StreamClient(server.address) as client:
        client.send(frame("kitchen", pb.START, audio_pcm=b"\x00" * 200_000))
        await asyncio.wait_for(client.ended.wait(), 10)
    assert isinstance(client.error, grpc.aio.AioRpcError)
    assert client.error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    async with StreamClient(server.address) as client:
        reply = await answered(client, "kitchen")
    assert reply.final is not None and reply.final.error_code == pb.NONE


async def test_streams_beyond_ai_max_streams_are_refused(start: Start) -> None:
    server = await start(ai_max_streams=2)
    async with StreamClient(server.address) as a, StreamClient(server.address) as b:
        await answered(a, "kitchen")
        await answered(b, "hall")
        async with StreamClient(server.address) as c:
            await asyncio.wait_for(c.ended.wait(), 10)
        assert isinstance(c.error, grpc.aio.AioRpcError) and c.error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "AI_MAX_STREAMS" in (c.error.details() or "")
        async with grpc.aio.insecure_channel(server.address) as ch:  # AnalyzeFrames shares the cap
            with pytest.raises(grpc.aio.AioRpcError) as info:
                async for _ in pb_grpc.NailaAIStub(ch).AnalyzeFrames(iter([pb.VisionFrame(device_id="cam")])):
                    pass
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert counters(server)["streams_refused"] == 2
    async with StreamClient(server.address) as d:  # the slots are free again
        await answered(d, "kitchen")


async def test_a_ten_minute_utterance_keeps_memory_flat_and_another_device_is_answered(start: Start) -> None:
    """H4: 10 minutes of voiced audio with no pause and no END; memory held stays at the cap, the STT
    never sees more than the cap, and a second device on the same stream is answered meanwhile."""
    heard: list[int] = []

    def transcribe(audio: Int16Array) -> str:
        heard.append(audio.size)
        return "what time is it"

    server = await start(stt=FakeSTT(transcribe), ai_max_utterance_s=30.0, stt_speculative_ms=100)
    second = 1 * 16000
    tone = (np.sin(2 * np.pi * 180 * np.arange(second) / 16000) * 6000).astype("<i2").tobytes()  # 1 s, voiced
    held: list[int] = []
    async with StreamClient(server.address) as client:
        client.send(frame("tv-room", pb.START, audio_pcm=tone))
        for n in range(1, 600):
            client.send(frame("tv-room", audio_pcm=tone))
            if n % 50 == 0:
                await asyncio.sleep(0)  # let the server read
                session = _session(server)
                if session is not None and "tv-room" in session.devices:
                    utt = session.devices["tv-room"].utterance
                    if utt is not None:
                        held.append(utt.held_bytes)
            if n == 300:
                reply = await answered(client, "kitchen")  # minute 5: the other room asks
                assert reply.final is not None and reply.final.error_code == pb.NONE
        client.send(frame("tv-room", pb.END))
        tv = await client.turn("tv-room", 0.0, within_s=20)
    cap_bytes = 30 * 16000 * 2
    assert held and max(held) <= cap_bytes and held[-1] == max(held)  # flat at the cap
    assert max(heard) <= 30 * 16000  # no transcription ever covered more than the cap
    assert tv.transcript == "what time is it" and tv.final is not None and tv.final.error_code == pb.NONE
    assert counters(server)["utterances_capped"] == 1


def _session(server: AIServer) -> ConversationSession | None:
    sessions = list(server.service.sessions)
    return sessions[0] if sessions else None
