"""Inbound media: decoded WebRTC audio frames -> 16 kHz mono 20 ms frames for the VAD, and aiortc's
audio decoding moved onto the event loop (:func:`decode_audio_inline`).

(The receiver's jitter-buffer prefetch is lowered by shared.rtc_tuning.tune_jitter_buffer, shared
with the device's receiver.)
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator
from typing import Any

import av
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



class InlineAudioDecoder:
    """Stands in for an aiortc audio receiver's decoder queue and decodes each frame where it is put.

    aiortc 1.16 gives every receiver a decoder thread: the event loop puts each reassembled RTP
    frame on a ``queue.Queue``, the thread decodes it and hands the result back with
    ``asyncio.run_coroutine_threadsafe`` (a coroutine, a task, a future and a loop wake-up per
    20 ms frame). For Opus audio the decode itself is ~50-90 us of C, less than those two thread
    hops cost (bench/hub_capacity.py: aiortc's decoder threads took ~0.007 core per stream), so
    the hub decodes on the loop and puts the frames straight on the track's queue. The receiver's
    thread still starts; it waits in :meth:`get` until the receiver stops, then ends the track as
    aiortc does.
    """

    def __init__(self, receiver: Any, decode_error: threading.Event) -> None:
        self._receiver = receiver
        self._decode_error = decode_error
        self._stopped = threading.Event()
        self._decoder: Any = None
        self._codec_name = ""
        self.frames = 0  # decoded frames handed to the track (tests, benchmarks)

    def put(self, task: tuple[Any, Any] | None) -> None:
        """Called by the receiver on the event loop: (codec, encoded frame), or None when it stops."""
        if task is None:
            self._stopped.set()
            return
        from aiortc.codecs import get_decoder

        codec, encoded_frame = task
        if codec.name != self._codec_name:
            self._decoder = get_decoder(codec)
            self._codec_name = codec.name
        try:
            frames = self._decoder.decode(encoded_frame)
        except av.FFmpegError as exc:  # as aiortc: logged and flagged; the decoder keeps its state
            log.warning("audio frame not decoded (%s): %s", codec.name, str(exc).splitlines()[0][:200])
            self._decode_error.set()
            return
        out: asyncio.Queue[Any] = self._receiver._track._queue
        for frame in frames:
            out.put_nowait(frame)
            self.frames += 1

    def get(self) -> None:
        """The receiver's decoder thread: nothing to decode here, so it waits for the stop."""
        self._stopped.wait()


def decode_audio_inline(receiver: Any) -> InlineAudioDecoder | None:
    """Make an aiortc audio RTCRtpReceiver decode on the event loop (:class:`InlineAudioDecoder`).

    Like the jitter-buffer tuning, this must run after setRemoteDescription and before the
    receiver starts (the answer's setLocalDescription starts it and its decoder thread, which
    takes the queue it finds then). Returns None (and logs) if aiortc's internals changed,
    leaving its decoder thread in place.
    """
    prefix = "_RTCRtpReceiver__"  # name-mangled private attributes
    error = getattr(receiver, prefix + "decoder_error", None)
    started = getattr(receiver, prefix + "decoder_thread", "missing")
    if not isinstance(error, threading.Event) or started is not None or getattr(receiver, "_track", None) is None:
        log.warning("aiortc receiver internals differ (or it already started): audio decoded in aiortc's thread")
        return None
    inline = InlineAudioDecoder(receiver, error)
    setattr(receiver, prefix + "decoder_queue", inline)
    return inline
