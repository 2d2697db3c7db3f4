"""The hub's side of StreamConversation, for tests, benchmarks and manual checks.

``StreamClient`` opens one stream, sends utterances the way the hub does (START with
~260 ms of pre-roll + onset, 20 ms CONTINUE frames, END) for any number of devices,
and collects each device's replies with their arrival time on ``time.monotonic()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from shared.audio import FRAME_MS, HUB_RATE, Int16Array, samples_per_frame
from shared.contract import pb, pb_grpc
from shared.grpc_security import ClientSecurity


@dataclass
class TurnReply:
    """Everything one device received for one turn, with arrival times."""

    device_id: str
    end_sent_at: float
    messages: list[tuple[float, pb.AudioOutput]] = field(default_factory=list)

    @property
    def transcript(self) -> str | None:
        for _, m in self.messages:
            if not m.audio_pcm and not m.is_final:
                return m.final_stt
        return None

    @property
    def audio(self) -> list[pb.AudioOutput]:
        return [m for _, m in self.messages if m.audio_pcm]

    @property
    def final(self) -> pb.AudioOutput | None:
        last = self.messages[-1][1] if self.messages else None
        return last if last is not None and last.is_final else None

    @property
    def pcm(self) -> Int16Array:
        data = b"".join(m.audio_pcm for m in self.audio)
        return np.frombuffer(data, dtype="<i2").astype(np.int16)

    @property
    def sample_rate(self) -> int:
        return self.audio[0].sample_rate if self.audio else 0

    def first_audio_ms(self) -> float | None:
        """END sent -> first reply audio received, on this process's clock."""
        for t, m in self.messages:
            if m.audio_pcm:
                return (t - self.end_sent_at) * 1000.0
        return None

    def transcript_ms(self) -> float | None:
        for t, m in self.messages:
            if not m.audio_pcm and not m.is_final:
                return (t - self.end_sent_at) * 1000.0
        return None


class StreamClient:
    """``address`` is a loopback host:port (plaintext), or a ClientSecurity for TLS (mutual TLS with a
    client certificate), as the hub connects (shared.grpc_security)."""

    def __init__(self, address: str | ClientSecurity) -> None:
        self.security = address if isinstance(address, ClientSecurity) else ClientSecurity(address)
        self.address = self.security.target
        self._channel: Any = None
        self._call: Any = None
        self._requests: asyncio.Queue[pb.AudioInput | None] = asyncio.Queue()
        self._inbox: dict[str, asyncio.Queue[tuple[float, pb.AudioOutput]]] = {}
        self._reader: asyncio.Task[None] | None = None
        self.error: BaseException | None = None
        self.ended = asyncio.Event()

    async def __aenter__(self) -> StreamClient:
        self._channel = self.security.aio_channel()
        stub = pb_grpc.NailaAIStub(self._channel)
        self._call = stub.StreamConversation(self._outgoing())
        self._reader = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def half_close(self) -> None:
        """No more input (like a hub shutting down): the server finishes turns, then ends."""
        self._requests.put_nowait(None)

    async def close(self) -> None:
        self._requests.put_nowait(None)
        if self._reader is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5):  # not wait_for: see shared/aio.py
                    await asyncio.shield(self._reader)
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
        if self._channel is not None:
            await self._channel.close()

    async def _outgoing(self) -> AsyncIterator[pb.AudioInput]:
        while (msg := await self._requests.get()) is not None:
            yield msg

    async def _read(self) -> None:
        try:
            async for msg in self._call:
                self.inbox(msg.device_id).put_nowait((time.monotonic(), msg))
        except Exception as exc:  # the RPC failed: tests assert on this
            self.error = exc
        finally:
            self.ended.set()

    def inbox(self, device_id: str) -> asyncio.Queue[tuple[float, pb.AudioOutput]]:
        return self._inbox.setdefault(device_id, asyncio.Queue())

    def send(self, msg: pb.AudioInput) -> None:
        self._requests.put_nowait(msg)

    async def speak(
        self,
        device_id: str,
        audio: Int16Array,
        *,
        conversation_id: str = "conv-1",
        realtime: bool = False,
        preroll_ms: int = 260,
        end: bool = True,
        room: str = "",
    ) -> float:
        """Send one utterance like the hub does; returns the monotonic time END was sent."""
        frame = samples_per_frame(HUB_RATE)
        first = min(audio.size, HUB_RATE * preroll_ms // 1000)
        t0 = time.monotonic()
        sent_ms = preroll_ms

        def frame_msg(event: int, pcm: Int16Array, seq: int) -> pb.AudioInput:
            return pb.AudioInput(
                device_id=device_id, conversation_id=conversation_id, audio_pcm=pcm.astype("<i2").tobytes(),
                codec=pb.PCM_S16LE, sample_rate=HUB_RATE, chunk_duration_ms=FRAME_MS, sequence_num=seq,
                event=event, room=room,  # type: ignore[arg-type]
            )

        self.send(frame_msg(pb.START, audio[:first], 0))
        seq = 1
        for start in range(first, audio.size, frame):
            if realtime:
                await asyncio.sleep(max(0.0, t0 + sent_ms / 1000.0 - time.monotonic()))
            self.send(frame_msg(pb.CONTINUE, audio[start : start + frame], seq))
            seq += 1
            sent_ms += FRAME_MS
            if not realtime and seq % 50 == 0:
                await asyncio.sleep(0)
        if realtime:
            await asyncio.sleep(max(0.0, t0 + sent_ms / 1000.0 - time.monotonic()))
        if end:
            self.send(pb.AudioInput(device_id=device_id, conversation_id=conversation_id, event=pb.END,
                                    sequence_num=seq, sample_rate=HUB_RATE))
        return time.monotonic()

    def interrupt(self, device_id: str, conversation_id: str = "conv-1") -> float:
        self.send(pb.AudioInput(device_id=device_id, conversation_id=conversation_id, event=pb.INTERRUPT))
        return time.monotonic()

    async def next(self, device_id: str, within_s: float = 30.0) -> tuple[float, pb.AudioOutput]:
        async with asyncio.timeout(within_s):  # not wait_for: see shared/aio.py
            return await self.inbox(device_id).get()

    async def turn(self, device_id: str, end_sent_at: float, within_s: float = 60.0) -> TurnReply:
        """Collect messages for ``device_id`` up to and including is_final."""
        reply = TurnReply(device_id, end_sent_at)
        deadline = time.monotonic() + within_s
        while True:
            t, msg = await self.next(device_id, max(0.01, deadline - time.monotonic()))
            reply.messages.append((t, msg))
            if msg.is_final:
                return reply

    def pending(self, device_id: str) -> int:
        return self.inbox(device_id).qsize()


def silence(ms: int, rate: int = HUB_RATE) -> Int16Array:
    return np.zeros(rate * ms // 1000, dtype=np.int16)


def as_the_hub_sends(speech: Int16Array, preroll_ms: int = 200, hangover_ms: int = 300) -> Int16Array:
    """Speech as one hub utterance: ``preroll_ms`` before the onset, ``hangover_ms`` of
    silence after the last voiced sample (END follows it). espeak-ng pads its output with
    ~350 ms of silence, which would flatter anything that works before END; it is cut."""
    voiced = np.flatnonzero(np.abs(speech.astype(np.int32)) > 64)
    if voiced.size == 0:
        return np.concatenate([silence(preroll_ms), silence(hangover_ms)])
    core = speech[voiced[0] : voiced[-1] + 1]
    return np.concatenate([silence(preroll_ms), core, silence(hangover_ms)])
