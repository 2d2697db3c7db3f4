"""Stereo-only microphones and speakers (issue 22): the card opens with the channels it takes, the
microphone reaches the pipeline (and its echo canceller) as the average of its channels, and the
mono reply plays on every speaker channel.

PortAudio is faked at the ``sounddevice`` module; test_card_channels_alsa.py opens a real ALSA device
with only 2 channels through the real PortAudio.
"""

from __future__ import annotations

import sys
import types
from typing import Any

import numpy as np
import pytest

from device_agent.audio_io.card_channels import channel_choices, downmix, open_with_channels
from device_agent.audio_io.sounddevice_backend import SoundDeviceBackend, card_rate
from shared.audio import Int16Array

pytestmark = pytest.mark.unit


class PortAudioError(Exception):
    pass


class FakeCard:
    """PortAudio over one card: its maximum channels each way, and the channel counts it refuses."""

    def __init__(
        self, max_in: int, max_out: int, refuse_in: set[int] = frozenset(), refuse_out: set[int] = frozenset()
    ):
        self.max_in, self.max_out = max_in, max_out
        self.refuse_in, self.refuse_out = set(refuse_in), set(refuse_out)
        self.opened: list[dict[str, Any]] = []

    def module(self) -> types.ModuleType:
        card = self

        class Stream:
            latency = (0.01, 0.02)

            def __init__(self, **kw: Any) -> None:
                n_in, n_out = kw["channels"]
                if n_in in card.refuse_in or n_out in card.refuse_out:
                    raise PortAudioError(f"Invalid number of channels [PaErrorCode -9998] ({n_in}/{n_out})")
                card.opened.append(kw)

            def start(self) -> None: ...
            def stop(self) -> None: ...
            def close(self) -> None: ...

        def query_devices(device: Any = None, kind: str | None = None) -> dict[str, Any]:
            return {
                "max_input_channels": card.max_in,
                "max_output_channels": card.max_out,
                "default_samplerate": 48000.0,
            }

        def check_input_settings(device: Any, *, channels: int, **kw: Any) -> None:
            if channels in card.refuse_in:
                raise PortAudioError("Invalid number of channels [PaErrorCode -9998]")

        def check_output_settings(device: Any, *, channels: int, **kw: Any) -> None:
            if channels in card.refuse_out:
                raise PortAudioError("Invalid number of channels [PaErrorCode -9998]")

        mod = types.ModuleType("sounddevice")
        mod.Stream = Stream  # type: ignore[attr-defined]
        mod.PortAudioError = PortAudioError  # type: ignore[attr-defined]
        mod.query_devices = query_devices  # type: ignore[attr-defined]
        mod.check_input_settings = check_input_settings  # type: ignore[attr-defined]
        mod.check_output_settings = check_output_settings  # type: ignore[attr-defined]
        return mod


async def open_backend(card: FakeCard, monkeypatch: pytest.MonkeyPatch) -> tuple[SoundDeviceBackend, list[Int16Array]]:
    monkeypatch.setitem(sys.modules, "sounddevice", card.module())
    seen: list[Int16Array] = []

    def pipeline(mic: Int16Array) -> Int16Array:
        seen.append(mic)
        return np.full(mic.size, 1234, np.int16)  # the reply

    backend = SoundDeviceBackend("USB mic", "USB speaker")
    await backend.start(pipeline)
    return backend, seen


def run_block(card: FakeCard, indata: Any) -> Any:
    kw = card.opened[-1]
    outdata = np.zeros((indata.shape[0], kw["channels"][1]), np.int16)
    kw["callback"](indata, outdata, indata.shape[0], None, None)
    return outdata


async def test_a_stereo_only_microphone_reaches_the_pipeline_as_the_average_of_its_channels(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    card = FakeCard(max_in=2, max_out=8, refuse_in={1})
    backend, seen = await open_backend(card, monkeypatch)
    assert backend.channels == (2, 1) and card.opened[-1]["channels"] == (2, 1)
    stereo = np.stack([np.full(480, 1000, np.int16), np.full(480, 3001, np.int16)], axis=1)
    played = run_block(card, stereo)
    assert seen[-1].shape == (480,) and seen[-1].dtype == np.int16 and set(seen[-1].tolist()) == {2000}
    assert set(played[:, 0].tolist()) == {1234}
    await backend.stop()


async def test_a_speaker_that_only_plays_stereo_gets_the_reply_on_both_channels(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    card = FakeCard(max_in=1, max_out=2, refuse_out={1})
    backend, seen = await open_backend(card, monkeypatch)
    assert backend.channels == (1, 2)
    played = run_block(card, np.full((480, 1), 7, np.int16))
    assert set(seen[-1].tolist()) == {7}
    assert played.shape == (480, 2) and set(played[:, 0].tolist()) == set(played[:, 1].tolist()) == {1234}
    await backend.stop()


async def test_a_card_refusing_mono_and_stereo_opens_with_all_its_channels(monkeypatch: pytest.MonkeyPatch) -> None:
    card = FakeCard(max_in=4, max_out=8, refuse_in={1, 2})  # a 4-capsule array that only streams all four
    backend, seen = await open_backend(card, monkeypatch)
    assert backend.channels == (4, 1)
    run_block(card, np.array([[100, 200, 300, 400]] * 480, np.int16))
    assert set(seen[-1].tolist()) == {250}
    await backend.stop()


async def test_a_card_taking_mono_is_opened_in_mono(monkeypatch: pytest.MonkeyPatch) -> None:
    """A sound server or ALSA plugin (``default``: 128 channels) and a mono USB mic stay mono."""
    card = FakeCard(max_in=128, max_out=128)
    backend, _ = await open_backend(card, monkeypatch)
    assert backend.channels == (1, 1) and len(card.opened) == 1
    await backend.stop()


def test_a_stereo_device_is_tried_in_stereo_first_others_in_mono_first() -> None:
    """PortAudio's ALSA host API opens mono on a 2-channel-only device (it pads the host channels), so
    mono would silently keep the left channel only: a device whose maximum is 2 is opened in stereo."""
    for most, order in [(1, [1]), (2, [2, 1]), (4, [1, 2, 4]), (128, [1, 2, 128])]:
        assert channel_choices(FakeCard(most, most).module(), "x", "input") == order
    broken = types.SimpleNamespace(query_devices=lambda *a: {})  # a device PortAudio cannot describe
    assert channel_choices(broken, "x", "output") == [1, 2]


def test_when_every_channel_count_is_refused_the_first_refusal_is_raised() -> None:
    tried: list[tuple[int, int]] = []

    def refuse(n_in: int, n_out: int) -> None:
        tried.append((n_in, n_out))
        raise PortAudioError(f"refused {n_in}/{n_out}")

    with pytest.raises(PortAudioError, match="refused 2/1"):
        open_with_channels(refuse, [2, 1], [1, 2], PortAudioError)
    assert tried == [(2, 1), (2, 2), (1, 1), (1, 2)]


def test_a_refused_mono_is_not_read_as_a_refused_sample_rate() -> None:
    card = FakeCard(max_in=2, max_out=2, refuse_in={1}, refuse_out={1})
    assert card_rate(card.module(), "USB mic", "USB speaker", 48_000) == 48_000


def test_downmix_averages_without_overflow() -> None:
    loud = np.array([[32767, 32767], [-32768, -32768], [32767, -32768], [3, 4]], np.int16)
    assert downmix(loud).tolist() == [32767, -32768, -1, 3]
    assert downmix(np.array([[5], [-6]], np.int16)).tolist() == [5, -6]
