"""``naila device``: run the device agent until SIGTERM/SIGINT (or ``--duration``).

Configuration comes from the environment (``DEVICE_*``, ``AUDIO_*``, ``VIDEO_*``, ``MQTT_*``,
``WEBRTC_*``; systemd loads /etc/naila/device.env); the flags override the most common ones.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from typing import Any

from shared.config import ConfigError, DeviceSettings, load

log = logging.getLogger("device_agent")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="naila device",
        description="NAILA device agent: mic + echo cancellation + speaker (+ camera) over WebRTC to the hub, "
        "status and commands over MQTT.",
    )
    p.add_argument("--hub-url", help="hub base URL (DEVICE_HUB_URL)")
    p.add_argument("--device-id", help="device identity (DEVICE_ID)")
    p.add_argument("--mic-file", help="WAV played as the microphone; selects the file audio backend")
    p.add_argument("--speaker-file", help="WAV recording the speaker; selects the file audio backend")
    p.add_argument("--no-mqtt", action="store_true", help="do not connect to the MQTT broker (DEVICE_MQTT=false)")
    p.add_argument("--duration", type=float, default=None, help="stop after this many seconds (demos, tests)")
    p.add_argument("--log-level", default=None, help="DEBUG, INFO, ... (default INFO)")
    p.add_argument("--list-devices", action="store_true",
                   help="list microphones, speakers (PortAudio) and cameras (V4L2) with their names, then exit")
    return p


def settings_from_args(ns: argparse.Namespace) -> DeviceSettings:
    overrides: dict[str, Any] = {}
    if ns.hub_url:
        overrides["device_hub_url"] = ns.hub_url
    if ns.device_id:
        overrides["device_id"] = ns.device_id
    if ns.mic_file or ns.speaker_file:
        overrides["device_audio_backend"] = "file"
        if ns.mic_file:
            overrides["device_mic_file"] = ns.mic_file
        if ns.speaker_file:
            overrides["device_speaker_file"] = ns.speaker_file
    if ns.no_mqtt:
        overrides["device_mqtt"] = False
    return load(DeviceSettings, **overrides)


async def run(settings: DeviceSettings, duration: float | None = None) -> int:
    from device_agent.agent import DeviceAgent
    from shared.aio import wait_event

    try:
        agent = DeviceAgent(settings)
    except ValueError as exc:  # e.g. DEVICE_HUB_CA unreadable: one line, like a config error
        print(f"naila device: {exc}", file=sys.stderr)
        return 2
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    await agent.start()
    try:
        if duration is None:
            await stop.wait()
        else:
            await wait_event(stop, duration)
    finally:
        await agent.stop()
    return 0


def list_devices() -> str:
    from device_agent.devices import describe_devices, list_cameras, list_sound_devices

    try:
        sound, error = list_sound_devices(), ""
    except ConfigError as exc:
        sound, error = [], str(exc)
    return describe_devices(sound, list_cameras(), error, alsa_card=os.environ.get("ALSA_CARD", ""))


def main(argv: list[str]) -> int:
    ns = _parser().parse_args(argv)
    if ns.list_devices:
        print(list_devices())
        return 0
    root = logging.getLogger()
    if ns.log_level or not root.handlers:
        logging.basicConfig(
            level=getattr(logging, (ns.log_level or "INFO").upper(), logging.INFO),
            format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
            force=bool(ns.log_level),
        )
    try:
        settings = settings_from_args(ns)
        return asyncio.run(run(settings, ns.duration))
    except ConfigError as exc:
        print(f"naila device: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
