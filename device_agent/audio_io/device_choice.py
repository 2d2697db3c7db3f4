"""``DEVICE_SOUND_INPUT``/``OUTPUT=auto`` (the default): which PortAudio devices are the mic and the speaker.

A Pi has no microphone of its own, so a USB capture device is the microphone people plug in; the
ALSA default (on the SD image: one card for both directions, ``asound.conf``) cannot be both a USB
microphone and the headphone jack. With a USB microphone the speaker is, in this order:

1. a playback device on the microphone's own card (a USB speakerphone or headset): one card, one
   clock for both directions, which is what the echo canceller wants;
2. another USB playback device: a USB speaker is plugged in on purpose;
3. the Pi's headphone jack (``bcm2835 Headphones``): it is always there, with or without a speaker
   in it, so it comes after anything plugged in;
4. the default device.

Without a USB microphone both stay the default, as before ``auto`` existed: a HAT (ReSpeaker...) or
``ALSA_CARD`` keeps choosing the card through ALSA. ``auto`` also stays the default when a sound
server (PulseAudio, PipeWire) is one of PortAudio's devices: it holds the ``hw:`` devices, and
routes the default itself. Explicit names and indices never come here.

The boundary is ``sounddevice.query_devices()``: its device dicts, or anything with the same four
fields (``devices.SoundDeviceInfo``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

AUTO = "auto"

# PortAudio's ALSA names for hardware devices: "<card name>: <pcm name> (hw:<card>,<device>)",
# "plughw:" with PA_ALSA_PLUGHW=1. snd-usb-audio names every PCM "USB Audio".
_HW = re.compile(r"\((?:plug)?hw:(\d+),(\d+)\)$")
_SOUND_SERVERS = {"pulse", "pipewire"}
_HEADPHONE_JACK = "Headphones"  # the Pi's analog output: "bcm2835 Headphones: - (hw:N,0)"


@dataclass(frozen=True)
class SoundDevice:
    index: int
    name: str
    inputs: int
    outputs: int

    @property
    def card(self) -> int | None:
        """The ALSA card number of a hardware device, None for plugins (default, dmix, pulse...)."""
        m = _HW.search(self.name)
        return int(m.group(1)) if m else None

    @property
    def usb(self) -> bool:
        return self.card is not None and "usb" in self.name.lower()


def from_portaudio(devices: Iterable[Mapping[str, Any]]) -> list[SoundDevice]:
    """``sounddevice.query_devices()``'s dicts as :class:`SoundDevice`."""
    return [
        SoundDevice(int(d["index"]), str(d["name"]), int(d["max_input_channels"]), int(d["max_output_channels"]))
        for d in devices
    ]


@dataclass(frozen=True)
class Choice:
    """Chosen devices (an index, or None for PortAudio's default) and why, for the log."""

    input: int | None
    output: int | None
    why: str

    def describe(self, devices: Sequence[SoundDevice]) -> str:
        names = {d.index: d.name for d in devices}
        mic = f"{self.input} {names[self.input]!r}" if self.input is not None else "default"
        speaker = f"{self.output} {names[self.output]!r}" if self.output is not None else "default"
        return f"microphone {mic}, speaker {speaker} ({self.why})"


def choose(devices: Sequence[SoundDevice], mic: SoundDevice | None = None, alsa_card: str = "") -> Choice:
    """The ``auto`` choice; ``mic`` is an explicitly configured microphone (output still ``auto``)."""
    servers = sorted(d.name for d in devices if d.name in _SOUND_SERVERS)
    if servers:
        return Choice(None, None, f"sound server {servers[0]!r} routes the default")
    if alsa_card:
        return Choice(None, None, f"ALSA_CARD={alsa_card} names the card")
    if mic is None:
        mic = next((d for d in devices if d.usb and d.inputs > 0), None)
        if mic is None:
            return Choice(None, None, "no USB microphone")
    speakers = [d for d in devices if d.outputs > 0 and d.card is not None]
    if mic.card is not None:
        same = next((d for d in speakers if d.card == mic.card), None)
        if same is not None:
            return Choice(mic.index, same.index, "the microphone's own card plays too")
    usb = next((d for d in speakers if d.usb), None)
    if usb is not None:
        return Choice(mic.index, usb.index, "USB speaker")
    jack = next((d for d in speakers if _HEADPHONE_JACK in d.name), None)
    if jack is not None:
        return Choice(mic.index, jack.index, "USB microphone, the headphone jack")
    return Choice(mic.index, None, "USB microphone, no other speaker: the default one")
