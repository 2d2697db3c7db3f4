"""Vision: the hub's motion gate (cost per camera frame, what share of a mostly static scene reaches
the AI server, cameras per core) and YOLO at the AI server (latency per frame and per batch, and
the YOLO calls the gate avoids).

A generated 640x480 sequence (a textured room with sensor noise, slow light drift and mains
flicker; a person-sized figure walks across for a few seconds in the middle) is turned into
yuv420p frames as aiortc's VP8 decoder hands them over. Decoding is excluded from the gate
figures (aiortc decodes in its own thread); the VP8 decode of the same frames is measured
separately for context. The frames then run through the hub's own code:

- gate: ``CameraFeed.decide`` = reduce to 160x120 grey (libswscale) + blur + background diff +
  the every-Nth / refresh bookkeeping, i.e. everything the event loop does for every frame;
- encode: ``CameraFeed.build`` = scale into 320x240 + JPEG + the VisionFrame, for the frames
  the gate chose (forwarded motion frames and refreshes).

Forwarded/total comes from one pass at the camera's frame rate on a simulated clock, with the
hub's defaults (VIDEO_MOTION_THRESHOLD 25, every 3rd motion frame, HUB_VISION_MIN_MOTION_AREA
0.5%, HUB_VISION_REFRESH_S 10 s). Cameras per core at 5 fps = 1 s / (5 x gate cost + chosen
frames per second x encode cost), for this sequence and for a camera that sees motion all the time.

YOLO: the AI server's own YoloDetector (VISION_MODEL, default the shipped YOLOv8 checkpoint; VISION_DEVICE,
VISION_IMGSZ) on ultralytics' bus.jpg and zidane.jpg scaled to the hub's frame size, one predict call
per batch of 1, 2, 4 and 8 frames. Calls avoided = the frames the gate did not forward (refreshes
run no detection): YOLO work per camera-minute with the gate and without it.

Clock: time.perf_counter for every duration (one monotonic clock); the pass uses a simulated clock.
Usage: python bench/vision.py [--frames 300] [--fps 10] [--passes 10] [--yolo-repeats 6] [--no-yolo];
writes bench/results/vision.json.
"""

from __future__ import annotations

import argparse
import fractions
import itertools
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import av  # noqa: E402
import cv2  # noqa: E402
import numpy as np  # noqa: E402
from av import VideoFrame  # noqa: E402

from bench.stats import pct  # noqa: E402
from hub.metrics import HubMetrics  # noqa: E402
from hub.vision.camera import CameraFeed, Send  # noqa: E402
from hub.vision.frames import encode_jpeg, to_gray  # noqa: E402
from hub.vision.motion import MotionGate  # noqa: E402
from shared.config import HubSettings, VideoSettings, load  # noqa: E402

W, H = 640, 480


def room(rng: np.random.Generator) -> np.ndarray:
    """A still, textured BGR room: gradient walls, furniture-like blocks, fine texture."""
    img = np.zeros((H, W, 3), np.float32)
    img[..., 0] = np.linspace(40, 170, W)[None, :]
    img[..., 1] = np.linspace(60, 150, H)[:, None]
    img[..., 2] = 110
    for _ in range(12):
        x, y = int(rng.integers(0, W - 120)), int(rng.integers(0, H - 100))
        w, h = int(rng.integers(30, 120)), int(rng.integers(30, 100))
        img[y : y + h, x : x + w] = rng.integers(20, 235, 3)
    img += rng.normal(0, 6, (H, W, 1))  # texture
    return img


def sequence(frames: int, fps: int, motion_s: tuple[float, float], seed: int = 3) -> list[np.ndarray]:
    """BGR frames: noise, flicker and drift everywhere; a walking figure during ``motion_s``."""
    rng = np.random.default_rng(seed)
    base = room(rng)
    out = []
    for i in range(frames):
        t = i / fps
        img = base + 0.3 * i / fps * 2  # daylight rising slowly (0.6 levels/s)
        img = img + 4 * np.sin(2 * np.pi * t * 0.7)  # auto-exposure hunting / flicker, +-4 levels
        if motion_s[0] <= t < motion_s[1]:
            p = (t - motion_s[0]) / (motion_s[1] - motion_s[0])
            x = int(40 + p * (W - 160))
            y = 140 + int(10 * np.sin(t * 6))  # a gait bob
            img[y : y + 260, x : x + 70] = (60, 50, 140)  # body
            img[y - 40 : y, x + 15 : x + 55] = (120, 150, 200)  # head
        img = img + rng.normal(0, 2.0, img.shape[:2])[..., None]  # sensor noise
        out.append(np.clip(img, 0, 255).astype(np.uint8))
    return out


def yuv_frames(bgr: list[np.ndarray]) -> list[VideoFrame]:
    return [VideoFrame.from_ndarray(f, format="bgr24").reformat(format="yuv420p") for f in bgr]


def vp8_decode_ms(frames: list[VideoFrame], fps: int) -> list[float]:
    """Context only: libvpx decode per frame of the same sequence at WEBRTC_VIDEO_BITRATE (1 Mbit/s)."""
    enc = av.CodecContext.create("libvpx", "w")
    enc.width, enc.height, enc.pix_fmt = W, H, "yuv420p"
    enc.time_base = fractions.Fraction(1, fps)
    enc.bit_rate = 1_000_000
    enc.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}
    packets = []
    for i, f in enumerate(frames):
        f.pts = i
        packets += enc.encode(f)
    packets += enc.encode(None)
    dec = av.CodecContext.create("libvpx", "r")
    times = []
    for p in packets:
        t0 = time.perf_counter()
        dec.decode(p)
        times.append((time.perf_counter() - t0) * 1000)
    return times


def make_feed(hub: HubSettings, video: VideoSettings, start: float) -> CameraFeed:
    gate = MotionGate(video.video_motion_threshold, hub.hub_vision_min_motion_area, video.video_process_every_n_frames)
    return CameraFeed("bench-cam", gate, itertools.count(1), HubMetrics(), refresh_s=hub.hub_vision_refresh_s,
                      frame_box=hub.vision_frame_size, jpeg_quality=hub.hub_vision_jpeg_quality, started_at=start)


def gate_pass(frames: list[VideoFrame], fps: int, hub: HubSettings, video: VideoSettings) -> dict[str, Any]:
    """One pass on a simulated clock: what the gate chooses, and when."""
    feed = make_feed(hub, video, 0.0)
    chosen: list[dict[str, Any]] = []
    for i, f in enumerate(frames):
        send = feed.decide(f, i / fps)
        if send is not None:
            chosen.append({"frame": i, "t_s": round(i / fps, 2), "refresh": send.refresh,
                           "motion_score": round(send.score, 4)})
    st = feed.stats
    return {"frames": st.frames_in, "motion_frames": st.motion_frames, "forwarded": st.forwarded,
            "refreshes": st.refreshes, "sent": st.forwarded + st.refreshes,
            "sent_per_total": round((st.forwarded + st.refreshes) / st.frames_in, 4), "chosen": chosen}


def timed(fn: Any, items: list[Any]) -> list[float]:
    """Per-call durations, µs."""
    out = []
    for x in items:
        t0 = time.perf_counter()
        fn(x)
        out.append((time.perf_counter() - t0) * 1e6)
    return out


def summary_us(samples: list[float]) -> dict[str, float]:
    return {"mean_us": round(statistics.fmean(samples), 1), "p50_us": round(pct(samples, 0.5), 1),
            "p95_us": round(pct(samples, 0.95), 1), "p99_us": round(pct(samples, 0.99), 1), "n": len(samples)}


def bench(args: argparse.Namespace) -> dict[str, Any]:
    hub = load(HubSettings)
    video = load(VideoSettings)
    motion_s = (args.frames / args.fps * 0.45, args.frames / args.fps * 0.45 + args.motion_s)
    t0 = time.perf_counter()
    frames = yuv_frames(sequence(args.frames, args.fps, motion_s))
    print(f"generated {len(frames)} frames {W}x{H} in {time.perf_counter() - t0:.1f}s; "
          f"motion {motion_s[0]:.1f}-{motion_s[1]:.1f}s at {args.fps} fps", flush=True)

    decision = gate_pass(frames, args.fps, hub, video)

    # Timing: the same sequence several times; each pass a fresh feed on a simulated clock.
    gate_us: list[float] = []
    reduce_us: list[float] = []
    diff_us: list[float] = []
    for p in range(args.passes):
        feed = make_feed(hub, video, 0.0)
        clock = iter(i / args.fps for i in itertools.count())
        gate_us += timed(lambda f, feed=feed, clock=clock: feed.decide(f, next(clock)), frames)
        reduce_us += timed(to_gray, frames)
        g = MotionGate(video.video_motion_threshold, hub.hub_vision_min_motion_area,
                       video.video_process_every_n_frames)
        grays = [to_gray(f) for f in frames]
        diff_us += timed(g.feed, grays)
        if p == 0:
            print(f"pass 1: gate {statistics.fmean(gate_us):.0f} µs/frame", flush=True)
    sent_idx = [c["frame"] for c in decision["chosen"]] or [0]
    to_encode = [frames[i] for i in sent_idx] * max(1, 200 // len(sent_idx))
    feed = make_feed(hub, video, 0.0)
    build_us = timed(lambda f: feed.build(f, Send(False, 0.01), 0), to_encode)
    jpeg_bytes = [len(encode_jpeg(frames[i], hub.vision_frame_size, hub.hub_vision_jpeg_quality).data)
                  for i in sent_idx]
    decode_ms = vp8_decode_ms(frames, args.fps)

    gate_s = statistics.fmean(gate_us) / 1e6
    build_s = statistics.fmean(build_us) / 1e6
    fps5 = 5.0
    every_n = video.video_process_every_n_frames
    # Chosen frames per second at 5 fps: this sequence's share; a camera with motion all the time: 1/N.
    share_seq = decision["sent_per_total"]
    cost_seq = fps5 * gate_s + fps5 * share_seq * build_s
    cost_motion = fps5 * gate_s + fps5 / every_n * build_s
    report = {
        "benchmark": "vision",
        "host": {"cpus": os.cpu_count(), "machine": platform.machine(), "python": platform.python_version(),
                 "opencv": cv2.__version__, "pyav": av.__version__,
                 "note": "single thread on a shared 2-core box; other work may run beside it"},
        "clock": "time.perf_counter (durations); simulated camera clock for the gate pass",
        "settings": {"input": f"{W}x{H} yuv420p", "fps": args.fps, "frames": args.frames,
                     "motion_s": [round(x, 2) for x in motion_s],
                     "video_motion_threshold": video.video_motion_threshold,
                     "video_process_every_n_frames": every_n,
                     "hub_vision_min_motion_area": hub.hub_vision_min_motion_area,
                     "hub_vision_refresh_s": hub.hub_vision_refresh_s,
                     "hub_vision_frame_size": hub.hub_vision_frame_size,
                     "hub_vision_jpeg_quality": hub.hub_vision_jpeg_quality},
        "gate_per_frame": {**summary_us(gate_us), "frames_per_s": round(1 / gate_s)},
        "gate_parts": {"reduce_to_160x120_gray": summary_us(reduce_us), "blur_diff_threshold": summary_us(diff_us)},
        "encode_per_chosen_frame": {**summary_us(build_us), "frames_per_s": round(1 / build_s),
                                    "jpeg_bytes_mean": round(statistics.fmean(jpeg_bytes))},
        "vp8_decode_context_ms": {"mean": round(statistics.fmean(decode_ms), 2),
                                  "p95": round(pct(decode_ms, 0.95), 2),
                                  "note": "aiortc's decoder thread, not the gate; 1 Mbit/s VP8"},
        "sequence": {k: v for k, v in decision.items() if k != "chosen"},
        "chosen_frames": decision["chosen"],
        "cameras_per_core_at_5fps": {
            "this_sequence": int(1 / cost_seq),
            "motion_all_the_time": int(1 / cost_motion),
            "gate_only": int(1 / (fps5 * gate_s)),
            "with_vp8_decode_motion_all_the_time": int(
                1 / (cost_motion + fps5 * statistics.fmean(decode_ms) / 1000)),
        },
    }
    return report


def yolo_bench(repeats: int, seq: dict[str, Any], fps: int) -> dict[str, Any]:
    """The AI server's detector on real photos at the hub's frame size, batches of 1-8."""
    os.environ.setdefault("YOLO_OFFLINE", "1")
    import importlib.util

    from ai_server.vision.detector import YoloDetector, resolve_weights
    from shared.config import AIServerSettings

    ai = load(AIServerSettings)
    hub = load(HubSettings)
    w, h = hub.vision_frame_size
    spec = importlib.util.find_spec("ultralytics")
    assert spec is not None and spec.submodule_search_locations
    assets = Path(next(iter(spec.submodule_search_locations))) / "assets"
    photos = []
    for name in ("bus.jpg", "zidane.jpg"):
        img = cv2.imread(str(assets / name))
        assert img is not None, name
        photos.append(np.ascontiguousarray(cv2.resize(img, (w, h)), dtype=np.uint8))
    detector = YoloDetector(resolve_weights(ai.vision_model), device=ai.vision_device, imgsz=ai.vision_imgsz,
                            confidence=ai.vision_confidence, labels=ai.vision_labels)
    t0 = time.perf_counter()
    detector.load()
    load_s = time.perf_counter() - t0
    batches = []
    for n in (1, 2, 4, 8):
        frames = [photos[i % 2] for i in range(n)]
        detector.detect_batch(frames)  # untimed: first call of this batch shape
        ms = []
        for _ in range(repeats):
            t = time.perf_counter()
            detector.detect_batch(frames)
            ms.append((time.perf_counter() - t) * 1000)
        batches.append({"batch": n, "p50_ms": round(pct(ms, 0.5), 1), "p95_ms": round(pct(ms, 0.95), 1),
                        "per_frame_ms": round(pct(ms, 0.5) / n, 1)})
    per_frame_s = batches[0]["p50_ms"] / 1000
    frames, analysed = seq["frames"], seq["forwarded"]
    minute_frames = 60 * fps
    return {
        "model": detector.weights.name, "device": detector.device, "imgsz": detector.imgsz,
        "frame_size": f"{w}x{h}", "load_s": round(load_s, 1), "repeats": repeats, "batches": batches,
        "gate_avoids": {
            "frames": frames, "yolo_frames_with_gate": analysed,
            "avoided_pct": round(100 * (1 - analysed / frames), 1),
            "yolo_s_per_camera_minute_with_gate": round(minute_frames * analysed / frames * per_frame_s, 1),
            "yolo_s_per_camera_minute_without_gate": round(minute_frames * per_frame_s, 1),
        },
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=300)
    p.add_argument("--fps", type=int, default=10, help="camera frame rate of the generated sequence")
    p.add_argument("--motion-s", type=float, default=4.0, help="how long the figure walks through, s")
    p.add_argument("--passes", type=int, default=10, help="timed passes over the sequence")
    p.add_argument("--yolo-repeats", type=int, default=6, help="timed YOLO calls per batch size")
    p.add_argument("--no-yolo", action="store_true", help="the gate only (no torch import)")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "vision.json"))
    args = p.parse_args()
    t0 = time.perf_counter()
    report = bench(args)
    if not args.no_yolo:
        report["yolo"] = yolo_bench(args.yolo_repeats, report["sequence"], args.fps)
    report["runtime_s"] = round(time.perf_counter() - t0, 1)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    g, e, s = report["gate_per_frame"], report["encode_per_chosen_frame"], report["sequence"]
    parts = report["gate_parts"]
    c = report["cameras_per_core_at_5fps"]
    d = report["vp8_decode_context_ms"]
    print()
    print(f"gate (reduce + diff + bookkeeping), 640x480 in: mean {g['mean_us']} µs, p50 {g['p50_us']}, "
          f"p95 {g['p95_us']}, p99 {g['p99_us']} µs -> {g['frames_per_s']} frames/s on one core")
    print(f"  of which reduce to 160x120 grey {parts['reduce_to_160x120_gray']['mean_us']} µs, "
          f"blur + diff {parts['blur_diff_threshold']['mean_us']} µs")
    print(f"encode of a chosen frame (320x240 JPEG q{report['settings']['hub_vision_jpeg_quality']}): "
          f"mean {e['mean_us']} µs, p95 {e['p95_us']} µs, {e['jpeg_bytes_mean']} bytes")
    print(f"sequence: {s['frames']} frames, {s['motion_frames']} with motion, {s['forwarded']} forwarded + "
          f"{s['refreshes']} refreshes = {s['sent']} sent ({100 * s['sent_per_total']:.1f}%)")
    print(f"VP8 decode (context, not gated): mean {d['mean']} ms, p95 {d['p95']} ms per frame")
    print(f"cameras per core at 5 fps: {c['this_sequence']} (this sequence), {c['motion_all_the_time']} "
          f"(motion all the time), {c['with_vp8_decode_motion_all_the_time']} (adding VP8 decode)")
    if "yolo" in report:
        y = report["yolo"]
        print(f"YOLO {y['model']} on {y['device']}, imgsz {y['imgsz']}, {y['frame_size']} frames "
              f"(load {y['load_s']} s):")
        for b in y["batches"]:
            print(f"  batch {b['batch']}: p50 {b['p50_ms']} ms, p95 {b['p95_ms']} ms per call; "
                  f"{b['per_frame_ms']} ms per frame")
        a = y["gate_avoids"]
        print(f"gate avoids {a['avoided_pct']}% of YOLO calls on the sequence ({a['yolo_frames_with_gate']} of "
              f"{a['frames']} frames analysed): {a['yolo_s_per_camera_minute_with_gate']} s of YOLO per camera-minute "
              f"instead of {a['yolo_s_per_camera_minute_without_gate']} s")
    print(f"runtime {report['runtime_s']} s; wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
