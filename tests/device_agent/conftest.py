"""Fixtures for the device agent tests, and a minimal hub stand-in: aiohttp ``POST /connect`` + aiortc.

It answers the device's offer, records the device's audio (48 kHz mono) and counts its video
frames, and sends a continuous 48 kHz track back (a tone, silence, or given samples).
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
from collections.abc import AsyncIterator, Callable
from typing import Any

import numpy as np
import pytest
from aiohttp import web
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import AudioFrame

from shared.audio import Int16Array, frame_to_mono


class ReplyTrack(MediaStreamTrack):
    """20 ms frames at 48 kHz, paced in real time: a tone (or ``samples`` looped, or silence)."""

    kind = "audio"

    def __init__(self, tone_hz: float | None = 440.0, amplitude: float = 6000, samples: Int16Array | None = None):
        super().__init__()
        self.tone_hz, self.amplitude, self.samples = tone_hz, amplitude, samples
        self._n = 0
        self._start: float | None = None

    async def recv(self) -> AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        loop = asyncio.get_running_loop()
        if self._start is None:
            self._start = loop.time()
        wait = self._start + self._n * 960 / 48_000 - loop.time()
        if wait > 0:
            await asyncio.sleep(wait)
        idx = np.arange(self._n * 960, (self._n + 1) * 960)
        if self.samples is not None:
            x = self.samples[idx % self.samples.size]
        elif self.tone_hz:
            x = (self.amplitude * np.sin(2 * np.pi * self.tone_hz * idx / 48_000)).astype(np.int16)
        else:
            x = np.zeros(960, np.int16)
        frame = AudioFrame.from_ndarray(x.reshape(1, -1).astype(np.int16), format="s16", layout="mono")
        frame.sample_rate = 48_000
        frame.pts = self._n * 960
        frame.time_base = fractions.Fraction(1, 48_000)
        self._n += 1
        return frame


class Answerer:
    def __init__(self, port: int, token: str | None = None, reply: ReplyTrack | None = None) -> None:
        self.port = port
        self.token = token
        self._reply_factory: Callable[[], ReplyTrack] = (lambda: reply) if reply is not None else ReplyTrack
        self.pcs: list[RTCPeerConnection] = []
        self.device_ids: list[str] = []
        self.audio: list[tuple[float, Int16Array]] = []  # (loop time, 48 kHz mono) per frame
        self.video_frames = 0
        self.video_levels: list[float] = []  # mean luma of each received video frame (0 = black)
        self.requests = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def received(self, since: float = 0.0) -> Int16Array:
        chunks = [x for t, x in self.audio if t >= since]
        return np.concatenate(chunks) if chunks else np.zeros(0, np.int16)

    async def _connect(self, request: web.Request) -> web.Response:
        self.requests += 1
        if self.token and request.headers.get("Authorization") != f"Bearer {self.token}":
            return web.json_response({"error": "bad token"}, status=401)
        try:
            body: Any = await request.json()
            offer = RTCSessionDescription(sdp=body["sdp"], type="offer")
            device_id = str(body["device_id"])
        except (ValueError, KeyError, TypeError):
            return web.json_response({"error": "bad request"}, status=400)
        pc = RTCPeerConnection()
        self.pcs.append(pc)
        self.device_ids.append(device_id)

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            self._tasks.append(asyncio.create_task(self._record(track)))

        await pc.setRemoteDescription(offer)
        pc.addTrack(self._reply_factory())
        await pc.setLocalDescription(await pc.createAnswer())
        return web.json_response({"sdp": pc.localDescription.sdp})

    async def _record(self, track: MediaStreamTrack) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            if track.kind == "audio":
                x = frame_to_mono(frame)  # type: ignore[arg-type]
                self.audio.append((loop.time(), x))
            else:
                self.video_frames += 1
                self.video_levels.append(float(frame.to_ndarray(format="gray").mean()))  # type: ignore[union-attr]

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/connect", self._connect)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        """Vanish like a crashed hub: close every peer connection and the HTTP server."""
        for pc in self.pcs:
            await pc.close()
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


@pytest.fixture
async def answerers() -> AsyncIterator[list[Answerer]]:
    """Answerers the test starts are stopped at the end whatever happens."""
    started: list[Answerer] = []
    yield started
    for a in started:
        await a.stop()
