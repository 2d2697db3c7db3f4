"""The per-device outbound audio track: TTS replies in, 48 kHz 20 ms frames out, in real time.

AudioOutput PCM arrives in bursts (the AI server synthesises faster than real time) at
whatever rate the voice uses (often 22050 Hz). It is resampled once on arrival to 48 kHz
and queued; aiortc's RTP sender pulls :meth:`TtsTrack.recv` and we pace it by pts exactly
as aiortc's own AudioStreamTrack does, playing silence whenever nothing is queued, so the
device hears a continuous stream. :meth:`flush` empties the queue at once (barge-in).

Frames are sent as stereo (both channels equal): aiortc's Opus encoder encodes stereo
anyway, and libswresample's mono->stereo upmix would cost 3 dB (Chromium plays a mono
track ~3 dB quieter, see the dependency notes).

Most of the time a device hears silence, and aiortc's sender pays for every silent frame as
for speech: an audio-level scan in Python (~100 us), a hop to its executor thread and an Opus
encode (~200 us), about 0.017 core per stream (measured, issue 21). With ``opus_silence`` on
(the session turns it on once Opus is negotiated and :class:`GapTolerantOpusEncoder` is the
sender's encoder) idle frames go out as one pre-encoded Opus silence packet instead, which
aiortc sends as is. The first silent frame after audio is still encoded, so the encoder's
lookahead holds silence when the next reply starts.

Even a pre-encoded packet costs aiortc's Python RTP path (packetise, SRTP, a UDP send, RTCP
bookkeeping) and a wake-up of the device, 50 times a second for nothing; so, as Opus DTX does,
an idle track sends one silence packet every :data:`IDLE_PACKET_FRAMES` (400 ms) and skips the
frames between (their RTP timestamps advance all the same, so the device's decoder sees a gap of
silence, not lost packets). It does so only after :data:`IDLE_TAIL_FRAMES` of silence sent on
every frame after audio: a receiver's jitter buffer releases a packet only when later ones
arrive (aiortc holds its prefetch, 4 packets by default), and the tail pushes the end of the
reply (or of a flushed one) out at once. The frame clock keeps running.

A reply that starts while the track is idle goes out at once, not on the next tick (a push wakes
the sleeping track and the frame clock is re-anchored there, ~10 ms saved on average), and its
second frame follows the first without waiting: the track then runs one frame ahead of its clock
until the reply ends. A receiver starts playing once it holds a couple of packets (the device's
40 ms prebuffer, device_agent/audio_pipeline.py), so the reply is heard ~20 ms sooner while the
device keeps the same 40 ms of margin against jitter through the reply (issue 20). The lead is
given back in the silence after the reply (one tick waits 40 ms). A browser is the exception
(``lead_frames=0``, hub/session.py): its adaptive jitter buffer (Chromium's NetEq) takes the burst
for network jitter and raises its delay target, 21 -> 39 ms, and heard the reply later, not sooner
(bench/browser_playout.py: 41 ms from the push to the page's analyser without a lead, 52 with one,
60 with two).

With :attr:`TtsTrack.encoder` set (the session sets it to the sender's own encoder along with
``opus_silence``) the track encodes reply frames itself, on the event loop, and hands aiortc
packets: aiortc would hop to its executor thread for every frame (a ThreadPoolExecutor submit
and a thread wake-up, more than the ~200 us encode) and scan each frame's audio level in Python.
"""

from __future__ import annotations

import asyncio
import fractions
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
from aiortc import MediaStreamTrack
from aiortc.codecs.opus import OpusEncoder
from aiortc.mediastreams import MediaStreamError, convert_timebase
from av import AudioFrame, Packet
from av.frame import Frame

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

# While idle (with opus_silence), one silence packet per this many frames: 400 ms, Opus DTX's
# interval, well inside the device's RTP watchdog (5 s) and ICE consent (30 s) ...
IDLE_PACKET_FRAMES = 20
# ... after this many silent frames sent on every tick after audio (flushes receivers' jitter
# buffers: aiortc's default prefetch is 4 packets, a browser's a few more).
IDLE_TAIL_FRAMES = 10

PlayoutCallback = Callable[[float, float], None]  # (received_at, latency_s)
EARCON_S = 0.12  # issue 19: the "I'm listening" tone after the wake word (100-150 ms)


class GapTolerantOpusEncoder(OpusEncoder):
    """aiortc's Opus encoder, with each packet's RTP timestamp taken from its frame's pts.

    aiortc stamps a packet with libopus's packet pts minus the first one; after frames that
    skipped the encoder (pre-encoded silence) libopus's first packet carries a stale pts, and the
    RTP timestamp would jump back. The frame's own pts is right in every case.
    """

    def encode(self, frame: Frame, force_keyframe: bool = False) -> tuple[list[bytes], int]:
        payloads, _ = super().encode(frame, force_keyframe)
        assert frame.pts is not None and frame.time_base is not None
        return payloads, convert_timebase(frame.pts, frame.time_base, TIME_BASE)


_SILENCE_PACKET: bytes | None = None


def opus_silence_packet() -> bytes:
    """One 20 ms stereo Opus packet of digital silence, from aiortc's own encoder settings."""
    global _SILENCE_PACKET
    if _SILENCE_PACKET is None:
        encoder = OpusEncoder()
        payloads: list[bytes] = []
        for i in range(3):  # past the encoder's start-up: its steady-state silence packet
            frame = AudioFrame(format="s16", layout="stereo", samples=FRAME_SAMPLES)
            frame.planes[0].update(bytes(FRAME_SAMPLES * 4))
            frame.pts, frame.sample_rate, frame.time_base = i * FRAME_SAMPLES, OUT_RATE, TIME_BASE
            payloads, _ = encoder.encode(frame)
        _SILENCE_PACKET = payloads[0]
    return _SILENCE_PACKET


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
        lead_frames: int = 1,
    ) -> None:
        super().__init__()
        self.lead_frames = lead_frames  # frames a reply started from idle runs ahead of the clock (module doc)
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
        # Idle frames as a pre-encoded Opus packet (see the module doc); off until the session
        # knows the sender encodes Opus with a GapTolerantOpusEncoder.
        self.opus_silence = False
        self._encode_next_silence = True  # the encoder has not seen silence since the last audio
        self._idle_frames = 0  # silent frames since the last audio (IDLE_TAIL_FRAMES, IDLE_PACKET_FRAMES)
        self.packets_skipped = 0  # idle frames not sent at all
        # The sender's Opus encoder (a GapTolerantOpusEncoder): when set, frames go out encoded here.
        self.encoder: OpusEncoder | None = None
        self._waker: asyncio.Future[None] | None = None  # set while an idle track sleeps: push ends it
        self._lead = False  # the frame clock runs one frame ahead (a reply started from idle)
        self.early_starts = 0  # replies sent before their tick (a push woke the idle track)

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
        if self._waker is not None and not self._waker.done():
            self._waker.set_result(None)
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

    async def _tick(self) -> None:
        """Wait for the next 20 ms frame time (the first frame is due at once)."""
        now = self._clock()
        if self._start is None:
            self._start = now
            self._pts = 0
        else:
            self._pts += FRAME_SAMPLES
            wait = self._start + self._pts / OUT_RATE - now
            if wait > 0:
                if await self._pause(wait):
                    self._start = self._clock() - self._pts / OUT_RATE  # this frame is due now
                    self.early_starts += 1
            elif wait < -MAX_LAG_S:
                self._start = now - self._pts / OUT_RATE

    async def _pause(self, wait: float) -> bool:
        """Sleep ``wait`` s; True when a push into the idle track ended the sleep early."""
        if self._buffered or self._earcon is not None:
            await self._sleep(wait)  # mid-reply (or a tone): plain pacing
            return False
        self._waker = waker = asyncio.get_running_loop().create_future()
        sleeper = asyncio.ensure_future(self._sleep(wait))
        try:
            done, _ = await asyncio.wait((sleeper, waker), return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            self._waker = None
        return sleeper not in done

    def _keep_lead(self, mono: Int16Array | None) -> None:
        """Run the frame clock ``lead_frames`` ahead from a reply's first frame after idle to its end."""
        if mono is not None and not self._lead:
            self._lead = True
            if self._start is not None:
                self._start -= self.lead_frames * FRAME_S  # the next frames are due at once
        elif mono is None and self._lead and not self._buffered and not self._reply_open:
            self._lead = False
            if self._start is not None:
                self._start += self.lead_frames * FRAME_S  # given back in the silence after the reply

    async def recv(self) -> AudioFrame | Packet[Any]:
        while True:
            if self.readyState != "live":
                raise MediaStreamError
            await self._tick()
            mono = self.next_frame()
            self._keep_lead(mono)
            self.frames_out += 1
            if mono is not None or not self.opus_silence or self._encode_next_silence:
                break
            self._idle_frames += 1
            beyond_tail = self._idle_frames - IDLE_TAIL_FRAMES
            if beyond_tail <= 0 or beyond_tail % IDLE_PACKET_FRAMES == 0:
                packet = Packet(opus_silence_packet())
                packet.pts = self._pts
                packet.time_base = TIME_BASE
                return packet
            self.packets_skipped += 1
        if mono is None:
            self._encode_next_silence = False
            data = self._silence
        else:
            self.audio_frames_out += 1
            self._encode_next_silence = True
            self._idle_frames = 0
            data = np.repeat(mono, 2).tobytes()
        frame = AudioFrame(format="s16", layout="stereo", samples=FRAME_SAMPLES)
        frame.planes[0].update(data)
        frame.pts = self._pts
        frame.sample_rate = OUT_RATE
        frame.time_base = TIME_BASE
        if self.encoder is None:
            return frame
        # One 20 ms frame in, one Opus packet out (aiortc's encoder resamples to 20 ms frames).
        payloads, timestamp = self.encoder.encode(frame)
        packet = Packet(payloads[0] if payloads else opus_silence_packet())
        packet.pts = timestamp
        packet.time_base = TIME_BASE
        return packet
