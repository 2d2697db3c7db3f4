"""Media inputs: time from a question to its visual context for each source of spec §8.2, and the
event history's query time at 100k events.

Sources (ai_server/media/sources.py, the real YOLO checkpoint at VISION_IMGSZ and rapidocr, on
this CPU), all on ultralytics' bus.jpg (810x1080, four people and a bus):

- live: the latest live-stream frame (a scripted ``Views`` holding the JPEG, not yet analysed),
  decoded and analysed;
- snapshot: the MQTT request to a real device agent through a real mosquitto, its reply, the
  full decode, analysis, and storing the snapshot with its analysis;
- upload: an MQTT upload with a question (spec §8.9) from publish to the chat reply (checks,
  decode, analysis, store, an instant fake LLM): the whole round trip;
- recording frame: a 3 s H.264 MP4 clip (30 frames, 400x532) → its middle frame (PyAV) → analysis;
- store (saved): a stored item's saved analysis reused; store (re-analysed): read and analysed again.

Events: a temporary store (on /dev/shm when there is one) seeded with 100k events over ~35 days
across 8 cameras; the history's queries: an hour of one zone, the last event of one camera,
the newest 100, and the names (``places``).

Clock: time.monotonic for every duration (one monotonic clock).
Usage: python bench/media.py [--runs 7] [--events 100000]; writes bench/results/media.json.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import io
import json
import logging
import os
import platform
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import aiomqtt  # noqa: E402
import av  # noqa: E402
import numpy as np  # noqa: E402
import ultralytics  # noqa: E402
from PIL import Image  # noqa: E402

from ai_server.assembly import start_server  # noqa: E402
from ai_server.fakes import FakeLLM, FakeSTT, FakeTTS  # noqa: E402
from ai_server.media.analysis import ImageAnalyser  # noqa: E402
from ai_server.media.ocr import RapidOcr  # noqa: E402
from ai_server.media.sources import MediaSources  # noqa: E402
from ai_server.store import MediaStore  # noqa: E402
from ai_server.vision.detector import YoloDetector, resolve_weights  # noqa: E402
from ai_server.vision.view import CameraInfo, CameraView  # noqa: E402
from bench.stats import spread  # noqa: E402
from device_agent.camera import Snapshot  # noqa: E402
from device_agent.mqtt_agent import MqttAgent  # noqa: E402
from naila.stack import Stack, new_workdir  # noqa: E402
from shared.config import AIServerSettings, DeviceSettings, MediaSettings, MqttSettings, load  # noqa: E402
from shared.mqtt import topics  # noqa: E402

BUS = (Path(ultralytics.__file__).parent / "assets" / "bus.jpg").read_bytes()
T0 = datetime(2026, 11, 1, tzinfo=UTC)


class OneCamera:
    """A ``Views`` with one camera whose latest frame is bus.jpg, not analysed by the pipeline."""

    def __init__(self) -> None:
        self.view = CameraView("live-cam", BUS, 810, 1080, time.monotonic(), datetime.now(UTC), None)

    def now(self) -> float:
        return time.monotonic()

    def cameras(self) -> list[CameraInfo]:
        return [CameraInfo("live-cam", "hall", "front_door", 1, True)]

    def latest(self, device_id: str) -> CameraView | None:
        return self.view if device_id == "live-cam" else None

    async def analysed(self, device_id: str) -> CameraView | None:
        return self.latest(device_id)


class Camera:
    """DeviceControl of a device agent whose camera always sees bus.jpg."""

    def __init__(self) -> None:
        self.agent: MqttAgent | None = None

    def set_volume(self, level: int) -> None:
        pass

    def set_mic_muted(self, muted: bool) -> None:
        pass

    def restart_stream(self) -> None:
        pass

    async def snapshot(self, quality: int, size: tuple[int, int] | None) -> Snapshot | None:
        return Snapshot(BUS, 810, 1080)

    async def publish_status(self) -> dict[str, Any]:
        assert self.agent is not None
        return await self.agent.publish_status()


def clip() -> bytes:
    """3 s of H.264 at 10 fps: bus.jpg scaled to 400x532 with a little noise per frame."""
    bus = np.asarray(Image.open(io.BytesIO(BUS)).convert("RGB").resize((400, 532)))
    rng = np.random.default_rng(1)
    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 400, 532, "yuv420p"
        for _ in range(30):
            noisy = np.clip(bus.astype(np.int16) + rng.integers(-4, 5, bus.shape), 0, 255).astype(np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(noisy, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buf.getvalue()


async def timed(runs: int, step: Callable[[], Awaitable[object]]) -> dict[str, float]:
    await step()  # warm-up: thread pools, first inference
    ms = []
    for _ in range(runs):
        t0 = time.monotonic()
        await step()
        ms.append((time.monotonic() - t0) * 1000)
    return spread(ms)


async def sources_bench(args: argparse.Namespace, mqtt: MqttSettings) -> dict[str, dict[str, float]]:
    settings = load(AIServerSettings, ai_media_dir=tempfile.mkdtemp(prefix="naila-bench-data-"))
    detector = YoloDetector(resolve_weights(settings.vision_model), device="cpu", imgsz=settings.vision_imgsz,
                            confidence=settings.vision_confidence, labels=settings.vision_labels)
    reader = RapidOcr()
    await asyncio.to_thread(detector.load)
    await asyncio.to_thread(reader.load)
    analyser = ImageAnalyser(detector, reader)
    # The server as it runs (the composition root) with this detector; the uploads go through its own
    # analyser (same detector, its OCR loads on the warm-up upload). The sources under test read the
    # scripted live camera and the server's device media and store.
    server = await start_server(settings, stt=FakeSTT(), llm=FakeLLM("ok"), tts=FakeTTS(), port=0, metrics_port=0,
                                warm=False, mqtt=mqtt, media=load(MediaSettings), detector=detector)
    plane = server.control
    assert plane is not None  # AI_MQTT is on and broker settings were given
    store = server.storage.store
    sources = MediaSources(analyser, store, views=OneCamera(), devices=plane.media)
    await plane.wait_connected(10)
    camera = Camera()
    agent = MqttAgent(mqtt, load(DeviceSettings, device_id="bench-cam", device_room="hall"), camera,
                      capabilities=["snapshot"], firmware_version="bench")
    camera.agent = agent
    await agent.start()
    q = "how many people do you see?"
    out: dict[str, dict[str, float]] = {}
    try:
        deadline = time.monotonic() + 15
        while (r := plane.registry.get("bench-cam")) is None or not r.online:
            if time.monotonic() > deadline:
                raise TimeoutError("the bench device did not come online")
            await asyncio.sleep(0.02)
        video = clip()
        out["live_frame"] = await timed(args.runs, lambda: sources.live("live-cam", q))
        out["mqtt_snapshot"] = await timed(args.runs, lambda: sources.snapshot("bench-cam", q))
        out["recording_frame"] = await timed(args.runs, lambda: sources.video(video, "mp4", device_id="bench-cam",
                                                                              question=q))
        stored = store.recent(1, source="mqtt_snapshot")[0].id
        out["store_saved"] = await timed(args.runs, lambda: sources.stored(stored, q))
        out["store_reanalysed"] = await timed(args.runs, lambda: sources.stored(stored, q, reanalyse=True))
        async with aiomqtt.Client(mqtt.mqtt_host, mqtt.mqtt_port, identifier="bench-upload") as client:
            await client.subscribe(topics.chat_reply("bench-web"), qos=1)
            payload = json.dumps({"session_id": "bench-web", "media_type": "image", "format": "jpeg",
                                  "filename": "bus.jpg", "context": q, "data": base64.b64encode(BUS).decode()})

            async def upload() -> None:
                await client.publish("naila/uploads/bench-web/image", payload, qos=1)
                async for msg in client.messages:
                    assert isinstance(msg.payload, bytes) and json.loads(msg.payload)["error"] is None
                    return

            out["mqtt_upload_to_answer"] = await timed(args.runs, upload)
    finally:
        await agent.stop()
        await server.stop()
    return out


def events_bench(n: int, runs: int) -> dict[str, Any]:
    shm = Path("/dev/shm")
    with tempfile.TemporaryDirectory(prefix="naila-bench-events-", dir=shm if shm.is_dir() else None) as tmp:
        store = MediaStore(tmp)
        t0 = time.monotonic()
        zones = ["front_door", "backyard", "garden", "driveway", "porch", "garage", "hall", "kitchen"]
        for i in range(n):
            store.events.add(time=T0 + timedelta(seconds=30 * i), device_id=f"cam{i % 8}", zone=zones[i % 8],
                             alert_type="person_detected", label="person" if i % 3 else "dog",
                             confidence=0.5 + (i % 50) / 100, track_id=i, outcome="alerted" if i % 4 else "recorded")
        seed_s = time.monotonic() - t0
        mid = T0 + timedelta(seconds=15 * n)
        queries: dict[str, Callable[[], object]] = {
            "zone_one_hour": lambda: store.events.query(since=mid, until=mid + timedelta(hours=1), zone="backyard"),
            "last_of_camera": lambda: store.events.query(device_id="cam3", limit=1),
            "newest_100": lambda: store.events.query(limit=100),
            "places": store.events.places,
        }
        result: dict[str, Any] = {"events": n, "seed_s": seed_s}
        for name, run in queries.items():
            run()
            ms = []
            for _ in range(runs * 5):
                t = time.monotonic()
                run()
                ms.append((time.monotonic() - t) * 1000)
            result[name] = spread(ms)
        store.close()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    started = time.monotonic()
    stack = Stack(new_workdir("naila-bench-media-"), progress=lambda s: print(s.replace("[demo]", "[bench]")))
    try:
        stack.start_mosquitto()
        mqtt = load(MqttSettings, mqtt_host=stack.mqtt_host, mqtt_port=stack.mqtt_port)
        sources = asyncio.run(sources_bench(args, mqtt))
    finally:
        with contextlib.suppress(Exception):
            stack.stop()
    events = events_bench(args.events, args.runs)
    result = {
        "clock": "time.monotonic",
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "load_average_1m": os.getloadavg()[0],
        "image": "bus.jpg 810x1080",
        "question_to_visual_context_ms": sources,
        "events_query_ms": events,
        "total_s": time.monotonic() - started,
    }
    print("| source | p50 (ms) | p95 (ms) |")
    print("|---|---|---|")
    for name, s in sources.items():
        print(f"| {name} | {s['p50']:.0f} | {s['p95']:.0f} |")
    print(f"\n| events query at {args.events} events | p50 (ms) | p95 (ms) |")
    print("|---|---|---|")
    for name in ("zone_one_hour", "last_of_camera", "newest_100", "places"):
        print(f"| {name} | {events[name]['p50']:.2f} | {events[name]['p95']:.2f} |")
    print(f"(seeded in {events['seed_s']:.1f} s; whole run {result['total_s']:.0f} s)")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "media.json").write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out / 'media.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
