"""The push-to-talk GPIO button (issue 19): gpiozero's MockFactory pins are the one fake.

Unit: the settle debounce on a hand-driven scheduler, the settings (a pin implies push_to_talk),
and that a device without DEVICE_PTT_GPIO never imports gpiozero. Integration: the real device
agent against a real hub over real aiortc: the mode and the button reach the hub's session over
the control channel, a press before the channel opens arrives as the current state, and only the
speech said while the button is held becomes a turn (the hub's recording fake AI server).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
from gpiozero import Device
from gpiozero.pins.mock import MockFactory

from device_agent.agent import DeviceAgent
from device_agent.audio_io import MemoryAudioBackend
from device_agent.ptt_button import PttButton, make_ptt_button
from shared.config import AudioSettings, ConfigError, DeviceSettings, VideoSettings, WebRTCSettings, load
from shared.contract import pb
from tests.hub.conftest import RATE, FakeAI, HubFactory, fake_ai, make_hub, phrase, until  # noqa: F401

PIN = 17


@pytest.fixture
def mock_pins() -> Iterator[MockFactory]:
    factory = MockFactory()
    old, Device.pin_factory = Device.pin_factory, factory
    yield factory
    factory.reset()
    Device.pin_factory = old


class FakeTimers:
    """A scheduler driven by hand: the debounce's clock."""

    def __init__(self) -> None:
        self.pending: list[tuple[float, Callable[[], None], list[bool]]] = []

    def __call__(self, delay: float, cb: Callable[[], None]) -> Any:
        cancelled = [False]
        self.pending.append((delay, cb, cancelled))

        class Handle:
            def cancel(self) -> None:
                cancelled[0] = True

        return Handle()

    def fire(self) -> None:
        due, self.pending = self.pending, []
        for _, cb, cancelled in due:
            if not cancelled[0]:
                cb()


async def test_bounces_settle_to_one_press_and_one_release(mock_pins: MockFactory) -> None:
    timers, seen = FakeTimers(), list[bool]()
    button = PttButton(PIN, seen.append, debounce_s=0.02, call_later=timers)
    pin = mock_pins.pin(PIN)
    try:
        for level in (False, True, False, True, False):  # contact bounce, ends pressed (active low)
            pin.drive_low() if not level else pin.drive_high()
        await asyncio.sleep(0)  # edges hop onto the loop
        assert seen == [] and {d for d, _, _ in timers.pending} == {0.02}
        timers.fire()
        assert seen == [True] and button.pressed
        pin.drive_high()
        pin.drive_low()  # a bounce back to where it was settles to no change at all
        await asyncio.sleep(0)
        timers.fire()
        assert seen == [True] and button.bounces == 1
        pin.drive_high()
        await asyncio.sleep(0)
        timers.fire()
        assert seen == [True, False] and button.presses == 1
    finally:
        button.close()


async def test_active_high_button(mock_pins: MockFactory) -> None:
    timers, seen = FakeTimers(), list[bool]()
    button = PttButton(PIN, seen.append, active_low=False, call_later=timers)
    try:
        mock_pins.pin(PIN).drive_high()
        await asyncio.sleep(0)
        timers.fire()
        assert seen == [True]
    finally:
        button.close()


def test_a_pin_implies_push_to_talk_unless_the_mode_is_set() -> None:
    assert load(DeviceSettings).device_listening_mode == ""
    assert load(DeviceSettings, device_ptt_gpio=PIN).device_listening_mode == "push_to_talk"
    assert load(DeviceSettings, device_ptt_gpio=PIN, device_listening_mode="always").device_listening_mode == "always"
    assert load(DeviceSettings, device_ptt_gpio="").device_ptt_gpio is None
    with pytest.raises(ConfigError, match="DEVICE_PTT_GPIO"):
        load(DeviceSettings, device_ptt_gpio=40)
    assert make_ptt_button(None, lambda _: None, active_low=True, debounce_ms=20) is None


def test_a_device_without_a_button_never_imports_gpiozero() -> None:
    code = (
        "import asyncio, sys\n"
        "from device_agent.agent import DeviceAgent\n"
        "from device_agent.audio_io import MemoryAudioBackend\n"
        "from shared.config import DeviceSettings, load\n"
        "async def main():\n"
        "    DeviceAgent(load(DeviceSettings, device_mqtt=False), audio_backend=MemoryAudioBackend())\n"
        "asyncio.run(main())\n"
        "assert 'gpiozero' not in sys.modules, 'gpiozero imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


@pytest.mark.integration
async def test_the_button_talks_to_a_real_hub(
    mock_pins: MockFactory, make_hub: HubFactory, fake_ai: FakeAI, phrase: Any  # noqa: F811
) -> None:
    hub = await make_hub(hub_listening_mode="wake_word")
    backend = MemoryAudioBackend()
    settings = load(DeviceSettings, device_id="pi-ptt", device_hub_url=hub.url, device_mqtt=False,
                    device_ptt_gpio=PIN, device_rtp_timeout_s=3.0)
    agent = DeviceAgent(
        settings,
        audio_backend=backend,
        audio=load(AudioSettings, audio_echo_cancellation=False),
        video=load(VideoSettings),
        webrtc=load(WebRTCSettings, webrtc_ice_servers=[]),
    )
    assert agent.ptt is not None
    pin = mock_pins.pin(PIN)
    pin.drive_low()  # held before the channel exists: sent as the current state when it opens
    await until(lambda: agent.hub.ptt_pressed is True, 2, "press settled")
    await agent.start()
    try:
        await until(lambda: "pi-ptt" in hub.sessions, 10, "session")
        session = hub.sessions["pi-ptt"]
        await until(lambda: session.listening.mode == "push_to_talk" and session.listening.pressed, 10,
                    "mode and held button at the hub")
        pin.drive_high()
        await until(lambda: not session.listening.pressed, 2, "release at the hub")
        silence = np.zeros(RATE // 2, dtype=np.int16)
        # Button up: speech is not a turn.
        await asyncio.sleep(backend.play_into_mic(np.concatenate([silence, phrase, silence]), RATE) + 0.5)
        assert pb.START not in fake_ai.events("pi-ptt")
        # Held while speaking, released after: exactly one turn, ended by the release.
        pin.drive_low()
        await until(lambda: session.listening.pressed, 2, "press at the hub")
        await asyncio.sleep(backend.play_into_mic(np.concatenate([silence, phrase]), RATE) + 0.3)
        pin.drive_high()
        await until(lambda: pb.END in fake_ai.events("pi-ptt"), 5, "END on release")
        assert len(fake_ai.utterances("pi-ptt")) == 1
        assert agent.ptt is not None and agent.ptt.presses == 2
    finally:
        await agent.stop()
