"""WAV in, WAV out: a WAV file played as the microphone in real time, the speaker recorded to a WAV.

For headless machines (CI, the demo, a Pi without a sound card): the agent runs exactly as on
real hardware, only the two ends of the audio path are files.
"""

from __future__ import annotations

import logging
import wave
from pathlib import Path

import numpy as np

from device_agent.audio_io.base import BACKEND_RATE, BLOCK_MS, PacedAudioBackend
from shared.audio import Int16Array, read_wav, resample

log = logging.getLogger(__name__)


class FileAudioBackend(PacedAudioBackend):
    """Mic from ``mic_file`` (then silence, or looped), speaker into ``speaker_file`` (both optional)."""

    def __init__(
        self,
        mic_file: str | Path | None,
        speaker_file: str | Path | None,
        *,
        rate: int = BACKEND_RATE,
        block_ms: int = BLOCK_MS,
        loop: bool = False,
        start_delay_s: float = 0.0,
    ) -> None:
        super().__init__(rate=rate, block_ms=block_ms)
        self.mic_file = Path(mic_file) if mic_file else None
        self.speaker_file = Path(speaker_file) if speaker_file else None
        self.loop = loop
        self._mic: Int16Array = np.zeros(0, dtype=np.int16)
        if self.mic_file is not None:
            data, src_rate = read_wav(self.mic_file)
            self._mic = resample(data, src_rate, rate)
            looped = " in a loop" if loop else ""
            log.info("mic: playing %s (%.1f s)%s", self.mic_file, self._mic.size / rate, looped)
        self._lead = int(start_delay_s * rate)
        self._pos = 0
        self._writer: wave.Wave_write | None = None
        self.samples_written = 0

    @property
    def mic_done(self) -> bool:
        """True once the whole mic file was played (never with ``loop``)."""
        return not self.loop and self._pos >= self._lead + self._mic.size

    def _read_mic(self, n: int, t: float) -> Int16Array:
        out = np.zeros(n, dtype=np.int16)
        total = self._lead + self._mic.size
        filled = 0
        while filled < n:
            if self._pos >= total:
                if not (self.loop and self._mic.size):
                    break
                self._pos = self._lead
            if self._pos < self._lead:
                k = min(n - filled, self._lead - self._pos)
            else:
                start = self._pos - self._lead
                k = min(n - filled, self._mic.size - start)
                out[filled : filled + k] = self._mic[start : start + k]
            filled += k
            self._pos += k
        if filled < n:
            self._pos += n - filled
        return out

    def _write_speaker(self, block: Int16Array, t: float) -> None:
        if self.speaker_file is None:
            return
        if self._writer is None:
            self.speaker_file.parent.mkdir(parents=True, exist_ok=True)
            w = wave.open(str(self.speaker_file), "wb")  # noqa: SIM115 - open for the stream's lifetime
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(self.rate)
            self._writer = w
            log.info("speaker: recording to %s", self.speaker_file)
        self._writer.writeframes(np.asarray(block, dtype="<i2").tobytes())
        self.samples_written += block.size

    def _close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
