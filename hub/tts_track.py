"""The per-device outbound audio track: TTS replies in, 48 kHz 20 ms frames out, in real time.

AudioOutput PCM arrives in bursts (the AI server synthesises faster than real time) at
whatever rate the voice uses (often 22050 Hz). It is resampled once on arrival to 48 kHz
and queued; aiortc's RTP sender pulls :meth:`TtsTrack.recv` and we pace it by pts exactly
as aiortc's own AudioStreamTrack does, playing silence whenever nothing is queued, so the
device hears a continuous stream. :meth:`flush` empties the queue at once (barge-in).

Frames are sent as stereo (both channels equal): aiortc's Opus encoder encodes stereo
anyway, and libswresample's mono->stereo upmix would cost 3 dB (Chromium plays a mono
track ~3 dB quieter, see the dependency notes).
"""

from __future__ import annotations

import asyncio
import fractions
import time
from collections import deque
from collections.abc import Awaitable, Callable

import numpy as np
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError
from av import AudioFrame

from shared.audio import Int16Array, StreamResampler, pcm_to_int16

OUT_RATE = 48_000
FRAME_SAMPLES = 960  # 20 ms at 48 kHz
FRAME_S = FRAME_SAMPLES / OUT_RATE
TIME_BASE = fractions.Fraction(1, OUT_RATE)
# A reply is synthesised ahead of playout; this caps one device's backlog (memory bound).
MAX_BUFFER_S = 120.0
# A short remainder mid-reply is held this many frames waiting for the next chunk before it
# is played padded with silence (avoids a gap when chunks do not align to 20 ms).
HOLD_PARTIAL_FRAMES = 2
# Pacing: if the event loop stalled and we are this far behind, re-anchor instead of bursting.
MAX_LAG_S = 0.1

PlayoutCallback = Callable[[float, float], None]  # (received_at, latency_s)
EARCON_S = 0.12  # issue 19: the "I'm listening" tone after the wake word (100-150 ms)


def make_earcon(duration_s: float = EARCON_S, level_dbfs: float = -14.0) -> Int16Array:
    """A rising two-note chime at 48 kHz with 10 ms fades (no clicks), quiet enough not to startle.
    Its notes (C5, G5) are not the timer alarm's (880 / 1318.5 Hz, ai_server/assist/sounds.py), so
    a person and a frequency check tell "I'm listening" from "your timer is done"."""
    n = int(duration_s * OUT_RATE)
    t = np.arange(n) / OUT_RATE
    freq = np.where(t < duration_s / 2, 523.25, 783.99)
    phase = 2 * np.pi * np.cumsum(freq) / OUT_RATE
    fade = np.minimum(1.0, np.minimum(t, duration_s - t) / 0.01)
    amp = 32767 * 10 ** (level_dbfs / 20)
    return (np.sin(phase) * fade * amp).astype(np.int16)


class TtsTrack(MediaStreamTrack):
    """Queue of reply audio for one device, exposed as a real-time aiortc audio track."""

    kind = "audio"

    def __init__(
        self,
        *,
        on_playout: PlayoutCallback | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        max_buffer_s: float = MAX_BUFFER_S,
    ) -> None:
        super().__init__()
        self._clock = clock
        self._sleep = sleep
        self._on_playout = on_playout
        self._max_samples = int(max_buffer_s * OUT_RATE)
        self._chunks: deque[Int16Array] = deque()
        self._head = 0  # samples of _chunks[0] already played
        self._buffered = 0
        self._resampler: StreamResampler | None = None
        self._reply_open = False
        self._held = 0
        # Downlink latency: arrival time of audio pushed while idle (measured when the first
        # of its samples goes out).
        self._mark: float | None = None
        self._start: float | None = None
        self._pts = 0
        self._silence = np.zeros(FRAME_SAMPLES * 2, dtype=np.int16).tobytes()
        self.frames_out = 0
        self.audio_frames_out = 0
        # An earcon is mixed over whatever plays and is not reply audio: it does not make
        # ``playing`` true (so the user's next words are not taken for a barge-in) and a flush
        # leaves it alone.
        self._earcon: Int16Array | None = None
        self._earcon_pos = 0

    # ----- producer side (the gRPC reader) -----

    @property
    def buffered_samples(self) -> int:
        return self._buffered

    @property
    def buffered_s(self) -> float:
        return self._buffered / OUT_RATE

    @property
    def reply_open(self) -> bool:
        return self._reply_open

    @property
    def playing(self) -> bool:
        """True while reply audio is queued or its reply has not ended (barge-in applies)."""
        return self._buffered > 0 or self._reply_open

    def push(self, pcm: bytes, sample_rate: int, received_at: float | None = None) -> bool:
        """Queue one chunk of reply audio. False (and nothing queued) if over the cap."""
        if sample_rate <= 0:
            raise ValueError(f"bad sample rate {sample_rate}")
        samples = pcm_to_int16(pcm[: len(pcm) - len(pcm) % 2])
        if self._resampler is None or self._resampler.from_rate != sample_rate:
            self._finish_resampler()
            self._resampler = StreamResampler(sample_rate, OUT_RATE)
        out = self._resampler.process(samples)
        if self._buffered + out.size > self._max_samples:
            return False
        self._reply_open = True
        if self._buffered == 0 and self._mark is None:
            self._mark = self._clock() if received_at is None else received_at
        self._append(out)
        return True

    def play_earcon(self, tone: Int16Array | None = None) -> None:
        """Mix a short tone (48 kHz mono) into the next frames, from its start."""
        self._earcon = make_earcon() if tone is None else tone
        self._earcon_pos = 0

    @property
    def earcon_playing(self) -> bool:
        return self._earcon is not None

    def end_reply(self) -> None:
        """The reply is complete (is_final): play out the resampler's tail, then go idle."""
        self._finish_resampler()
        self._reply_open = False

    def flush(self) -> int:
        """Drop everything queued at once (barge-in). Returns the samples dropped."""
        dropped = self._buffered
        self._chunks.clear()
        self._head = 0
        self._buffered = 0
        self._resampler = None
        self._reply_open = False
        self._held = 0
        self._mark = None
        return dropped

    def _finish_resampler(self) -> None:
        if self._resampler is not None:
            tail = self._resampler.process(np.zeros(0, dtype=np.int16), last=True)
            self._append(tail)
            self._resampler = None

    def _append(self, x: Int16Array) -> None:
        if x.size:
            self._chunks.append(x)
            self._buffered += x.size

    # ----- consumer side (aiortc's RTP sender) -----

    def next_frame(self) -> Int16Array | None:
        """The next 20 ms of mono 48 kHz audio, or None for silence. Not paced."""
        out = self._next_reply_frame()
        tone = self._earcon
        if tone is None:
            return out
        part = tone[self._earcon_pos : self._earcon_pos + FRAME_SAMPLES]
        self._earcon_pos += FRAME_SAMPLES
        if self._earcon_pos >= tone.size:
            self._earcon = None
        mixed = np.zeros(FRAME_SAMPLES, dtype=np.int32) if out is None else out.astype(np.int32)
        mixed[: part.size] += part
        return np.clip(mixed, -32768, 32767).astype(np.int16)

    def _next_reply_frame(self) -> Int16Array | None:
        if self._buffered == 0:
            self._held = 0
            return None
        if self._buffered < FRAME_SAMPLES and self._reply_open and self._held < HOLD_PARTIAL_FRAMES:
            self._held += 1
            return None
        self._held = 0
        out = np.zeros(FRAME_SAMPLES, dtype=np.int16)
        filled = 0
        while filled < FRAME_SAMPLES and self._chunks:
            head = self._chunks[0]
            take = min(FRAME_SAMPLES - filled, head.size - self._head)
            out[filled : filled + take] = head[self._head : self._head + take]
            filled += take
            self._head += take
            if self._head >= head.size:
                self._chunks.popleft()
                self._head = 0
        self._buffered -= filled
        if self._mark is not None and self._on_playout is not None:
            self._on_playout(self._mark, max(0.0, self._clock() - self._mark))
        self._mark = None
        return out

    async def recv(self) -> AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        now = self._clock()
        if self._start is None:
            self._start = now
            self._pts = 0
        else:
            self._pts += FRAME_SAMPLES
            wait = self._start + self._pts / OUT_RATE - now
            if wait > 0:
                await self._sleep(wait)
            elif wait < -MAX_LAG_S:
                self._start = now - self._pts / OUT_RATE
        mono = self.next_frame()
        self.frames_out += 1
        if mono is None:
            data = self._silence
        else:
            self.audio_frames_out += 1
            data = np.repeat(mono, 2).tobytes()
        frame = AudioFrame(format="s16", layout="stereo", samples=FRAME_SAMPLES)
        frame.planes[0].update(data)
        frame.pts = self._pts
        frame.sample_rate = OUT_RATE
        frame.time_base = TIME_BASE
        return frame
