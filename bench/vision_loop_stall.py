"""Event-loop stall caused by the hub's vision pipeline (issue 18, M5).

Cameras feed ``VisionService.consume`` generated 1280x720 yuv420p frames (as aiortc's decoder
hands them over) at 15 fps each, the ingress cap, with a square moving across a textured scene
on every frame (the gate's worst case: motion all the time, every Nth frame JPEG-encoded). The
uplink is replaced by one that is always connected and keeps what it is given (no AI server, no
network: only the hub's own per-frame work is measured). Meanwhile a ticker task asks for a
wake-up every 1 ms and records how late each one is: the largest and p99 lateness is how long
VAD and audio of every other device would have waited. On a busy machine other processes add
lateness too: ``--cameras 0`` measures that floor, and ``loop_thread_cpu_s`` (CPU time of the
loop's own thread) and ``callback_max_ms`` (the longest single callback the loop ran, timed
by wrapping ``asyncio.Handle._run``: with the gate inline, that is a frame's gate + encode) are the
parts that do not depend on them.

Usage: python bench/vision_loop_stall.py [--cameras 2] [--seconds 10]; prints one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from typing import Any

import cv2
import numpy as np
from aiortc.mediastreams import MediaStreamError
from av import VideoFrame

from hub.metrics import HubMetrics
from hub.vision.service import VisionService
from shared.config import HubSettings, VideoSettings, load
from shared.contract import pb

W, H, FPS = 1280, 720, 15.0


class FakeCamera:
    """A track like aiortc's: ``recv`` waits for the next capture time and returns the decoded frame."""

    kind = "video"

    def __init__(self, seconds: float, seed: int) -> None:
        rng = np.random.default_rng(seed)
        base = np.asarray(cv2.GaussianBlur(rng.integers(40, 200, (H, W, 3), np.uint8), (31, 31), 0), np.uint8)
        # A few positions of a moving square, converted once (the decode is aiortc's thread's cost).
        self.frames = []
        for i in range(30):
            img = base.copy()
            x = 40 * i
            img[200:400, x : x + 200] = (0, 230, 255)
            self.frames.append(VideoFrame.from_ndarray(img, format="bgr24").reformat(format="yuv420p"))
        self.left = int(seconds * FPS)
        self.n = 0
        self.started = time.perf_counter()

    async def recv(self) -> VideoFrame:
        if self.n >= self.left:
            raise MediaStreamError
        due = self.started + self.n / FPS
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        frame = self.frames[self.n % len(self.frames)]
        self.n += 1
        return frame


class KeepingUplink:
    connected = True
    queue_depth = 0
    inflight = 0

    def __init__(self) -> None:
        self.frames = 0

    def start(self) -> None:
        pass

    def submit(self, frame: pb.VisionFrame) -> None:
        self.frames += 1

    async def stop(self) -> None:
        pass


class CallbackTimer:
    """Times every callback the event loop runs (asyncio.Handle._run): the stalls the loop causes itself."""

    def __init__(self) -> None:
        self.durations: list[float] = []
        self._original = asyncio.Handle._run

    def __enter__(self) -> CallbackTimer:
        original, durations = self._original, self.durations

        def timed(handle: asyncio.Handle) -> None:
            started = time.perf_counter()
            original(handle)
            durations.append(time.perf_counter() - started)

        asyncio.Handle._run = timed  # type: ignore[method-assign,assignment]
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.Handle._run = self._original  # type: ignore[method-assign]


async def run(cameras: int, seconds: float) -> dict[str, Any]:
    metrics = HubMetrics()
    vision = VisionService(load(HubSettings, hub_ai_server="127.0.0.1:9"), load(VideoSettings), metrics)
    await vision.uplink.stop()
    uplink = KeepingUplink()
    vision.uplink = uplink  # type: ignore[assignment]  # the measured work ends where the network starts
    lateness: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        while not done.is_set():
            asked = time.perf_counter()
            await asyncio.sleep(0.001)
            lateness.append(time.perf_counter() - asked - 0.001)

    feeds = [FakeCamera(seconds, i) for i in range(cameras)]  # built before anything is timed
    for feed in feeds:
        feed.started = time.perf_counter()
    tick = asyncio.create_task(ticker())
    started, loop_cpu = time.process_time(), time.thread_time()
    with CallbackTimer() as callbacks:
        if feeds:
            await asyncio.gather(*(vision.consume(f"cam-{i}", feed) for i, feed in enumerate(feeds)))
        else:  # the idle loop: what the machine itself adds to the lateness
            await asyncio.sleep(seconds)
    cpu, loop_cpu = time.process_time() - started, time.thread_time() - loop_cpu
    done.set()
    await tick
    await vision.stop()
    lateness.sort()
    durations = sorted(callbacks.durations)
    return {
        "cameras": cameras, "fps": FPS, "size": f"{W}x{H}", "seconds": seconds,
        "frames_in": metrics.vision_frames_in, "frames_sent": uplink.frames,
        "dropped": dict(metrics.vision_frames_dropped),
        "loop_stall_max_ms": round(lateness[-1] * 1000, 2),
        "loop_stall_p99_ms": round(lateness[int(0.99 * (len(lateness) - 1))] * 1000, 2),
        "loop_stall_median_ms": round(statistics.median(lateness) * 1000, 3),
        "callback_max_ms": round(durations[-1] * 1000, 2),
        "callback_p99_ms": round(durations[int(0.99 * (len(durations) - 1))] * 1000, 3),
        "cpu_s": round(cpu, 2),
        # CPU of the event loop's thread alone (the ticker's share included: compare with --cameras 0).
        "loop_thread_cpu_s": round(loop_cpu, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cameras", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args.cameras, args.seconds))))


if __name__ == "__main__":
    main()
