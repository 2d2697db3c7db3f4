"""An in-memory microphone and speaker, for tests, the demo and benchmarks.

The mic plays whatever was queued with :meth:`MemoryAudioBackend.play_into_mic` (silence
otherwise), plus, with an :class:`EchoPath`, the room's echo of the speaker. The speaker keeps
every block with the monotonic time it was played, so a test can ask when the assistant's reply
started or stopped, on the same clock as the rest of the system.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass

import numpy as np

from device_agent.audio_io.base import BACKEND_RATE, BLOCK_MS, PacedAudioBackend
from device_agent.audio_io.echo_path import EchoPath
from shared.audio import Int16Array, drain_chunks, resample, rms_dbfs


@dataclass(frozen=True)
class TimedBlock:
    """One block of audio and the monotonic time (``time.monotonic``) its first sample was played/captured."""

    t: float
    samples: Int16Array


class _Recording:
    """A bounded list of timed blocks."""

    def __init__(self, rate: int, max_s: float) -> None:
        self.rate = rate
        self.blocks: deque[TimedBlock] = deque()
        self._max_blocks = 0
        self._max_s = max_s
        self._lock = threading.Lock()

    def append(self, t: float, samples: Int16Array) -> None:
        with self._lock:
            self.blocks.append(TimedBlock(t, samples))
            limit = int(self._max_s * self.rate / max(samples.size, 1))
            while len(self.blocks) > limit > 0:
                self.blocks.popleft()

    def snapshot(self, since: float | None, until: float | None) -> list[TimedBlock]:
        with self._lock:
            blocks = list(self.blocks)
        return [
            b
            for b in blocks
            if (since is None or b.t >= since) and (until is None or b.t < until)
        ]

    def audio(self, since: float | None = None, until: float | None = None) -> Int16Array:
        blocks = self.snapshot(since, until)
        if not blocks:
            return np.zeros(0, dtype=np.int16)
        return np.concatenate([b.samples for b in blocks])

    def segments(
        self, threshold_dbfs: float, hangover_ms: float, since: float | None, until: float | None
    ) -> list[tuple[float, float]]:
        """(start, end) monotonic times of runs of blocks louder than ``threshold_dbfs``.

        Runs separated by less than ``hangover_ms`` of quiet are merged (speech has short pauses).
        """
        out: list[tuple[float, float]] = []
        for b in self.snapshot(since, until):
            if rms_dbfs(b.samples) < threshold_dbfs:
                continue
            end = b.t + b.samples.size / self.rate
            if out and b.t - out[-1][1] <= hangover_ms / 1000:
                out[-1] = (out[-1][0], end)
            else:
                out.append((b.t, end))
        return out


class MemoryAudioBackend(PacedAudioBackend):
    """Mic fed from memory, speaker recorded to memory, optional simulated echo between them."""

    def __init__(
        self,
        *,
        rate: int = BACKEND_RATE,
        block_ms: int = BLOCK_MS,
        echo_path: EchoPath | None = None,
        noise_dbfs: float | None = None,
        max_record_s: float = 600.0,
        seed: int = 0,
    ) -> None:
        super().__init__(rate=rate, block_ms=block_ms)
        self.echo_path = echo_path
        if echo_path is not None:
            echo_path.bind(rate, self.block_samples)
        self._noise = None if noise_dbfs is None else 32768.0 * 10 ** (noise_dbfs / 20)
        self._rng = np.random.default_rng(seed)
        self._queue: deque[Int16Array] = deque()
        self._queued = 0
        self._lock = threading.Lock()
        self._speaker = _Recording(rate, max_record_s)
        self._mic = _Recording(rate, max_record_s)

    # -- microphone ------------------------------------------------------------------------
    def play_into_mic(self, samples: Int16Array, rate: int) -> float:
        """Queue ``samples`` (int16 mono at ``rate``) into the mic stream after what is already queued.

        Returns how many seconds from now the queued audio will start (0 when the queue was empty).
        """
        x = resample(np.asarray(samples, dtype=np.int16), rate, self.rate)
        with self._lock:
            starts_in = self._queued / self.rate
            self._queue.append(x)
            self._queued += x.size
        return starts_in

    @property
    def mic_pending_s(self) -> float:
        """Seconds of queued mic audio not yet captured."""
        with self._lock:
            return self._queued / self.rate

    def clear_mic(self) -> None:
        with self._lock:
            self._queue.clear()
            self._queued = 0

    def _read_mic(self, n: int, t: float) -> Int16Array:
        out = np.zeros(n, dtype=np.float64)
        with self._lock:
            self._queued -= drain_chunks(self._queue, out)
        if self.echo_path is not None:
            out += self.echo_path.take(n)
        if self._noise is not None:
            out += self._rng.standard_normal(n) * self._noise
        mic = np.clip(np.round(out), -32768, 32767).astype(np.int16)
        self._mic.append(t, mic)
        return mic

    # -- speaker ---------------------------------------------------------------------------
    def _write_speaker(self, block: Int16Array, t: float) -> None:
        block = np.asarray(block, dtype=np.int16)
        self._speaker.append(t, block)
        if self.echo_path is not None:
            self.echo_path.feed(block)

    @property
    def speaker_frames(self) -> list[TimedBlock]:
        """Every block played (bounded to ``max_record_s``), oldest first, with monotonic times."""
        return self._speaker.snapshot(None, None)

    @property
    def mic_frames(self) -> list[TimedBlock]:
        """Every raw mic block captured (speech + echo + noise, before echo cancellation)."""
        return self._mic.snapshot(None, None)

    def speaker_audio(self, since: float | None = None, until: float | None = None) -> Int16Array:
        """The speaker output between two monotonic times, concatenated."""
        return self._speaker.audio(since, until)

    def mic_audio(self, since: float | None = None, until: float | None = None) -> Int16Array:
        """The raw mic input between two monotonic times, concatenated."""
        return self._mic.audio(since, until)

    def speaker_segments(
        self,
        threshold_dbfs: float = -50.0,
        hangover_ms: float = 300.0,
        since: float | None = None,
        until: float | None = None,
    ) -> list[tuple[float, float]]:
        """(start, end) monotonic times when the speaker played audio above ``threshold_dbfs``."""
        return self._speaker.segments(threshold_dbfs, hangover_ms, since, until)

    def speaker_started_at(self, threshold_dbfs: float = -50.0, since: float | None = None) -> float | None:
        """Monotonic time the speaker first played audio above the threshold (after ``since``), or None."""
        segs = self.speaker_segments(threshold_dbfs, 0.0, since)
        return segs[0][0] if segs else None

    def speaker_stopped_at(
        self, threshold_dbfs: float = -50.0, since: float | None = None, hangover_ms: float = 300.0
    ) -> float | None:
        """End time of the last run of speaker audio above the threshold, or None if it never played.

        The end is only final once ``hangover_ms`` of quiet has followed it; callers poll.
        """
        segs = self.speaker_segments(threshold_dbfs, hangover_ms, since)
        return segs[-1][1] if segs else None
