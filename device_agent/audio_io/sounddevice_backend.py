"""The real sound card: one PortAudio duplex stream (ALSA on the Pi) through ``sounddevice``.

One duplex stream, not an input and an output stream, so capture and playback share the card's
clock: the block returned by the callback is the echo canceller's reference, sample-aligned with
the mic block of the same period (the fixed card latency in between is inside the AEC filter).
``sounddevice`` is imported only when this backend starts (it needs ``libportaudio2``).

Devices are chosen by index or by part of their name (``DEVICE_SOUND_INPUT``/``OUTPUT``, see
``naila device --list-devices``), or ``auto`` (the default, :mod:`.device_choice`): a USB
microphone, and a speaker that goes with it. A card that cannot run at 48 kHz (a USB mic at 16 or 44.1 kHz on
a ``hw:`` device) is opened at its own default rate and :class:`RateAdapter` resamples both ways,
so the pipeline and WebRTC always see 48 kHz. A card that refuses mono (a stereo-only USB mic or
``hw:`` speaker) is opened with 2 or all its channels (:mod:`.card_channels`): the mic averaged to
mono, the reply on every channel.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from typing import Any

import numpy as np

from device_agent.audio_io.base import BACKEND_RATE, BLOCK_MS, AudioBackend, DuplexCallback
from device_agent.audio_io.card_channels import channel_choices, downmix, open_with_channels
from device_agent.audio_io.device_choice import AUTO, SoundDevice, choose, from_portaudio
from shared.audio import Int16Array, StreamResampler
from shared.config import ConfigError

log = logging.getLogger(__name__)


class RateAdapter:
    """The card's duplex callback at ``card_rate`` around the pipeline's callback at ``rate``.

    Mic blocks are resampled up (or down) and cut into the pipeline's blocks; its speaker blocks
    are resampled back and queued, so each card block gets exactly as many samples as it gave
    (zeros while the resampler fills at start). The added delay is constant: inside the AEC filter.
    """

    def __init__(self, callback: DuplexCallback, card_rate: int, rate: int = BACKEND_RATE,
                 block_ms: int = BLOCK_MS) -> None:
        self.callback = callback
        self.card_rate, self.rate = card_rate, rate
        self.block = rate * block_ms // 1000
        self._up = StreamResampler(card_rate, rate)
        self._down = StreamResampler(rate, card_rate)
        self._mic: Int16Array = np.zeros(0, dtype=np.int16)
        self._speaker: Int16Array = np.zeros(0, dtype=np.int16)

    def __call__(self, mic: Int16Array) -> Int16Array:
        self._mic = np.concatenate([self._mic, self._up.process(mic)])
        played = []
        while self._mic.size >= self.block:
            block, self._mic = self._mic[: self.block], self._mic[self.block :]
            played.append(self._down.process(self.callback(block)))
        if played:
            self._speaker = np.concatenate([self._speaker, *played])
        out = np.zeros(mic.size, dtype=np.int16)
        n = min(mic.size, self._speaker.size)
        out[:n], self._speaker = self._speaker[:n], self._speaker[n:]
        return out


def card_rate(sd: Any, input_device: int | str | None, output_device: int | str | None, rate: int) -> int:
    """``rate`` when both devices take it (with any channel count they open with), else the input
    device's default rate.

    Raises ConfigError (one line) for a device name that matches no device or several.
    """
    try:
        _check(sd.check_input_settings, input_device, channel_choices(sd, input_device, "input"), rate, sd)
        _check(sd.check_output_settings, output_device, channel_choices(sd, output_device, "output"), rate, sd)
        return rate
    except ValueError as exc:  # sounddevice: no device, or several, match the name
        raise ConfigError(f"sound device: {exc} (naila device --list-devices lists them)") from None
    except sd.PortAudioError as exc:
        native = round(float(sd.query_devices(input_device, "input")["default_samplerate"]))
        log.info("sound card refuses %d Hz (%s): opening it at %d Hz and resampling", rate, exc, native)
        return native


def _check(check: Any, device: int | str | None, channels: list[int], rate: int, sd: Any) -> None:
    """``check(device, ...)`` passes for one of ``channels`` at ``rate``, else its first refusal is raised.

    A stereo-only mic refuses mono at every rate: that must not read as a refused rate.
    """
    first: BaseException | None = None
    for n in channels:
        try:
            check(device, channels=n, dtype="int16", samplerate=rate)
            return
        except sd.PortAudioError as exc:
            first = first or exc
    assert first is not None
    raise first


def _device(spec: str) -> int | str | None:
    spec = spec.strip()
    if not spec:
        return None
    return int(spec) if spec.isdigit() else spec


def _is_auto(spec: str) -> bool:
    return spec.strip().lower() == AUTO


def resolve_devices(
    sd: Any, input_spec: str, output_spec: str, alsa_card: str = ""
) -> tuple[int | str | None, int | str | None]:
    """The (input, output) PortAudio devices: explicit specs as they are, ``auto`` ones chosen.

    Raises ConfigError (one line) for an explicit microphone name that matches no device or several.
    """
    inp, out = _device(input_spec), _device(output_spec)
    if not (_is_auto(input_spec) or _is_auto(output_spec)):
        return inp, out
    devices = from_portaudio(sd.query_devices())
    mic: SoundDevice | None = None
    if not _is_auto(input_spec):  # only the speaker is auto: it goes with the configured microphone
        if inp is None:
            return None, None
        try:
            info = sd.query_devices(inp, "input")
        except ValueError as exc:
            raise ConfigError(f"sound device: {exc} (naila device --list-devices lists them)") from None
        mic = from_portaudio([info])[0]
    choice = choose(devices, mic, alsa_card)
    log.info("sound devices (auto): %s", choice.describe(devices))
    return (
        choice.input if _is_auto(input_spec) else inp,
        choice.output if _is_auto(output_spec) else out,
    )


class SoundDeviceBackend(AudioBackend):
    """Mic and speaker of a PortAudio device, mono int16 at 48 kHz, 10 ms blocks (to the pipeline)."""

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
        self._devices: tuple[int | str | None, int | str | None] = (None, None)  # resolved at start
        self._callback: DuplexCallback | None = None
        self.channels = (1, 1)  # (in, out) the card is open with; more than 1 when it refuses mono
        self.card_rate = rate  # what the sound card runs at; differs from ``rate`` when it refuses 48 kHz
        self.xruns = 0
        self.callback_errors = 0
        self._error_logged = threading.Event()

    def _audio_callback(self, indata: Any, outdata: Any, frames: int, time: Any, status: Any) -> None:
        """Runs in PortAudio's thread: mic in, speaker out, nothing that can block for long."""
        if status:
            self.xruns += 1
        assert self._callback is not None
        try:
            speaker = self._callback(downmix(indata))
            outdata[:] = np.asarray(speaker, dtype=np.int16).reshape(-1, 1)  # onto every channel
        except Exception:
            self.callback_errors += 1
            outdata.fill(0)
            if not self._error_logged.is_set():
                self._error_logged.set()
                log.exception("audio callback failed (further errors are only counted)")

    def _open(self, in_channels: int, out_channels: int) -> Any:
        import sounddevice as sd

        stream = sd.Stream(
            samplerate=self.card_rate,
            blocksize=self.card_rate * self.block_ms // 1000,
            device=self._devices,
            channels=(in_channels, out_channels),
            dtype="int16",
            latency=self.latency,
            callback=self._audio_callback,
        )
        self.channels = (in_channels, out_channels)
        return stream

    def _start_blocking(self) -> None:
        import sounddevice as sd

        self._devices = resolve_devices(sd, self.input_device, self.output_device, os.environ.get("ALSA_CARD", ""))
        self.card_rate = card_rate(sd, *self._devices, self.rate)
        if self.card_rate != self.rate and self._callback is not None:
            self._callback = RateAdapter(self._callback, self.card_rate, self.rate, self.block_ms)
        # Mono both ways if the card takes it; else a stereo-only USB mic or hw: speaker gets 2 (or all).
        stream = open_with_channels(
            self._open,
            channel_choices(sd, self._devices[0], "input"),
            channel_choices(sd, self._devices[1], "output"),
            sd.PortAudioError,
        )
        stream.start()
        self._stream = stream
        in_lat, out_lat = stream.latency
        log.info(
            "sound card open: in=%s out=%s, %d Hz, %d/%d channels, %d-sample blocks, latency in %.1f ms / out %.1f ms",
            "default" if self._devices[0] is None else self._devices[0],
            "default" if self._devices[1] is None else self._devices[1],
            self.card_rate,
            *self.channels,
            self.card_rate * self.block_ms // 1000,
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
