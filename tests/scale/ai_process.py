"""One real AI server process with fast stand-in engines, for the scale tests (kill it, restart it).

    python -m tests.scale.ai_process --name A --port 50061 --mqtt 127.0.0.1:1883 --data /tmp/a

The gRPC service, the conversation pipeline, the MQTT control plane (shared subscriptions) and the
store are the real ones; STT, LLM and TTS are ai_server/fakes.py (the LLM answers "server A says
hello", a word each 0.3 s, so a test can tell which server answered and kill it mid-reply). It
prints "ready <port>" once it listens and runs until SIGTERM or SIGKILL.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
from collections.abc import Callable
from pathlib import Path

from ai_server.assembly import start_server
from ai_server.fakes import FakeLLM, FakeSTT, FakeTTS
from shared.audio import Int16Array
from shared.config import AIServerSettings, MediaSettings, MqttSettings, load


def reply_of(name: str) -> str:
    return f"server {name} says hello"


def heard(stt_file: str) -> Callable[[Int16Array], str]:
    """What the fake STT hears: the file's text when there is one (a test changes it between turns)."""

    def text(_audio: Int16Array) -> str:
        path = Path(stt_file) if stt_file else None
        return path.read_text().strip() if path is not None and path.exists() else "tell me something nice"

    return text


async def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--name", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--mqtt", default="", help="host:port of the broker; empty = no control plane")
    p.add_argument("--data", required=True, help="this server's store folder (AI_MEDIA_DIR)")
    p.add_argument("--llm-base-url", default="", help="an OpenAI-compatible LLM server instead of the fake LLM")
    p.add_argument("--share-group", default="naila-ai", help="AI_MQTT_SHARE_GROUP (empty: plain subscriptions)")
    p.add_argument("--stt-file", default="", help="the fake STT hears what this file says at each turn")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING, format=f"ai-{args.name} %(levelname)s %(name)s: %(message)s")
    host, _, port = args.mqtt.partition(":")
    overrides: dict[str, object] = {}
    if args.llm_base_url:
        # Short answers: the shared LLM server is CPU-only on the test box and runs requests one by one.
        overrides.update(llm_backend="openai", llm_base_url=args.llm_base_url, llm_model="shared", llm_max_tokens=48)
    settings = load(
        AIServerSettings,
        ai_mqtt=bool(args.mqtt),
        # A persistent session keeps its subscriptions: the id names the share group too, so a server a
        # later test starts under the same name (in another group, tests/conftest.py) does not come back
        # subscribed to both groups and answer every request twice. Restarts within a test keep theirs.
        ai_mqtt_client_id=f"naila-ai-server-{args.name}-{os.environ.get('AI_MQTT_SHARE_GROUP', args.share_group)}",
        vision_enabled=False,
        ai_media_dir=args.data,
        ai_alarms_keepalive_s=5,  # a dead server's alarms are adopted within 7.5 s
        **overrides,
    )
    mqtt = load(MqttSettings, mqtt_host=host, mqtt_port=int(port), mqtt_keepalive_s=5) if args.mqtt else None
    server = await start_server(
        settings,
        stt=FakeSTT(heard(args.stt_file)),
        llm=None if args.llm_base_url else FakeLLM(reply_of(args.name), piece_delay_s=0.3),
        tts=FakeTTS(),
        host="127.0.0.1",
        port=args.port,
        metrics_port=0,
        warm=False,
        mqtt=mqtt,
        media=load(MediaSettings),
    )
    print(f"ready {server.port}", flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await server.stop(grace=0)


if __name__ == "__main__":
    asyncio.run(main())
