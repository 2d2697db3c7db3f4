"""Hub test kit: a real aiortc device peer, a small fake AI server (the only fake), a hub.

The device peer sends real-time paced 48 kHz audio through Opus/RTP/DTLS/ICE on loopback
exactly like the Pi agent; the fake AI server is a grpc.aio NailaAIServicer that records
every AudioInput and answers END with a transcript, a tone "reply" and is_final.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import grpc
import grpc.aio
import numpy as np
import pytest
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError
from av import AudioFrame

from hub.server import Hub, run_hub
from shared.audio import Int16Array, espeak, rms_dbfs
from shared.config import HubSettings, WebRTCSettings, load
from shared.contract import pb, pb_grpc

RATE = 48_000
FRAME = 960
# make_hub's HUB_METRICS_TOKEN; get_json/get_text send it (/turns, /health?detail=1, /metrics need it).
METRICS_TOKEN = "test-metrics-token-0123456789"
READ_HEADERS = {"Authorization": f"Bearer {METRICS_TOKEN}"}


async def until(cond: Callable[[], bool], within_s: float, what: str) -> None:
    """Poll a condition (integration tests only: real network, real time)."""
    deadline = time.monotonic() + within_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within_s}s waiting for {what}")
        await asyncio.sleep(0.02)


# ----- the device side -----


class SpeechSource(MediaStreamTrack):
    """A microphone: queued 48 kHz mono samples, paced in real time; silence when idle."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._buf: Int16Array = np.zeros(0, dtype=np.int16)
        self._start: float | None = None
        self._pts = 0
        self.muted = asyncio.Event()  # set: stop producing frames at all (a dead peer)

    def say(self, samples: Int16Array) -> float:
        """Queue audio; returns its duration in seconds."""
        self._buf = np.concatenate([self._buf, samples.astype(np.int16)])
        return samples.size / RATE

    @property
    def pending_s(self) -> float:
        return self._buf.size / RATE

    async def recv(self) -> AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self.muted.is_set():
            await asyncio.Event().wait()  # never returns: no more RTP
        if self._start is None:
            self._start = time.monotonic()
        else:
            self._pts += FRAME
            wait = self._start + self._pts / RATE - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
        chunk = np.zeros(FRAME, dtype=np.int16)
        n = min(FRAME, self._buf.size)
        chunk[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        frame = AudioFrame(format="s16", layout="mono", samples=FRAME)
        frame.planes[0].update(chunk.tobytes())
        frame.pts = self._pts
        frame.sample_rate = RATE
        frame.time_base = fractions.Fraction(1, RATE)
        return frame


@dataclass
class Device:
    """A connected test device: its peer connection, microphone and speaker recording."""

    device_id: str
    pc: RTCPeerConnection
    mic: SpeechSource
    heard: list[tuple[float, Int16Array]] = field(default_factory=list)  # (arrival, mono 48k)
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)

    def loud_frames(self, since: float = 0.0, before: float = float("inf"), threshold_dbfs: float = -40.0) -> int:
        return sum(1 for t, f in self.heard if since <= t < before and rms_dbfs(f) > threshold_dbfs)

    def last_loud_at(self, threshold_dbfs: float = -40.0) -> float | None:
        loud = [t for t, f in self.heard if rms_dbfs(f) > threshold_dbfs]
        return loud[-1] if loud else None

    async def close(self) -> None:
        for t in self.tasks:
            t.cancel()
        await self.pc.close()


async def post_connect(
    url: str, payload: Any, token: str | None = None, raw: bytes | None = None
) -> tuple[int, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    async with aiohttp.ClientSession() as http:
        if raw is not None:
            resp_cm = http.post(f"{url}/connect", data=raw, headers={**headers, "Content-Type": "application/json"})
        else:
            resp_cm = http.post(f"{url}/connect", json=payload, headers=headers)
        async with resp_cm as resp:
            return resp.status, await resp.json(content_type=None)


async def connect_device(url: str, device_id: str, token: str | None = None) -> Device:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    mic = SpeechSource()
    dev = Device(device_id, pc, mic)
    pc.addTransceiver(mic, direction="sendrecv")

    @pc.on("track")
    def on_track(track: MediaStreamTrack) -> None:
        async def record() -> None:
            with contextlib.suppress(MediaStreamError):
                while True:
                    f = await track.recv()
                    a = f.to_ndarray().reshape(-1, len(f.layout.channels)).mean(axis=1).astype(np.int16)
                    dev.heard.append((time.monotonic(), a))

        dev.tasks.append(asyncio.create_task(record()))

    await pc.setLocalDescription(await pc.createOffer())
    status, body = await post_connect(url, {"device_id": device_id, "sdp": pc.localDescription.sdp}, token)
    assert status == 200, body
    await pc.setRemoteDescription(RTCSessionDescription(sdp=body["sdp"], type="answer"))
    await until(lambda: pc.connectionState == "connected", 10, f"{device_id} connected")
    return dev


# ----- the fake AI server -----


def tone(rate: int, seconds: float, hz: float = 440.0) -> bytes:
    t = np.arange(int(rate * seconds)) / rate
    return (0.4 * 32767 * np.sin(2 * np.pi * hz * t)).astype("<i2").tobytes()


class FakeAI(pb_grpc.NailaAIServicer):
    """Records AudioInput per device; on END answers with transcript, tone audio, is_final."""

    def __init__(self) -> None:
        self.inputs: dict[str, list[pb.AudioInput]] = defaultdict(list)
        self.streams = 0
        self.reply_seconds = 1.0
        self.reply_rate = 22050
        self.replies_enabled = True
        self.status_hangs = False  # GetStatus never answers: a frozen host
        self.status_calls = 0
        self.interrupted: dict[str, int] = defaultdict(int)
        self.server: grpc.aio.Server | None = None
        self.port = 0
        self._out: asyncio.Queue[pb.AudioOutput] | None = None

    def events(self, device_id: str) -> list[int]:
        return [m.event for m in self.inputs[device_id]]

    def utterances(self, device_id: str) -> list[list[pb.AudioInput]]:
        """Complete START..END runs for a device."""
        runs: list[list[pb.AudioInput]] = []
        cur: list[pb.AudioInput] | None = None
        for m in self.inputs[device_id]:
            if m.event == pb.START:
                cur = [m]
            elif cur is not None:
                cur.append(m)
                if m.event == pb.END:
                    runs.append(cur)
                    cur = None
        return runs

    async def start(self, port: int = 0) -> None:
        self.server = grpc.aio.server()
        pb_grpc.add_NailaAIServicer_to_server(self, self.server)
        self.port = self.server.add_insecure_port(f"127.0.0.1:{port}")
        await self.server.start()

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop(grace=None)
            self.server = None

    async def GetStatus(self, request: pb.StatusRequest, context: grpc.aio.ServicerContext) -> pb.StatusResponse:
        self.status_calls += 1
        if self.status_hangs:
            await asyncio.sleep(3600)
        return pb.StatusResponse(status="ok")

    async def StreamConversation(
        self, request_iterator: AsyncIterator[pb.AudioInput], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.AudioOutput]:
        self.streams += 1
        out: asyncio.Queue[pb.AudioOutput | None] = asyncio.Queue()

        async def read() -> None:
            async for msg in request_iterator:
                self.inputs[msg.device_id].append(msg)
                if msg.event == pb.INTERRUPT:
                    self.interrupted[msg.device_id] += 1
                elif msg.event == pb.END and self.replies_enabled:
                    await self._reply(msg, out)
            await out.put(None)

        reader = asyncio.create_task(read())
        try:
            while (item := await out.get()) is not None:
                yield item
        finally:
            reader.cancel()

    async def _reply(self, end: pb.AudioInput, out: asyncio.Queue[pb.AudioOutput | None]) -> None:
        dev, conv = end.device_id, end.conversation_id
        frames = sum(len(m.audio_pcm) // 640 for m in self.utterances(dev)[-1])
        await out.put(pb.AudioOutput(device_id=dev, final_stt=f"heard {frames} frames", conversation_id=conv))
        pcm = tone(self.reply_rate, self.reply_seconds)
        step = self.reply_rate // 10 * 2  # 100 ms chunks
        for i in range(0, len(pcm), step):
            await out.put(pb.AudioOutput(device_id=dev, audio_pcm=pcm[i : i + step], sample_rate=self.reply_rate,
                                         reply_text="A tone." if i == 0 else "", conversation_id=conv))
        await out.put(pb.AudioOutput(device_id=dev, is_final=True, reply_text="A tone.", conversation_id=conv,
                                     timing=pb.TurnTiming(stt_ms=10, total_ms=20)))


@pytest.fixture
async def fake_ai() -> AsyncIterator[FakeAI]:
    ai = FakeAI()
    await ai.start()
    yield ai
    await ai.stop()


HubFactory = Callable[..., Awaitable[Hub]]


@pytest.fixture
async def make_hub(fake_ai: FakeAI, loopback_ice: None) -> AsyncIterator[HubFactory]:
    hubs: list[Hub] = []

    async def make(**overrides: Any) -> Hub:
        settings = load(
            HubSettings,
            **{
                "hub_host": "127.0.0.1",
                "hub_ai_server": f"127.0.0.1:{fake_ai.port}",
                "hub_grpc_backoff_initial_s": 0.05,
                "hub_grpc_backoff_max_s": 0.3,
                "hub_device_tokens": {},
                # These tests are about media, not auth: an explicitly open hub (tests/security covers auth).
                "hub_allow_unauthenticated": True,
                "hub_metrics_token": METRICS_TOKEN,
                # These tests speak plain questions: no wake word (tests/hub/test_listening*.py cover modes).
                "hub_listening_mode": "always",
                **overrides,
            },
        )
        hub = await run_hub(settings, WebRTCSettings(webrtc_ice_servers=[]), port=0)
        hubs.append(hub)
        assert await hub.link.wait_connected(5), "hub never connected to the fake AI server"
        return hub

    yield make
    for hub in hubs:
        await hub.stop()


@pytest.fixture(scope="session")
def phrase() -> Int16Array:
    """About 1.4 s of espeak-ng speech at 48 kHz."""
    return espeak("turn on the kitchen light", rate=RATE)


async def get_json(url: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    """GET with METRICS_TOKEN as the bearer unless ``headers`` says otherwise ({} = anonymous)."""
    sent = READ_HEADERS if headers is None else headers
    async with aiohttp.ClientSession() as http, http.get(url, headers=sent) as resp:
        return resp.status, await resp.json(content_type=None)


async def get_text(url: str, headers: dict[str, str] | None = None) -> str:
    sent = READ_HEADERS if headers is None else headers
    async with aiohttp.ClientSession() as http, http.get(url, headers=sent) as resp:
        return await resp.text()
