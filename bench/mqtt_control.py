"""MQTT control plane: command round trip and messages per second, through a real mosquitto.

The AI server's ControlPlane (ai_server.control, the code the server runs; its models are
scripted fakes because no model is on this path) sends ``volume`` commands to real device
agents (device_agent.mqtt_agent.MqttAgent, which also republishes its retained status on each
change, as on a Pi). All of it shares this process and the machine's 2 cores with mosquitto.

* round trip: ``ControlPlane.send_command`` -> Command -> device -> CommandResponse -> caller,
  one at a time, p50/p95 over ``--commands``;
* commands/s: ``--concurrency`` commands in flight, spread over ``--devices`` devices;
  every command is 3 messages through the broker (command, response, status);
* ingest/s: a separate client floods retained device statuses of ``--devices`` ids; how fast
  the control plane validates and applies them to its registry.

Rate limits are raised for the run (the defaults, 5/s with a burst of 20 per device, exist to
stop a misbehaving device, and would be what is measured otherwise).
Clock: time.monotonic. Usage: python bench/mqtt_control.py; writes bench/results/mqtt_control.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import aiomqtt  # noqa: E402

from ai_server.assembly import start_server  # noqa: E402
from ai_server.fakes import FakeLLM, FakeSTT, FakeTTS  # noqa: E402
from bench.stats import pct  # noqa: E402
from device_agent.camera import Snapshot  # noqa: E402
from device_agent.mqtt_agent import MqttAgent  # noqa: E402
from naila.stack import Stack, new_workdir  # noqa: E402
from shared.config import AIServerSettings, DeviceSettings, MediaSettings, MqttSettings, load  # noqa: E402
from shared.mqtt import DeviceStatus, build, outbound, topics  # noqa: E402


class BenchDevice:
    """DeviceControl for the bench: volume and mute are state, no camera."""

    def __init__(self) -> None:
        self.volume = 50
        self.muted = False
        self.agent: MqttAgent | None = None

    def set_volume(self, level: int) -> None:
        self.volume = level

    def set_mic_muted(self, muted: bool) -> None:
        self.muted = muted

    def restart_stream(self) -> None:
        pass

    async def snapshot(self, quality: int, size: tuple[int, int] | None) -> Snapshot | None:
        return None

    async def publish_status(self) -> dict[str, Any]:
        assert self.agent is not None
        return await self.agent.publish_status()



async def wait_for(cond: Any, within_s: float) -> None:
    deadline = time.monotonic() + within_s
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        await asyncio.sleep(0.01)


async def run(args: argparse.Namespace, mqtt: MqttSettings) -> dict[str, Any]:
    settings = load(AIServerSettings, ai_mqtt_rate_per_s=10_000, ai_mqtt_rate_burst=100_000,
                    ai_media_dir=tempfile.mkdtemp(prefix="naila-bench-data-"), vision_enabled=False)
    # The server as it runs (the composition root), with scripted models: no model is on this path.
    server = await start_server(settings, stt=FakeSTT(), llm=FakeLLM(), tts=FakeTTS(), port=0, metrics_port=0,
                                warm=False, mqtt=mqtt, media=load(MediaSettings))
    plane = server.control
    assert plane is not None  # AI_MQTT is on and broker settings were given
    await plane.wait_connected(10)
    agents = []
    for i in range(args.devices):
        control = BenchDevice()
        dev = load(DeviceSettings, device_id=f"bench-{i}", device_room=f"room{i}")
        agent = MqttAgent(mqtt, dev, control, capabilities=["audio", "speaker"], firmware_version="bench")
        control.agent = agent
        await agent.start()
        agents.append(agent)
    ids = [f"bench-{i}" for i in range(args.devices)]
    await wait_for(lambda: all((r := plane.registry.get(d)) is not None and r.online for d in ids), 15)

    # Round trip, one at a time.
    for _ in range(20):  # warm-up
        await plane.send_command(ids[0], "volume", {"level": 10})
    rtts = []
    for n in range(args.commands):
        t0 = time.monotonic()
        await plane.send_command(ids[n % len(ids)], "volume", {"level": n % 100})
        rtts.append((time.monotonic() - t0) * 1000)

    # Throughput with commands in flight.
    sem = asyncio.Semaphore(args.concurrency)

    async def one(n: int) -> None:
        async with sem:
            await plane.send_command(ids[n % len(ids)], "volume", {"level": n % 100}, timeout_s=30)

    t0 = time.monotonic()
    await asyncio.gather(*(one(n) for n in range(args.burst)))
    burst_s = time.monotonic() - t0

    # Ingest: statuses from another client.
    received_before = plane.link.stats.received
    async with aiomqtt.Client(mqtt.mqtt_host, mqtt.mqtt_port, identifier="bench-flood") as flood:
        t0 = time.monotonic()
        for n in range(args.statuses):
            dev = f"flood-{n % args.devices}"
            status = build(DeviceStatus, device_id=dev, online=True, capabilities=["audio"], firmware_version="f")
            out = outbound(topics.device_status(dev), status)
            await flood.publish(out.topic, out.payload, qos=out.qos, retain=out.retain)
        await wait_for(lambda: plane.link.stats.received - received_before >= args.statuses, 60)
        ingest_s = time.monotonic() - t0
        for d in range(args.devices):  # leave no retained flood behind
            await flood.publish(topics.device_status(f"flood-{d}"), b"", qos=1, retain=True)

    for agent in agents:
        await agent.stop()
    await server.stop()
    return {
        "clock": "time.monotonic",
        "load_average_1m": os.getloadavg()[0],
        "devices": args.devices,
        "round_trip_ms": {"p50": pct(rtts, 0.5), "p95": pct(rtts, 0.95), "max": max(rtts), "n": len(rtts)},
        "commands_per_s": args.burst / burst_s,
        "messages_per_s_commands": 3 * args.burst / burst_s,
        "concurrency": args.concurrency,
        "ingest_statuses_per_s": args.statuses / ingest_s,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--devices", type=int, default=4)
    parser.add_argument("--commands", type=int, default=500)
    parser.add_argument("--burst", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--statuses", type=int, default=5000)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("mqtt").setLevel(logging.ERROR)  # paho's "pending publish calls" at 32 in flight
    stack = Stack(new_workdir("naila-bench-mqtt-"), progress=lambda s: print(s.replace("[demo]", "[bench]")))
    try:
        stack.start_mosquitto()
        mqtt = load(MqttSettings, mqtt_host=stack.mqtt_host, mqtt_port=stack.mqtt_port)
        result = asyncio.run(run(args, mqtt))
    finally:
        with contextlib.suppress(Exception):
            stack.stop()
    rt = result["round_trip_ms"]
    print("| measure | value |")
    print("|---|---|")
    print(f"| command round trip p50 / p95 (ms) | {rt['p50']:.2f} / {rt['p95']:.2f} |")
    print(f"| commands/s ({args.concurrency} in flight) | {result['commands_per_s']:.0f} "
          f"({result['messages_per_s_commands']:.0f} messages/s) |")
    print(f"| device statuses ingested/s | {result['ingest_statuses_per_s']:.0f} |")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "mqtt_control.json").write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out / 'mqtt_control.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
