"""How many channels a sound card is opened with, and mono to and from them.

The pipeline is mono (one microphone signal for the echo canceller and WebRTC, one reply to
play). Some USB microphones and ALSA ``hw:`` speakers are stereo only. PortAudio's ALSA host API
(19.6) opens a mono stream on such a device anyway (a mono stream opens on the 2-channel-only ALSA
device of tests/device_agent/test_card_channels_alsa.py): it pads the host channels up to the
device's minimum and hands over the first, so the mic would be its left channel alone. So a
device whose PortAudio maximum is exactly 2 is opened in stereo; any device that refuses mono
(other host APIs, other PortAudio versions) is tried with 2 channels, then with all it has. The
mic's channels are averaged to mono before anything else (the echo canceller) sees them: both
capsules count, and a silent one costs 6 dB rather than the whole signal. The mono reply is
written to every speaker channel.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Literal, TypeVar

import numpy as np

from shared.audio import Int16Array

log = logging.getLogger(__name__)

T = TypeVar("T")


def channel_choices(sd: Any, device: int | str | None, kind: Literal["input", "output"]) -> list[int]:
    """Channel counts to try for ``device``, in order: a stereo device 2 then 1, any other 1, 2, its maximum.

    The maximum comes from PortAudio (``max_input_channels``/``max_output_channels``); a device it
    cannot describe is tried with 1 and 2, and opening then says what is wrong. Sound servers and
    ALSA plugins (``default``, ``pulse``, ``plughw``) say 32 or more and take mono.
    """
    try:
        most = int(sd.query_devices(device, kind)[f"max_{kind}_channels"])
    except Exception:  # no such device, or several: opening the stream gives the real error
        most = 0
    if most <= 0:
        return [1, 2]
    if most == 2:
        return [2, 1]
    return sorted({1, min(2, most), most})


def open_with_channels(
    open_stream: Callable[[int, int], T], inputs: list[int], outputs: list[int], refused: type[BaseException]
) -> T:
    """``open_stream(in_channels, out_channels)`` with the first channel counts the card takes.

    Each ``refused`` error (PortAudio's) tries the next pair. When every pair
    is refused, the first error is raised: it is the one about the stream tried first.
    """
    first: BaseException | None = None
    for n_in in inputs:
        for n_out in outputs:
            try:
                stream = open_stream(n_in, n_out)
            except refused as exc:
                log.info("sound card refuses %d in / %d out channels (%s)", n_in, n_out, exc)
                first = first or exc
                continue
            if (n_in, n_out) != (1, 1):
                log.info(
                    "sound card opened with %d in / %d out channels: mic averaged to mono, "
                    "the reply on every speaker channel",
                    n_in,
                    n_out,
                )
            return stream
    assert first is not None, "no channel counts to try"
    raise first


def downmix(block: Any) -> Int16Array:
    """A (frames, channels) int16 capture block as mono: the channels' average."""
    frames = np.asarray(block)
    if frames.shape[1] == 1:
        return np.array(frames[:, 0], dtype=np.int16)
    mono: Int16Array = (frames.astype(np.int32).sum(axis=1) // frames.shape[1]).astype(np.int16)
    return mono
