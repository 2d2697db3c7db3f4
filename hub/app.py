"""``naila hub``: the hub's entry point. Settings from the environment (HUB_*, WEBRTC_*, AUDIO_*, VIDEO_*, MQTT_*).

Importable API for tests, the demo and benchmarks: :class:`Hub` and :func:`run_hub`
(re-exported from hub.server).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import re
import signal
import sys
from typing import Any

from hub.runtime import run
from hub.server import Hub, run_hub
from shared.config import (
    AudioSettings,
    ConfigError,
    HubSettings,
    MqttSettings,
    VideoSettings,
    WebRTCSettings,
    load,
)
from shared.errors import one_line

__all__ = ["Hub", "main", "run_hub"]

log = logging.getLogger("naila.hub")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="naila hub",
        description="Run the NAILA hub: WebRTC termination for devices (POST /connect), VAD and "
        "barge-in, one gRPC stream to the AI server, GET /health /metrics /turns; SDP offers over MQTT too "
        "(HUB_MQTT); camera video through a motion gate to the AI server (HUB_VISION). "
        "Configured by HUB_* / WEBRTC_* / AUDIO_* / VIDEO_* / MQTT_* environment variables (see `naila config`); "
        "the options below override them.",
    )
    p.add_argument("--host", help="address to bind (HUB_HOST)")
    p.add_argument("--port", type=int, help="HTTP port (HUB_PORT)")
    p.add_argument("--ai-server", help="AI server gRPC address host:port (HUB_AI_SERVER)")
    return p


async def serve(hub: Hub) -> None:
    """Run until SIGINT/SIGTERM, then stop cleanly."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    await hub.start()
    try:
        await stop.wait()
        log.info("stopping")
    finally:
        await hub.stop()


def _one_line(err: Exception) -> str:
    """shared.errors.one_line, with pydantic's field names spelled as the environment variables."""
    text = one_line(err, with_type=False)
    # Name the environment variable, as shared.config's own messages do.
    return re.sub(r'field "([a-z0-9_]+)"', lambda m: m.group(1).upper(), text)


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    overrides: dict[str, Any] = {}
    if args.host is not None:
        overrides["hub_host"] = args.host
    if args.port is not None:
        overrides["hub_port"] = args.port
    if args.ai_server is not None:
        overrides["hub_ai_server"] = args.ai_server
    try:
        settings = load(HubSettings, **overrides)
        webrtc = load(WebRTCSettings)
        audio = load(AudioSettings)
        mqtt = load(MqttSettings)
        video = load(VideoSettings)
        hub = Hub(settings, webrtc, audio, mqtt=mqtt, video=video)
    except ConfigError as err:
        print(f"naila hub: {err}", file=sys.stderr)
        return 2
    except ValueError as err:
        # pydantic-settings' own SettingsError (e.g. HUB_DEVICE_TOKENS not JSON) escapes
        # shared.config.load; so does a VAD engine this build does not have.
        print(f"naila hub: {_one_line(err)}", file=sys.stderr)
        return 2
    log.info(
        "starting hub: HTTP %s:%d, AI server %s, VAD %s (aggressiveness %d), end of turn %s, %d device token(s)",
        settings.hub_host, settings.hub_port, settings.hub_ai_server, audio.audio_vad_mode,
        settings.hub_vad_aggressiveness, audio.audio_end_of_turn, len(settings.hub_device_tokens),
    )
    log.info("MQTT signaling: %s", f"broker {mqtt.mqtt_host}:{mqtt.mqtt_port}" if settings.hub_mqtt else "off")
    log.info(
        "vision: %s", f"motion threshold {video.video_motion_threshold}, every {video.video_process_every_n_frames} "
        f"motion frame(s), refresh {settings.hub_vision_refresh_s:g}s" if settings.hub_vision else "off",
    )
    try:
        run(serve(hub), use_uvloop=settings.hub_uvloop)
    except OSError as err:  # e.g. the port is taken
        print(f"naila hub: cannot listen on {settings.hub_host}:{settings.hub_port}: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
