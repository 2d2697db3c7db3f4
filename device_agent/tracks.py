"""aiortc media tracks for the device: the echo-cancelled microphone, and frame conversions."""

from __future__ import annotations

import asyncio
import fractions

import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import AudioFrame

from device_agent.audio_pipeline import MicBuffer
from shared.audio import Int16Array

RATE = 48_000
FRAME_MS = 20


class MicTrack(MediaStreamTrack):
    """20 ms mono s16 frames at 48 kHz taken from the pipeline's :class:`MicBuffer`.

    Pacing comes from the audio backend's clock (the buffer fills in real time). If the backend
    stalls, the track keeps real time on its own clock with silence, so the hub never sees
    a gap in RTP and the peer connection stays up.
    """

    kind = "audio"

    def __init__(
        self, source: MicBuffer, *, rate: int = RATE, frame_ms: int = FRAME_MS, slack_s: float = 0.06
    ) -> None:
        super().__init__()
        self._source = source
        self.rate = rate
        self.samples = rate * frame_ms // 1000
        self._slack = slack_s
        self._time_base = fractions.Fraction(1, rate)
        self._pts = 0
        self._start: float | None = None
        self.frames = 0
        self.silence_frames = 0

    async def recv(self) -> AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        loop = asyncio.get_running_loop()
        if self._start is None:
            self._start = loop.time()
            self._source.clear()  # audio from before this connection is stale
        due = self._start + (self._pts + self.samples) / self.rate
        samples = await self._source.read(self.samples, max(0.0, due + self._slack - loop.time()))
        if samples is None:
            self.silence_frames += 1
            samples = np.zeros(self.samples, dtype=np.int16)
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
        elif loop.time() - due > 1.0:
            # Far behind our own clock (e.g. after a long stall): restart the timeline.
            self._start = loop.time() - (self._pts + self.samples) / self.rate
        frame = int16_to_frame(samples, self.rate)
        frame.pts = self._pts
        frame.time_base = self._time_base
        self._pts += self.samples
        self.frames += 1
        return frame


def int16_to_frame(samples: Int16Array, rate: int) -> AudioFrame:
    frame = AudioFrame.from_ndarray(
        np.ascontiguousarray(samples, dtype=np.int16).reshape(1, -1), format="s16", layout="mono"
    )
    frame.sample_rate = rate
    return frame

