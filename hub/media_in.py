"""Inbound media: decoded WebRTC audio frames -> 16 kHz mono 20 ms frames for the VAD.

(The receiver's jitter-buffer prefetch is lowered by shared.rtc_tuning.tune_jitter_buffer, shared
with the device's receiver.)
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

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

