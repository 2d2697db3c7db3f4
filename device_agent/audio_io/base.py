"""The one audio I/O interface: a full-duplex device driven by its own clock.

Why duplex: echo cancellation needs the far-end reference (what goes to the speaker) on the same
sample clock as the microphone. So every backend calls one callback per block with the mic block
it just captured and plays the block the callback returns; the caller uses that returned block
as the AEC reference. Sound cards do this in their audio thread (``SoundDeviceBackend``); the
file and memory backends do it from an asyncio task paced by the monotonic clock.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
from collections.abc import Callable

import numpy as np

from shared.audio import Int16Array

log = logging.getLogger(__name__)

#: Sample rate of every backend: Opus' native rate, so WebRTC needs no resampling.
BACKEND_RATE = 48_000
#: Default block: 10 ms (the echo canceller's frame and a typical ALSA period).
BLOCK_MS = 10

#: ``callback(mic_block) -> speaker_block`` (same length, int16 mono at the backend rate).
DuplexCallback = Callable[[Int16Array], Int16Array]


class AudioBackend(abc.ABC):
    """A microphone and a speaker sharing one clock."""

    rate: int = BACKEND_RATE
    block_ms: int = BLOCK_MS

    @property
    def block_samples(self) -> int:
        return self.rate * self.block_ms // 1000

    @abc.abstractmethod
    async def start(self, callback: DuplexCallback) -> None:
        """Begin calling ``callback`` once per block until :meth:`stop`."""

    @abc.abstractmethod
    async def stop(self) -> None:
        """Stop the clock and release the device (idempotent)."""

    def describe(self) -> str:
        return f"{type(self).__name__} {self.rate} Hz, {self.block_ms} ms blocks"


class PacedAudioBackend(AudioBackend):
    """A backend whose clock is an asyncio task ticking every block in real time.

    Ticks are scheduled on absolute times (``t0 + k * block``), so sleep jitter never
    accumulates into drift; when the loop falls behind it catches up back to back, like a
    sound card draining its buffer, and resynchronises after a long stall (> ``max_lag_s``).
    """

    max_lag_s = 0.5

    def __init__(self, *, rate: int = BACKEND_RATE, block_ms: int = BLOCK_MS) -> None:
        self.rate = rate
        self.block_ms = block_ms
        self._task: asyncio.Task[None] | None = None
        self._callback: DuplexCallback | None = None
        self.ticks = 0
        self.resyncs = 0

    async def start(self, callback: DuplexCallback) -> None:
        if self._task is not None:
            raise RuntimeError("audio backend already started")
        self._callback = callback
        self._task = asyncio.create_task(self._run(), name=f"{type(self).__name__}-clock")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._close()

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        n = self.block_samples
        period = n / self.rate
        t0 = loop.time()
        k = 0
        assert self._callback is not None
        while True:
            target = t0 + k * period
            now = loop.time()
            if target > now:
                await asyncio.sleep(target - now)
            elif now - target > self.max_lag_s:
                self.resyncs += 1
                log.warning(
                    "%s fell %.0f ms behind; resynchronising", type(self).__name__, 1e3 * (now - target)
                )
                t0, k, target = now, 0, now
            mic = self._read_mic(n, target)
            try:
                speaker = self._callback(mic)
            except Exception:
                log.exception("audio callback failed; playing silence for this block")
                speaker = np.zeros(n, dtype=np.int16)
            self._write_speaker(speaker, target)
            self.ticks += 1
            k += 1

    def run_blocks(self, callback: DuplexCallback, blocks: int, t0: float = 0.0) -> None:
        """Drive ``blocks`` periods synchronously, as fast as possible (benchmarks, offline tests).

        Timestamps are ``t0 + k * block`` on the caller's notional clock. Do not mix with start().
        """
        n = self.block_samples
        period = n / self.rate
        for k in range(blocks):
            t = t0 + k * period
            mic = self._read_mic(n, t)
            self._write_speaker(callback(mic), t)
            self.ticks += 1

    @abc.abstractmethod
    def _read_mic(self, n: int, t: float) -> Int16Array:
        """The next ``n`` microphone samples (captured at monotonic time ``t``)."""

    @abc.abstractmethod
    def _write_speaker(self, block: Int16Array, t: float) -> None:
        """``block`` is played at monotonic time ``t``."""

    def _close(self) -> None:
        """Release files etc. after the clock stopped."""


class NoAudioBackend(AudioBackend):
    """No microphone and no speaker (``DEVICE_AUDIO_BACKEND=none``): a camera-only device.

    The agent then offers no audio section at all, so the hub neither listens to nor speaks to it.
    """

    async def start(self, callback: DuplexCallback) -> None:
        return None

    async def stop(self) -> None:
        return None

    def describe(self) -> str:
        return "none (camera-only device)"
