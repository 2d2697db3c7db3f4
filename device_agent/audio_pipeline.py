"""The device's audio path between the sound card clock and WebRTC.

::

    hub audio (WebRTC) --> PlaybackBuffer --> volume --> speaker ----+
                                                                     | same duplex period
    microphone ---------------------> EchoCancellerStream(mic, speaker) --> mute --> MicBuffer --> WebRTC

:meth:`AudioPipeline.duplex` is the audio backend's callback: it runs once per block on the
backend's clock (PortAudio's thread for a sound card, the event loop for file/memory), so the
buffers on both sides are thread-safe and never block.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from device_agent.aec import EchoCanceller, EchoCancellerStream
from device_agent.echo_guard import EchoGuard
from shared.aio import wait_event
from shared.audio import Int16Array, drain_chunks, rms_dbfs

#: A chunk at or below this RMS level is silence the hub sends between (and within) replies.
QUIET_DBFS = -60.0
# DEVICE_PLAYBACK_PREBUFFER_MS's default: two of the hub's 20 ms packets (30 would start at two as
# well; 20 = one packet underruns whenever a packet is a little late).
PREBUFFER_MS = 40


class PlaybackBuffer:
    """Audio from the hub waiting to be played: a small jitter buffer between two clocks.

    The hub's RTP clock and the sound card's clock drift apart and packets arrive in bursts, so
    playback starts (and restarts after an underrun) only once ``prebuffer_ms`` is queued, and the
    queue is capped at ``max_ms`` by dropping the oldest audio, which bounds the added latency.

    The hub sends silence whenever it has no reply. A burst (the device's or the hub's event loop
    stalled, then caught up; the sound card's clock a little slower than the hub's) leaves the
    queue longer than the prebuffer, and nothing ever drained it again: every later reply started
    that much later (issue 20: +50 ms at the speaker by the fifth turn). So a quiet chunk that
    arrives while the prebuffer is already queued is dropped: the queue shrinks back to the
    prebuffer during silence, where dropping is inaudible, and each reply starts with the same short
    queue. Speech is never dropped below ``max_ms``.

    While the hub is idle it sends one silence packet per 400 ms (hub/tts_track.py), so the queue
    stops between replies holding a packet of silence that never reached the prebuffer. A reply's
    first audible chunk no longer waits behind it: silence queued while stopped is dropped then
    (issue 20: up to 20 ms at the speaker; the hub sends a reply's first two packets together, so
    the prebuffer fills with the reply itself).
    """

    def __init__(self, rate: int = 48_000, *, prebuffer_ms: int = PREBUFFER_MS, max_ms: int = 400) -> None:
        self.rate = rate
        self._prebuffer = rate * prebuffer_ms // 1000
        self._max = rate * max_ms // 1000
        self._chunks: deque[Int16Array] = deque()
        self._size = 0
        self._playing = False
        self._lock = threading.Lock()
        self.underruns = 0
        self.dropped_samples = 0
        self.trimmed_samples = 0  # quiet audio dropped to keep the queue at the prebuffer

    @property
    def prebuffer_ms(self) -> float:
        return 1000 * self._prebuffer / self.rate

    @property
    def buffered_ms(self) -> float:
        with self._lock:
            return 1000 * self._size / self.rate

    def push(self, samples: Int16Array) -> None:
        if samples.size == 0:
            return
        quiet = rms_dbfs(samples) <= QUIET_DBFS
        with self._lock:
            if quiet and self._size >= max(self._prebuffer, 1):
                self.trimmed_samples += samples.size
                return
            if not quiet and not self._playing and self._chunks and all(
                rms_dbfs(c) <= QUIET_DBFS for c in self._chunks  # stopped: at most the prebuffer
            ):
                self.trimmed_samples += self._size  # stale idle silence ahead of a reply
                self._chunks.clear()
                self._size = 0
            self._chunks.append(samples)
            self._size += samples.size
            excess = self._size - self._max
            while excess > 0 and self._chunks:
                head = self._chunks[0]
                if head.size <= excess:
                    self._chunks.popleft()
                    self._size -= head.size
                    excess -= head.size
                    self.dropped_samples += head.size
                else:
                    self._chunks[0] = head[excess:]
                    self._size -= excess
                    self.dropped_samples += excess
                    excess = 0

    def pull(self, n: int) -> Int16Array:
        """``n`` samples to play now (silence-padded on underrun)."""
        out = np.zeros(n, dtype=np.int16)
        with self._lock:
            if not self._playing:
                if self._size < max(self._prebuffer, 1):
                    return out
                self._playing = True
            filled = drain_chunks(self._chunks, out)
            self._size -= filled
            if filled < n:
                self._playing = False
                self.underruns += 1
        return out

    def clear(self) -> None:
        with self._lock:
            self._chunks.clear()
            self._size = 0
            self._playing = False


class MicBuffer:
    """Cleaned mic audio waiting for the WebRTC track: written on the audio clock, read by asyncio.

    Bounded to ``max_ms`` (oldest dropped): while no peer reads (reconnecting) or when the reader
    falls behind for good, stale audio is discarded instead of turning into latency. The bound is
    not latency in normal running: the track sends whatever is here at once. It is how long a stall
    of the reader is survived without losing speech: after one, the audio clock hands over
    everything it captured meanwhile (a paced backend catches up to ``PacedAudioBackend.max_lag_s``,
    0.5 s), and a 200 ms bound lost 140-230 ms of a sentence to stalls of 100-350 ms of the
    process (tests/device_agent/test_integration.py under SIGSTOP bursts; 0 ms with 500).
    """

    def __init__(self, rate: int = 48_000, *, max_ms: int = 500) -> None:
        self.rate = rate
        self._max = rate * max_ms // 1000
        self._buf: Int16Array = np.zeros(0, dtype=np.int16)
        self._lock = threading.Lock()
        self._waiter: tuple[asyncio.AbstractEventLoop, asyncio.Event] | None = None
        self.dropped_samples = 0

    def push(self, samples: Int16Array) -> None:
        if samples.size == 0:
            return
        with self._lock:
            buf = np.concatenate([self._buf, samples]) if self._buf.size else samples.copy()
            if buf.size > self._max:
                self.dropped_samples += buf.size - self._max
                buf = buf[buf.size - self._max :]
            self._buf = buf
            waiter = self._waiter
        if waiter is not None:
            loop, event = waiter
            try:
                if loop.is_closed():
                    return
                if _running_loop() is loop:
                    event.set()
                else:
                    loop.call_soon_threadsafe(event.set)
            except RuntimeError:  # loop closed between the check and the call
                pass

    def take_nowait(self, n: int) -> Int16Array | None:
        with self._lock:
            if self._buf.size < n:
                return None
            out, self._buf = self._buf[:n], self._buf[n:]
            return out

    async def read(self, n: int, wait_s: float) -> Int16Array | None:
        """Wait up to ``wait_s`` s for ``n`` samples; None if they did not arrive."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        while True:
            got = self.take_nowait(n)
            if got is not None:
                return got
            remaining = deadline - loop.time()
            if remaining <= 0:
                return None
            event = asyncio.Event()
            with self._lock:
                self._waiter = (loop, event)
                ready = self._buf.size >= n
            if not ready:
                await wait_event(event, remaining)
            with self._lock:
                self._waiter = None

    def clear(self) -> None:
        with self._lock:
            self._buf = np.zeros(0, dtype=np.int16)

    @property
    def buffered_ms(self) -> float:
        with self._lock:
            return 1000 * self._buf.size / self.rate


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


@dataclass
class PipelineStats:
    blocks: int = 0
    aec_frames: int = 0
    aec_cpu_s: float = 0.0
    playback_underruns: int = 0
    playback_dropped_ms: float = 0.0
    playback_trimmed_ms: float = 0.0
    mic_dropped_ms: float = 0.0


class AudioPipeline:
    """Speaker path with volume, mic path with echo cancellation and mute. See the module doc."""

    def __init__(
        self,
        canceller: EchoCanceller,
        *,
        rate: int = 48_000,
        ref_delay_ms: int = 0,
        echo_guard_s: float = 0.0,
        prebuffer_ms: int = PREBUFFER_MS,
    ) -> None:
        self.rate = rate
        self.playback = PlaybackBuffer(rate, prebuffer_ms=prebuffer_ms)
        self.mic_out = MicBuffer(rate)
        self.aec = EchoCancellerStream(canceller, rate, ref_delay_ms)
        # Only meaningful with a real canceller: it covers the canceller's convergence.
        self.guard = EchoGuard(rate, converge_s=echo_guard_s) if echo_guard_s > 0 and canceller.name != "none" \
            else None
        self._volume = 1.0
        self.mic_muted = False
        self.blocks = 0
        # Recordings (device_agent.recorder) listen here: the mic path after AEC and mute, audio thread.
        self.taps: list[Callable[[Int16Array], None]] = []

    @property
    def volume(self) -> int:
        """Speaker volume 0-100 (linear amplitude scale; 100 = unity)."""
        return round(self._volume * 100)

    @volume.setter
    def volume(self, level: int) -> None:
        if not 0 <= level <= 100:
            raise ValueError("volume must be 0-100")
        self._volume = level / 100

    def duplex(self, mic: Int16Array) -> Int16Array:
        """The audio backend's callback: returns the block to play, cancels its echo from the mic."""
        speaker = self.playback.pull(mic.size)
        if self._volume != 1.0:
            speaker = np.clip(np.round(speaker * self._volume), -32768, 32767).astype(np.int16)
        # The reference is exactly what goes to the speaker, after volume.
        cleaned = self.aec.process(mic, speaker)
        if self.guard is not None:
            cleaned = self.guard.process(cleaned, speaker, mic)
        if self.mic_muted:
            cleaned = np.zeros_like(cleaned)
        self.mic_out.push(cleaned)
        for tap in tuple(self.taps):
            tap(cleaned)
        self.blocks += 1
        return speaker

    def stats(self) -> PipelineStats:
        ms = 1000 / self.rate
        return PipelineStats(
            blocks=self.blocks,
            aec_frames=self.aec.frames,
            aec_cpu_s=self.aec.cpu_s,
            playback_underruns=self.playback.underruns,
            playback_dropped_ms=self.playback.dropped_samples * ms,
            playback_trimmed_ms=self.playback.trimmed_samples * ms,
            mic_dropped_ms=self.mic_out.dropped_samples * ms,
        )

    def close(self) -> None:
        self.aec.close()
