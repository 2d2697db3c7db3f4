"""The real sound card: one PortAudio duplex stream (ALSA on the Pi) through ``sounddevice``.

One duplex stream, not an input and an output stream, so capture and playback share the card's
clock: the block returned by the callback is the echo canceller's reference, sample-aligned with
the mic block of the same period (the fixed card latency in between is inside the AEC filter).
``sounddevice`` is imported only when this backend starts (it needs ``libportaudio2``).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

import numpy as np

from device_agent.audio_io.base import BACKEND_RATE, BLOCK_MS, AudioBackend, DuplexCallback

log = logging.getLogger(__name__)


def _device(spec: str) -> int | str | None:
    spec = spec.strip()
    if not spec:
        return None
    return int(spec) if spec.isdigit() else spec


class SoundDeviceBackend(AudioBackend):
    """Mic and speaker of a PortAudio device, mono int16 at 48 kHz, 10 ms blocks."""

    def __init__(
        self,
        input_device: str = "",
        output_device: str = "",
        *,
        rate: int = BACKEND_RATE,
        block_ms: int = BLOCK_MS,
        latency: str | float = "low",
    ) -> None:
        self.rate = rate
        self.block_ms = block_ms
        self.input_device = input_device
        self.output_device = output_device
        self.latency = latency
        self._stream: Any = None
        self._callback: DuplexCallback | None = None
        self._out_channels = 1
        self.xruns = 0
        self.callback_errors = 0
        self._error_logged = threading.Event()

    def _audio_callback(self, indata: Any, outdata: Any, frames: int, time: Any, status: Any) -> None:
        """Runs in PortAudio's thread: mic in, speaker out, nothing that can block for long."""
        if status:
            self.xruns += 1
        assert self._callback is not None
        try:
            mic = np.array(indata[:, 0], dtype=np.int16)
            speaker = self._callback(mic)
            outdata[:] = np.asarray(speaker, dtype=np.int16).reshape(-1, 1)
        except Exception:
            self.callback_errors += 1
            outdata.fill(0)
            if not self._error_logged.is_set():
                self._error_logged.set()
                log.exception("audio callback failed (further errors are only counted)")

    def _open(self, out_channels: int) -> Any:
        import sounddevice as sd

        self._out_channels = out_channels
        return sd.Stream(
            samplerate=self.rate,
            blocksize=self.block_samples,
            device=(_device(self.input_device), _device(self.output_device)),
            channels=(1, out_channels),
            dtype="int16",
            latency=self.latency,
            callback=self._audio_callback,
        )

    def _start_blocking(self) -> None:
        import sounddevice as sd

        try:
            stream = self._open(1)
        except sd.PortAudioError as exc:
            # Some ALSA hw devices only play stereo: the callback broadcasts mono to both channels.
            log.info("mono output refused (%s); opening the speaker in stereo", exc)
            stream = self._open(2)
        stream.start()
        self._stream = stream
        in_lat, out_lat = stream.latency
        log.info(
            "sound card open: in=%s out=%s, %d Hz, %d-sample blocks, latency in %.1f ms / out %.1f ms",
            self.input_device or "default",
            self.output_device or "default",
            self.rate,
            self.block_samples,
            1e3 * in_lat,
            1e3 * out_lat,
        )

    async def start(self, callback: DuplexCallback) -> None:
        if self._stream is not None:
            raise RuntimeError("audio backend already started")
        self._callback = callback
        await asyncio.to_thread(self._start_blocking)

    async def stop(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            await asyncio.to_thread(self._close_blocking, stream)

    @staticmethod
    def _close_blocking(stream: Any) -> None:
        try:
            stream.stop()
        finally:
            stream.close()

    @property
    def device_latency_s(self) -> float:
        """Input plus output latency PortAudio reports (the echo's device delay), 0 before start."""
        if self._stream is None:
            return 0.0
        in_lat, out_lat = self._stream.latency
        return float(in_lat) + float(out_lat)
