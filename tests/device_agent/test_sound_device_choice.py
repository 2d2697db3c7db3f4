"""DEVICE_SOUND_INPUT/OUTPUT=auto: a USB microphone and a speaker that goes with it (issue 22).

The boundary is ``sounddevice.query_devices``: device lists as PortAudio's ALSA host API names them
on a Pi ("<card>: <pcm> (hw:<card>,<device>)" plus ALSA's plugins), faked here.
"""

from __future__ import annotations

import logging
import sys
import types
from typing import Any

import numpy as np
import pytest

from device_agent.audio_io.device_choice import choose, from_portaudio
from device_agent.audio_io.sounddevice_backend import SoundDeviceBackend, resolve_devices
from device_agent.devices import SoundDeviceInfo, describe_devices
from shared.audio import Int16Array
from shared.config import ConfigError, DeviceSettings, load

pytestmark = pytest.mark.unit


def dev(index: int, name: str, inputs: int, outputs: int) -> dict[str, Any]:
    return {
        "index": index,
        "name": name,
        "max_input_channels": inputs,
        "max_output_channels": outputs,
        "default_samplerate": 48000.0,
        "hostapi": 0,
    }


JACK = dev(0, "bcm2835 Headphones: - (hw:0,0)", 0, 8)
HDMI = dev(1, "vc4-hdmi-0: MAI PCM i2s-hifi-0 (hw:1,0)", 0, 2)
USB_MIC = dev(2, "USB PnP Sound Device: USB Audio (hw:2,0)", 1, 0)
PLUGINS = [dev(3, "sysdefault", 128, 128), dev(4, "dmix", 0, 2), dev(5, "default", 128, 128)]
# A Pi 4 with a USB microphone: the headphone jack and HDMI on the SoC, ALSA's plugins after them.
PI4_USB_MIC = [JACK, HDMI, USB_MIC, *PLUGINS]


class FakeSd:
    """``sounddevice.query_devices`` over a device list: all of them, or one by index or name part."""

    def __init__(self, devices: list[dict[str, Any]]) -> None:
        self.devices = devices
        self.calls = 0

    def query_devices(self, device: int | str | None = None, kind: str | None = None) -> Any:
        self.calls += 1
        if device is None:
            return self.devices
        key = "max_input_channels" if kind == "input" else "max_output_channels"
        found = [
            d
            for d in self.devices
            if d[key] > 0 and (d["index"] == device if isinstance(device, int) else str(device) in d["name"])
        ]
        if len(found) != 1:
            raise ValueError(f"No {kind} device matching {device!r}" if not found else f"Multiple {kind} devices")
        return found[0]


def pick(devices: list[dict[str, Any]], inp: str = "auto", out: str = "auto", alsa_card: str = "") -> Any:
    return resolve_devices(FakeSd(devices), inp, out, alsa_card)


def test_a_pi_with_a_usb_microphone_gets_it_and_the_headphone_jack(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        assert pick(PI4_USB_MIC) == (2, 0)
    assert "microphone 2 'USB PnP Sound Device: USB Audio (hw:2,0)'" in caplog.text
    assert "speaker 0 'bcm2835 Headphones: - (hw:0,0)'" in caplog.text


def test_a_usb_speakerphone_plays_on_its_own_card() -> None:
    phone_in = dev(2, "Jabra SPEAK 410 USB: USB Audio (hw:2,0)", 1, 2)
    speaker = dev(6, "USB Speaker: USB Audio (hw:3,0)", 0, 2)
    assert pick([JACK, HDMI, speaker, phone_in, *PLUGINS]) == (2, 2)


def test_a_plugged_in_usb_speaker_beats_the_always_present_jack() -> None:
    speaker = dev(6, "USB Speaker: USB Audio (hw:3,0)", 0, 2)
    assert pick([*PI4_USB_MIC, speaker]) == (2, 6)


def test_without_a_usb_microphone_both_stay_the_default() -> None:
    hat = dev(2, "seeed-2mic-voicecard: bcm2835-i2s-wm8960-hifi wm8960-hifi-0 (hw:2,0)", 2, 2)
    assert pick([JACK, HDMI, hat, *PLUGINS]) == (None, None)  # a HAT: ALSA's default (ALSA_CARD)
    assert pick([dev(0, "HDA Intel PCH: ALC257 Analog (hw:0,0)", 2, 2), *PLUGINS]) == (None, None)


def test_a_usb_microphone_without_any_other_speaker_plays_on_the_default() -> None:
    assert pick([USB_MIC, *PLUGINS]) == (2, None)


def test_a_sound_server_or_alsa_card_keeps_the_default() -> None:
    assert pick([*PI4_USB_MIC, dev(6, "pulse", 32, 32)]) == (None, None)  # it holds the hw: devices
    assert pick([*PI4_USB_MIC, dev(6, "pipewire", 64, 64)]) == (None, None)
    assert pick(PI4_USB_MIC, alsa_card="Device") == (None, None)  # the user named the card


def test_explicit_names_and_indices_are_kept_as_they_are_without_asking_portaudio() -> None:
    sd = FakeSd(PI4_USB_MIC)
    assert resolve_devices(sd, "USB", "Headphones") == ("USB", "Headphones")
    assert resolve_devices(sd, "1", "") == (1, None)
    assert resolve_devices(sd, "", "") == (None, None)  # empty: PortAudio's default, as before
    assert sd.calls == 0


def test_an_explicit_microphone_with_an_auto_speaker() -> None:
    phone = dev(6, "Jabra SPEAK 410 USB: USB Audio (hw:3,0)", 1, 2)
    assert pick([*PI4_USB_MIC, phone], inp="Jabra") == ("Jabra", 6)  # its own card
    assert pick(PI4_USB_MIC, inp="2") == (2, 0)  # a USB mic by index: the jack
    assert pick(PI4_USB_MIC, inp="") == (None, None)
    with pytest.raises(ConfigError, match=r"^sound device: No input device matching 'nope' \(naila device"):
        pick(PI4_USB_MIC, inp="nope")


def test_an_auto_microphone_with_an_explicit_speaker() -> None:
    assert pick(PI4_USB_MIC, out="HDMI") == (2, "HDMI")


def test_auto_is_the_shipped_default_in_any_case() -> None:
    settings = load(DeviceSettings)
    assert (settings.device_sound_input, settings.device_sound_output) == ("auto", "auto")
    assert pick(PI4_USB_MIC, inp="AUTO", out=" Auto ") == (2, 0)


def test_list_devices_says_what_auto_picks() -> None:
    infos = [
        SoundDeviceInfo(d["index"], d["name"], d["max_input_channels"], d["max_output_channels"], 48000, "ALSA")
        for d in PI4_USB_MIC
    ]
    text = describe_devices(infos, [])
    assert "DEVICE_SOUND_INPUT/OUTPUT=auto (the default): microphone 2 'USB PnP Sound Device: USB Audio" in text
    assert "speaker 0 'bcm2835 Headphones: - (hw:0,0)' (USB microphone, the headphone jack)" in text
    assert "microphone default, speaker default (ALSA_CARD=Device" in describe_devices(infos, [], alsa_card="Device")


def test_choice_reads_sounddevice_infos_and_says_why() -> None:
    choice = choose(from_portaudio(PI4_USB_MIC))
    assert (choice.input, choice.output, choice.why) == (2, 0, "USB microphone, the headphone jack")


async def test_the_backend_opens_the_chosen_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[dict[str, Any]] = []

    class Stream:
        latency = (0.01, 0.02)

        def __init__(self, **kw: Any) -> None:
            opened.append(kw)

        def start(self) -> None: ...
        def stop(self) -> None: ...
        def close(self) -> None: ...

    fake = FakeSd(PI4_USB_MIC)
    mod = types.ModuleType("sounddevice")
    mod.Stream = Stream  # type: ignore[attr-defined]
    mod.PortAudioError = RuntimeError  # type: ignore[attr-defined]
    mod.query_devices = fake.query_devices  # type: ignore[attr-defined]
    mod.check_input_settings = lambda *a, **kw: None  # type: ignore[attr-defined]
    mod.check_output_settings = lambda *a, **kw: None  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "sounddevice", mod)
    monkeypatch.delenv("ALSA_CARD", raising=False)
    backend = SoundDeviceBackend("auto", "auto")

    def cb(mic: Int16Array) -> Int16Array:
        return np.zeros_like(mic)

    await backend.start(cb)
    assert opened[0]["device"] == (2, 0)
    await backend.stop()
