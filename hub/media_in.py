"""Inbound media: decoded WebRTC audio frames -> 16 kHz mono 20 ms frames for the VAD.

Also the one place where the hub reaches into aiortc's receiver to lower its jitter-buffer
prefetch (see :func:`tune_jitter_buffer`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from av import AudioFrame

from shared.audio import HUB_RATE, Framer, Int16Array, StreamResampler, frame_to_mono, samples_per_frame

log = logging.getLogger("naila.hub.media")

FRAME_SAMPLES_16K = samples_per_frame(HUB_RATE)  # 320
# soxr quality for 48k -> 16k. A streaming soxr holds back output to fill its filter: measured
# with 20 ms chunks, HQ holds 21 ms, MQ 15 ms, LQ 6 ms, and that is hub-added latency on every
# frame (the END of each turn included). LQ is flat to 6 kHz (-0.3 dB), -13 dB at 7 kHz and
# -87 dB above 8 kHz (no aliasing): plenty for webrtcvad (< 4 kHz) and Whisper.
UPLINK_RESAMPLER_QUALITY = "LQ"


class AudioIngest:
    """Stateful converter of one device's stream: any rate/layout in, 320-sample frames out."""

    def __init__(self, out_rate: int = HUB_RATE) -> None:
        self.out_rate = out_rate
        self._resampler: StreamResampler | None = None
        self._framer = Framer(samples_per_frame(out_rate))

    def push(self, frame: AudioFrame) -> Iterator[Int16Array]:
        mono = frame_to_mono(frame)
        rate = int(frame.sample_rate)
        if self._resampler is None or self._resampler.from_rate != rate:
            self._resampler = StreamResampler(rate, self.out_rate, quality=UPLINK_RESAMPLER_QUALITY)
        yield from self._framer.push(self._resampler.process(mono))


def tune_jitter_buffer(receiver: Any, prefetch: int) -> bool:
    """Give an aiortc audio RTCRtpReceiver a jitter buffer with ``prefetch`` packets.

    aiortc 1.16 hard-codes ``JitterBuffer(capacity=16, prefetch=4)`` for audio in
    RTCRtpReceiver.__init__ and exposes no setting. Prefetch 4 holds ~4 Opus packets before
    releasing the first, ~80 ms of receive latency measured here (browser->hub 91 ms vs 42 ms
    with prefetch 1). On a LAN reordering is rare, so the hub swaps in a buffer with
    HUB_JITTER_PREFETCH packets. This must run before any RTP arrives (right after
    setRemoteDescription, before the answer goes out), while the buffer is still empty.
    Returns False (and logs) if aiortc's internals changed, leaving its default in place.
    """
    try:
        from aiortc.jitterbuffer import JitterBuffer
    except ImportError:  # pragma: no cover - aiortc layout changed
        log.warning("aiortc.jitterbuffer not found; jitter prefetch left at aiortc's default")
        return False
    attr = "_RTCRtpReceiver__jitter_buffer"  # name-mangled private attribute
    current = getattr(receiver, attr, None)
    if not isinstance(current, JitterBuffer):
        log.warning("aiortc receiver has no %s; jitter prefetch left at aiortc's default", attr)
        return False
    setattr(receiver, attr, JitterBuffer(capacity=current.capacity, prefetch=prefetch))
    return True
