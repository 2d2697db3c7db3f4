"""``naila ai-server``: the command line and the process lifecycle (signals, exit codes).

Everything the server is made of is built by :func:`ai_server.assembly.start_server` (the
composition root); ``AIServer`` and ``start_server`` are importable from here too.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from typing import Any

from ai_server.assembly import AIServer, start_server
from ai_server.errors import StartupError
from shared.config import AIServerSettings, ConfigError, MediaSettings, MqttSettings, load
from shared.threads import one_blas_thread

__all__ = ["AIServer", "main", "start_server"]

log = logging.getLogger("ai_server")


async def _serve(settings: AIServerSettings, mqtt: MqttSettings, media: MediaSettings) -> None:
    server = await start_server(settings, mqtt=mqtt, media=media)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down")
    await server.stop(grace=2.0)


def main(argv: list[str]) -> int:
    one_blas_thread()  # numpy's idle BLAS threads spin ~0.1 s after each Whisper feature extraction
    parser = argparse.ArgumentParser(
        prog="naila ai-server",
        description="Serve NailaAI over gRPC: streaming STT -> LLM -> TTS, and the MQTT control plane. "
        "Configured by AI_SERVER_*, STT_*, LLM_*, TTS_*, AI_*, MQTT_* and MEDIA_* environment variables "
        "(see `naila config`).",
    )
    parser.add_argument("--host", help="bind address (overrides AI_SERVER_HOST)")
    parser.add_argument("--port", type=int, help="gRPC port (overrides AI_SERVER_PORT)")
    parser.add_argument("--metrics-port", type=int,
                        help="serve Prometheus /metrics on this port (overrides AI_SERVER_METRICS_PORT)")
    ns = parser.parse_args(argv)
    overrides: dict[str, Any] = {}
    if ns.host is not None:
        overrides["ai_server_host"] = ns.host
    if ns.port is not None:
        overrides["ai_server_port"] = ns.port
    if ns.metrics_port is not None:
        overrides["ai_server_metrics_port"] = ns.metrics_port
    try:
        settings = load(AIServerSettings, **overrides)
        mqtt = load(MqttSettings)
        media = load(MediaSettings)
    except ConfigError as exc:
        print(f"naila ai-server: {exc}", file=sys.stderr)
        return 2
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    try:
        asyncio.run(_serve(settings, mqtt, media))
    except StartupError as exc:
        print(f"naila ai-server: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
