"""Audio backends: echo path maths, memory/file backends on the real clock, sounddevice via a fake module."""

from __future__ import annotations

import asyncio
import sys
import time
import types
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

from device_agent.audio_io import (
    EchoPath,
    FileAudioBackend,
    MemoryAudioBackend,
    PartitionedConvolver,
    SoundDeviceBackend,
    make_backend,
    synthetic_room_ir,
)
from shared.audio import Int16Array, read_wav, rms_dbfs, write_wav
from shared.config import ConfigError, DeviceSettings, load

pytestmark = pytest.mark.unit


def tone(freq: float, seconds: float, rate: int = 48_000, amp: float = 8000) -> Int16Array:
    t = np.arange(int(seconds * rate)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def test_partitioned_convolution_equals_direct_convolution() -> None:
    rng = np.random.default_rng(0)
    ir = rng.standard_normal(1234)
    x = rng.standard_normal(480 * 20)
    conv = PartitionedConvolver(ir, 480)
    got = np.concatenate([conv.process(x[i : i + 480]) for i in range(0, x.size, 480)])
    assert np.allclose(got, np.convolve(x, ir)[: x.size])


def test_synthetic_room_ir_is_unit_energy_and_decays() -> None:
    ir = synthetic_room_ir(16_000, 150)
    assert ir.size == 2400
    assert np.sum(ir**2) == pytest.approx(1.0)
    head, tail = np.sum(ir[:240] ** 2), np.sum(ir[-240:] ** 2)
    assert 10 * np.log10(head / tail) > 40


def test_echo_path_delays_and_scales_the_speaker() -> None:
    path = EchoPath([1.0], delay_ms=30, gain=0.5)
    path.bind(48_000, 480)
    impulse = np.zeros(480)
    impulse[10] = 1000
    mic = []
    for k in range(10):
        mic.append(path.take(480))
        path.feed(impulse if k == 0 else np.zeros(480))
    echo = np.concatenate(mic)
    assert int(np.argmax(echo)) == 10 + 1440  # 30 ms at 48 kHz
    assert echo.max() == pytest.approx(500)


def test_echo_path_refuses_a_delay_shorter_than_a_block() -> None:
    with pytest.raises(ValueError):
        EchoPath(delay_ms=5).bind(48_000, 480)


async def run_for(backend: Any, seconds: float, callback: Any) -> None:
    await backend.start(callback)
    await asyncio.sleep(seconds)
    await backend.stop()


async def test_memory_backend_plays_queued_speech_into_the_mic_in_real_time() -> None:
    backend = MemoryAudioBackend()
    mic_seen: list[Int16Array] = []
    speech = tone(440, 0.2, 16_000)
    assert backend.play_into_mic(speech, 16_000) == 0.0
    assert backend.mic_pending_s == pytest.approx(0.2)

    def cb(mic: Int16Array) -> Int16Array:
        mic_seen.append(mic)
        return np.zeros_like(mic)

    t0 = time.monotonic()
    await run_for(backend, 0.5, cb)
    elapsed = time.monotonic() - t0
    got = np.concatenate(mic_seen)
    # Real-time pacing: ~0.5 s of blocks, not more (no free-running loop).
    assert abs(got.size / 48_000 - elapsed) < 0.1
    assert rms_dbfs(got[: int(0.19 * 48_000)]) > -20  # the tone, resampled to 48 kHz
    assert rms_dbfs(got[int(0.21 * 48_000) :]) < -100  # then silence
    assert backend.mic_pending_s == 0


async def test_memory_backend_records_speaker_with_monotonic_times_and_finds_activity() -> None:
    backend = MemoryAudioBackend()
    out = tone(1000, 0.2)
    pos = 0
    calls = 0

    def cb(mic: Int16Array) -> Int16Array:
        nonlocal pos, calls
        calls += 1
        if calls <= 10:  # 100 ms of silence, then the tone
            return np.zeros_like(mic)
        block = out[pos : pos + mic.size]
        pos += block.size
        return np.concatenate([block, np.zeros(mic.size - block.size, np.int16)])

    t0 = time.monotonic()
    await run_for(backend, 0.6, cb)
    frames = backend.speaker_frames
    assert all(b.t >= t0 - 0.01 for b in frames)
    assert all(frames[i].t < frames[i + 1].t for i in range(len(frames) - 1))
    start = backend.speaker_started_at()
    stop = backend.speaker_stopped_at()
    assert start is not None and stop is not None
    assert start - frames[0].t == pytest.approx(0.1, abs=0.011)
    assert stop - start == pytest.approx(0.2, abs=0.011)
    assert backend.speaker_segments() == [(start, stop)]
    audio = backend.speaker_audio(since=start, until=stop)
    assert audio.size == pytest.approx(0.2 * 48_000, abs=480)


async def test_memory_backend_echo_reaches_the_mic() -> None:
    backend = MemoryAudioBackend(echo_path=EchoPath(delay_ms=20, gain=0.5))
    out = (np.random.default_rng(0).standard_normal(48_000) * 3000).astype(np.int16)
    pos = 0

    def cb(mic: Int16Array) -> Int16Array:
        nonlocal pos
        block = out[pos : pos + mic.size]
        pos += mic.size
        return np.concatenate([block, np.zeros(mic.size - block.size, np.int16)])

    await run_for(backend, 0.5, cb)
    mic = backend.mic_audio()
    first = int(np.argmax(np.abs(mic) > 100))
    assert first == pytest.approx(960, abs=5)  # 20 ms delay
    # White noise through a unit-energy room x 0.5: 6 dB below the speaker.
    level = rms_dbfs(mic[4800:]) - rms_dbfs(out[:4800])
    assert level == pytest.approx(-6.0, abs=0.5)


def test_memory_backend_can_be_driven_without_a_clock() -> None:
    """Benchmarks step the backend synchronously (faster than real time)."""
    backend = MemoryAudioBackend()
    backend.play_into_mic(np.full(960, 1000, np.int16), 48_000)
    seen: list[Int16Array] = []

    def cb(mic: Int16Array) -> Int16Array:
        seen.append(mic)
        return mic

    backend.run_blocks(cb, 3, t0=100.0)
    a, b, c = seen
    assert a.min() == b.min() == 1000 and c.max() == 0
    assert [f.t for f in backend.speaker_frames] == pytest.approx([100.0, 100.01, 100.02])


async def test_file_backend_plays_a_wav_and_records_the_speaker(tmp_path: Path) -> None:
    mic_file, spk_file = tmp_path / "mic.wav", tmp_path / "out" / "speaker.wav"
    write_wav(mic_file, tone(300, 0.1, 16_000), 16_000)
    backend = FileAudioBackend(mic_file, spk_file)
    got: list[Int16Array] = []

    def cb(mic: Int16Array) -> Int16Array:
        got.append(mic)
        return np.full_like(mic, 123)

    await run_for(backend, 0.3, cb)
    assert backend.mic_done
    mic = np.concatenate(got)
    assert rms_dbfs(mic[: int(0.09 * 48_000)]) > -20 and not mic[int(0.11 * 48_000) :].any()
    data, rate = read_wav(spk_file)
    assert rate == 48_000 and data.size == mic.size and set(np.unique(data)) == {123}


def test_file_backend_loops_when_asked(tmp_path: Path) -> None:
    f = tmp_path / "mic.wav"
    write_wav(f, np.arange(1, 481, dtype=np.int16), 48_000)
    backend = FileAudioBackend(f, None, loop=True)
    a, b = backend._read_mic(480, 0), backend._read_mic(480, 0)
    assert np.array_equal(a, b) and not backend.mic_done


class FakeStream:
    instances: ClassVar[list[FakeStream]] = []

    def __init__(self, **kw: Any) -> None:
        self.kw = kw
        self.started = self.closed = False
        self.latency = (0.01, 0.02)
        FakeStream.instances.append(self)

    def start(self) -> None:
        self.started = True

    def stop(self) -> None:
        self.started = False

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def fake_sounddevice(monkeypatch: pytest.MonkeyPatch) -> type[FakeStream]:
    mod = types.ModuleType("sounddevice")
    mod.Stream = FakeStream  # type: ignore[attr-defined]
    mod.PortAudioError = RuntimeError  # type: ignore[attr-defined]
    # Every device takes 48 kHz here (tests/device_agent/test_webcam_devices.py covers one that does not).
    mod.check_input_settings = lambda *a, **kw: None  # type: ignore[attr-defined]
    mod.check_output_settings = lambda *a, **kw: None  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "sounddevice", mod)
    FakeStream.instances.clear()
    return FakeStream


async def test_sounddevice_backend_is_one_duplex_stream(fake_sounddevice: type[FakeStream]) -> None:
    backend = SoundDeviceBackend("1", "USB Audio")

    def cb(mic: Int16Array) -> Int16Array:
        return (mic * 2).astype(np.int16)

    await backend.start(cb)
    stream = fake_sounddevice.instances[0]
    assert stream.started
    kw = stream.kw
    assert kw["samplerate"] == 48_000 and kw["blocksize"] == 480 and kw["dtype"] == "int16"
    assert kw["device"] == (1, "USB Audio") and kw["channels"] == (1, 1)
    indata = np.arange(480, dtype=np.int16).reshape(-1, 1)
    outdata = np.zeros((480, 1), np.int16)
    kw["callback"](indata, outdata, 480, None, None)
    assert np.array_equal(outdata[:, 0], np.arange(480) * 2)
    assert backend.device_latency_s == pytest.approx(0.03)
    await backend.stop()
    assert stream.closed


async def test_sounddevice_callback_errors_play_silence(fake_sounddevice: type[FakeStream]) -> None:
    backend = SoundDeviceBackend()

    def cb(mic: Int16Array) -> Int16Array:
        raise RuntimeError("boom")

    await backend.start(cb)
    outdata = np.ones((480, 1), np.int16)
    fake_sounddevice.instances[0].kw["callback"](np.zeros((480, 1), np.int16), outdata, 480, None, "underflow")
    assert not outdata.any() and backend.callback_errors == 1 and backend.xruns == 1
    await backend.stop()


def test_make_backend_follows_the_settings(tmp_path: Path) -> None:
    assert isinstance(make_backend(load(DeviceSettings)), SoundDeviceBackend)
    f = tmp_path / "m.wav"
    write_wav(f, np.zeros(10, np.int16), 16_000)
    b = make_backend(load(DeviceSettings, device_audio_backend="file", device_mic_file=str(f)))
    assert isinstance(b, FileAudioBackend)
    with pytest.raises(ConfigError):
        make_backend(load(DeviceSettings, device_audio_backend="file"))
