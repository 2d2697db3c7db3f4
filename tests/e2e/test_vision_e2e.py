"""Cameras through the whole stack: device agent (file camera) → WebRTC → hub motion gate →
AnalyzeFrames → YOLO at the AI server → alerts on a real mosquitto, and a spoken visual question.

Real stack as processes (mosquitto, the AI server with the shipped models and the shipped YOLOv8
checkpoint, the hub). One device films a still photo (ultralytics' bus.jpg): the hub only sends
its no-motion refreshes and the AI server runs no YOLO on them, until someone asks "what do you
see?", which looks once. Another device films a person walking (a video made here from
zidane.jpg's person) through the USB webcam's code (DEVICE_CAMERA=v4l2 reading the clip as the
raw MJPEG stream a webcam sends, issue 22): motion reaches YOLO, the track enters the camera's zone and exactly one
``person_detected`` alert goes out. Then that camera disconnects mid-stream and the hub lets go
of it while the still camera carries on.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiomqtt
import av
import cv2
import grpc
import numpy as np
import pytest

from naila.harness import start_device
from naila.stack import Stack, hub_read
from shared.contract import pb, pb_grpc
from shared.mqtt import topics

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
STACK_VISION = True  # tests/e2e/conftest.py: this module's stack runs the vision pipeline


def _ultralytics_assets() -> Path:
    # Found without importing ultralytics: the import costs seconds and patches Pillow process-wide.
    spec = importlib.util.find_spec("ultralytics")
    assert spec is not None and spec.submodule_search_locations, "ultralytics is not installed (scripts/setup.sh)"
    return Path(next(iter(spec.submodule_search_locations))) / "assets"


ASSETS = _ultralytics_assets()


def walking_video(path: Path, frames: int = 60, fps: int = 10) -> Path:
    """A raw MJPEG stream (640x480, as a USB webcam sends it) of zidane.jpg's right-hand person crossing
    a plain room, left to right."""
    src = cv2.imread(str(ASSETS / "zidane.jpg"))
    assert src is not None
    person = cv2.resize(src[40:720, 700:1230], (150, 190))
    with av.open(str(path), "w", format="mjpeg") as out:
        stream = out.add_stream("mjpeg", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 640, 480, "yuvj420p"
        for i in range(frames):
            img = np.full((480, 640, 3), (96, 112, 120), np.uint8)
            x = 20 + i * (640 - 150 - 40) // frames
            img[480 - 190 - 20:480 - 20, x:x + 150] = person
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="bgr24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


async def ai_counters(stack: Stack) -> dict[str, int]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{stack.ai_port}") as ch:
        status = await pb_grpc.NailaAIStub(ch).GetStatus(pb.StatusRequest(), timeout=5)
    return dict(status.counters)


def hub_cameras(stack: Stack) -> dict[str, dict[str, Any]]:
    vision = json.loads(hub_read(stack.hub_url, "/health?detail=1")).get("vision") or {}
    return {c["device_id"]: c for c in vision.get("cameras", [])}


async def until(check: Callable[[], Any], within_s: float, what: str) -> None:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if check():
            return
        await asyncio.sleep(0.25)
    raise AssertionError(f"timed out after {within_s:.0f}s waiting for {what}")


async def test_a_still_camera_costs_no_yolo_until_asked_and_a_walker_alerts_once(
    stack: Stack, tmp_path: Path
) -> None:
    broker = (stack.mqtt_host, stack.mqtt_port)  # the devices' MQTT status gives the AI server their rooms
    still = await start_device("vis-still", stack.hub_url, mqtt=broker, room="hall",
                               camera_file=str(ASSETS / "bus.jpg"))
    try:
        await until(lambda: hub_cameras(stack).get("vis-still", {}).get("refreshes", 0) >= 1, 30,
                    "the still camera's first refresh at the hub")
        await asyncio.sleep(3.0)  # a few seconds of a still scene
        cam = hub_cameras(stack)["vis-still"]
        assert cam["forwarded"] == 0 and cam["motion_frames"] == 0, cam  # nothing but refreshes went upstream
        before = await ai_counters(stack)
        assert before.get("vision_refreshes", 0) >= 1, before
        assert before.get("vision_yolo_calls", 0) == 0, before  # a static scene costs no YOLO call

        turns = len(still.turns())
        still.say("What do you see?")
        turn = await still.wait_turn(turns, within_s=90)
        assert "see" in turn["transcript"].lower(), turn
        after = await ai_counters(stack)
        assert after.get("visual_questions", 0) - before.get("visual_questions", 0) == 1, after
        assert after.get("vision_looks", 0) - before.get("vision_looks", 0) == 1, after  # looked once, on demand

        async with aiomqtt.Client(stack.mqtt_host, stack.mqtt_port) as mqtt:
            await mqtt.subscribe(topics.ALERTS_ALL, qos=1)
            walker = await start_device("vis-walk", stack.hub_url, mqtt=broker, room="porch",
                                        camera_file=str(walking_video(tmp_path / "walk.mjpeg")), camera="v4l2")
            try:
                alerts = []

                async def collect() -> None:
                    async for msg in mqtt.messages:
                        alert = json.loads(bytes(msg.payload))
                        if alert.get("source_device") == "vis-walk":
                            alerts.append(alert)

                reader = asyncio.create_task(collect())
                await until(lambda: bool(alerts), 90, "a person_detected alert from the walking camera")
                await asyncio.sleep(5.0)  # the walker keeps walking (the clip loops): no second alert
                reader.cancel()
                assert len(alerts) == 1, alerts
                assert alerts[0]["alert_type"] == "person_detected" and alerts[0]["zone"] == "porch", alerts
                assert alerts[0]["snapshot_available"] is True, alerts
                walking = hub_cameras(stack)["vis-walk"]
                assert walking["motion_frames"] > 0 and walking["forwarded"] > 0, walking
                counters = await ai_counters(stack)
                assert counters.get("vision_yolo_calls", 0) > 0, counters
            finally:
                await walker.stop()  # the camera goes away mid-stream

        await until(lambda: "vis-walk" not in hub_cameras(stack), 30, "the hub to drop the gone camera")
        refreshed = hub_cameras(stack)["vis-still"]["refreshes"]
        await until(lambda: hub_cameras(stack)["vis-still"]["refreshes"] > refreshed, 30,
                    "the still camera to keep refreshing")
    finally:
        await still.stop()
