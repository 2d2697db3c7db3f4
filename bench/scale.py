"""Scale: 100+ simulated devices over 2 hubs and 2 AI servers on one box (issue 21).

Processes: two AI servers (``--serve-ai``: the real gRPC service, conversation pipeline and
store, with fast stand-in STT/LLM/TTS from ai_server/fakes.py, so the load is the system's,
not the models'), two hubs (``--serve-hub``: real hubs with their defaults, HUB_AI_SERVER
listing both AI servers, listening mode ``always``), and this load generator.

Devices, two kinds, clearly apart in the JSON:
- ``real``: aiortc peers in this process (bench/hub_capacity.py's devices), WebRTC end to end;
- ``sim``: lightweight devices simulated *inside* each hub process: a real DeviceSession per
  device (VAD, end-of-turn model, arbitration, AI-server pool, gRPC, reply routing into its TTS
  track) fed its 16 kHz frames every 20 ms on the hub's loop, without the WebRTC transport
  (about 0.05 core per aiortc stream would not fit 100 devices on 2 cores).
Every device speaks its own espeak-ng sentences with its own voice and seeded timing, with
8-20 s between utterances (a busy household; bench/hub_capacity.py uses 2-6 s).

Per step (devices in total): turns completed, turns lost (an error instead of a reply), hub
END -> first reply audio p50/p95 (the hub's own per-turn timing), hub CPU. Then one AI server
is killed (SIGKILL): how long until both hubs' pools have moved its devices, turns lost, and
how soon each moved device had its next turn answered.

    python bench/scale.py [--steps 20,60,100,120] [--real-per-hub 2] [--seconds 20]

Prints a summary and writes bench/results/scale.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402

from bench import stats  # noqa: E402
from bench.hub_capacity import Device, device_script, free_port, loopback_only  # noqa: E402

PAUSE_S = (8.0, 20.0)
TICK_S = 0.02


def pct(xs: list[float], p: float) -> float | None:
    return round(stats.pct(xs, p / 100), 1) if xs else None


# ---------------------------------------------------------------- an AI server with fast stand-ins


def serve_ai(args: argparse.Namespace) -> int:
    from ai_server.assembly import start_server
    from ai_server.fakes import FakeLLM, FakeSTT, FakeTTS
    from shared.config import AIServerSettings, MediaSettings, load

    async def main() -> None:
        settings = load(AIServerSettings, ai_mqtt=False, vision_enabled=False, ai_media_dir=args.data)
        server = await start_server(
            settings,
            stt=FakeSTT("what is the weather like today", delay_s=0.05),
            llm=FakeLLM(f"server {args.name} says it is sunny.", piece_delay_s=0.02),
            tts=FakeTTS(),
            host="127.0.0.1",
            port=args.port,
            metrics_port=0,
            warm=False,
            mqtt=None,
            media=load(MediaSettings),
        )
        print(f"ready {server.port}", flush=True)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        await server.stop(grace=0)

    asyncio.run(main())
    return 0


# ---------------------------------------------------------------- a hub with simulated devices


def serve_hub(args: argparse.Namespace) -> int:
    import logging

    import numpy as np
    from aiohttp import web
    from aiortc import RTCPeerConnection

    from hub.server import Hub
    from hub.session import DeviceSession
    from hub.turns import TurnRecord
    from shared.audio import resample
    from shared.config import HubSettings, WebRTCSettings, load

    logging.basicConfig(level=logging.WARNING)
    loopback_only()
    turns: list[dict[str, Any]] = []
    sims: list[tuple[DeviceSession, np.ndarray]] = []
    late = [0]

    async def main() -> None:
        settings = load(
            HubSettings,
            hub_host="127.0.0.1",
            hub_ai_server=args.ai,
            hub_id=args.name,
            hub_mqtt=False,
            hub_allow_unauthenticated=True,
            hub_connect_per_min=60_000,
            hub_listening_mode="always",
        )
        hub = Hub(settings, WebRTCSettings(webrtc_ice_servers=[]), port=args.port)

        def on_turn(t: TurnRecord) -> None:
            turns.append(
                {
                    "device": t.device_id,
                    "at": time.monotonic(),
                    "error": t.error_code,
                    "first_audio_ms": t.timing.get("hub_end_to_first_audio_ms"),
                    "server": hub.link.server_of(t.device_id) if hasattr(hub.link, "server_of") else "",
                }
            )

        hub.turns.add_listener(on_turn)

        async def drive() -> None:
            """Every 20 ms, one frame into each simulated session and one frame out of its TTS track."""
            start, k = time.monotonic(), 0
            while True:
                k += 1
                wait = start + k * TICK_S - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                elif wait < -0.04:
                    late[0] += 1
                now = time.monotonic()
                for session, audio in sims:
                    pos = (k * 320) % (audio.size - 320)
                    session.last_media_at = now
                    session.process_frame(audio[pos : pos + 320], now)
                    session.tts.next_frame()

        make_app = hub.make_app

        def app_with_bench() -> web.Application:
            app = make_app()

            async def bench(request: web.Request) -> web.Response:
                pool = hub.link
                return web.json_response(
                    {
                        "cpu_s": time.process_time(),
                        "wall_s": time.monotonic(),
                        "turns": turns,
                        "pool": pool.details() if hasattr(pool, "details") else [],
                        "lost_turns": getattr(pool, "lost_turns", None),
                        "failovers": getattr(pool, "failovers", None),
                        "frames_dropped": dict(hub.metrics.frames_dropped),
                        "sim_devices": len(sims),
                        "sim_late_ticks": late[0],
                        "arbitration": dict(hub.metrics.arbitration),
                    }
                )

            async def add(request: web.Request) -> web.Response:
                first, count = int(request.query["first"]), int(request.query["count"])
                for i in range(first, first + count):
                    script, _ = device_script(i, args.seed, seconds=60.0, pause_s=PAUSE_S)
                    device_id = f"{args.name}-sim-{i}"
                    session = DeviceSession(device_id, RTCPeerConnection(), hub)
                    hub.sessions[device_id] = session
                    sims.append((session, resample(script, 48_000, 16_000)))
                return web.json_response({"sim_devices": len(sims)})

            app.router.add_get("/bench", bench)
            app.router.add_post("/bench/sim", add)
            return app

        hub.make_app = app_with_bench  # type: ignore[method-assign]
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await hub.start()
        driver = asyncio.create_task(drive())
        await stop.wait()
        driver.cancel()
        await hub.stop()

    asyncio.run(main())
    return 0


# ---------------------------------------------------------------- the load generator


async def start_ai(name: str, data: str) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    proc = subprocess.Popen(  # noqa: ASYNC220 - setup, before any load
        [sys.executable, __file__, "--serve-ai", "--name", name, "--port", str(port), "--data", data],
        cwd=ROOT,
        stdout=subprocess.PIPE,
    )
    assert proc.stdout is not None
    line = await asyncio.get_running_loop().run_in_executor(None, proc.stdout.readline)
    if not line.startswith(b"ready"):
        raise RuntimeError(f"AI server {name} did not start")
    return proc, port


async def get(http: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    async with http.get(url) as r:
        return dict(await r.json())


async def until_up(http: aiohttp.ClientSession, url: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with contextlib.suppress(aiohttp.ClientError):
            async with http.get(f"{url}/health") as r:
                if r.status == 200:
                    return
        await asyncio.sleep(0.2)
    raise RuntimeError(f"{url} did not come up")


def window(turns: list[dict[str, Any]], t0: float, t1: float) -> list[dict[str, Any]]:
    return [t for t in turns if t0 <= t["at"] < t1]


def summarize(turns: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [t for t in turns if t["error"] in ("NONE", "") and t["first_audio_ms"] is not None]
    lost = [t for t in turns if t["error"] not in ("NONE", "")]
    lat = [float(t["first_audio_ms"]) for t in ok]
    return {
        "turns_completed": len(ok),
        "turns_lost": len(lost),
        "lost_errors": sorted({f"{t['error']}" for t in lost}),
        "end_to_first_audio_ms": {"p50": pct(lat, 50), "p95": pct(lat, 95), "max": max(lat) if lat else None},
    }


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    loopback_only()
    steps = [int(x) for x in args.steps.split(",")]
    tmp = tempfile.TemporaryDirectory(prefix="naila-scale-")
    procs: list[subprocess.Popen[bytes]] = []
    devices: list[Device] = []
    report: dict[str, Any] = {"steps": []}
    try:
        ai_a, port_a = await start_ai("A", f"{tmp.name}/a")
        ai_b, port_b = await start_ai("B", f"{tmp.name}/b")
        procs += [ai_a, ai_b]
        targets = f"127.0.0.1:{port_a},127.0.0.1:{port_b}"
        hubs = []
        for name in ("h1", "h2"):
            port = free_port()
            procs.append(
                subprocess.Popen(  # noqa: ASYNC220 - setup, before any load
                    [
                        sys.executable,
                        __file__,
                        "--serve-hub",
                        "--name",
                        name,
                        "--port",
                        str(port),
                        "--ai",
                        targets,
                        "--seed",
                        str(args.seed),
                    ],
                    cwd=ROOT,
                )
            )
            hubs.append(f"http://127.0.0.1:{port}")
        async with aiohttp.ClientSession() as http:
            for url in hubs:
                await until_up(http, url)
            for h, url in enumerate(hubs):
                for i in range(args.real_per_hub):
                    index = 1000 + h * 100 + i
                    script, _ = device_script(index, args.seed, seconds=60.0, pause_s=PAUSE_S)
                    d = Device(f"h{h + 1}-real-{i}", script)
                    await d.connect(url, http)
                    devices.append(d)
            sims = [0, 0]
            for total in steps:
                per_hub = max(0, total // 2 - args.real_per_hub)
                for h, url in enumerate(hubs):
                    if per_hub > sims[h]:
                        async with http.post(
                            f"{url}/bench/sim?first={h * 10_000 + sims[h]}&count={per_hub - sims[h]}"
                        ) as r:
                            sims[h] = (await r.json())["sim_devices"]
                await asyncio.sleep(args.warmup)
                before = [await get(http, f"{u}/bench") for u in hubs]
                t0 = time.monotonic()
                await asyncio.sleep(args.seconds)
                t1 = time.monotonic()
                after = [await get(http, f"{u}/bench") for u in hubs]
                turns = [t for a in after for t in window(a["turns"], t0, t1)]
                step = {
                    "devices": sum(sims) + len(devices),
                    "real_webrtc": len(devices),
                    "sim": sum(sims),
                    "window_s": round(t1 - t0, 1),
                    **summarize(turns),
                    "real_turns_completed": sum(1 for t in turns if "-real-" in t["device"] and t["error"] == "NONE"),
                    "hub_cpu_core_fraction": [
                        round((a["cpu_s"] - b["cpu_s"]) / (a["wall_s"] - b["wall_s"]), 3)
                        for a, b in zip(after, before, strict=True)
                    ],
                    "sim_late_ticks": [
                        a["sim_late_ticks"] - b["sim_late_ticks"] for a, b in zip(after, before, strict=True)
                    ],
                    "frames_dropped": [
                        sum(a["frames_dropped"].values()) - sum(b["frames_dropped"].values())
                        for a, b in zip(after, before, strict=True)
                    ],
                    "pool": [a["pool"] for a in after],
                    "loadavg": os.getloadavg(),
                }
                report["steps"].append(step)
                print(json.dumps({k: v for k, v in step.items() if k != "pool"}), flush=True)
            report["failover"] = await kill_one(http, hubs, ai_a, f"127.0.0.1:{port_a}", args.seconds)
            print(json.dumps(report["failover"]), flush=True)
    finally:
        for d in devices:
            await d.close()
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        tmp.cleanup()
    return report


async def kill_one(
    http: aiohttp.ClientSession, hubs: list[str], proc: subprocess.Popen[bytes], address: str, seconds: float
) -> dict[str, Any]:
    """SIGKILL one AI server; until when do the pools still send to it, and how soon are its devices answered."""
    before = [await get(http, f"{u}/bench") for u in hubs]
    on_killed = {t["device"] for b in before for t in b["turns"][-400:] if t["server"] == address}
    killed_at = time.monotonic()
    proc.kill()
    moved_at: list[float | None] = [None] * len(hubs)
    while time.monotonic() - killed_at < seconds:
        for h, url in enumerate(hubs):
            if moved_at[h] is None:
                pool = (await get(http, f"{url}/bench"))["pool"]
                if all(not s["connected"] and s["devices"] == 0 for s in pool if s["address"] == address):
                    moved_at[h] = time.monotonic() - killed_at
        await asyncio.sleep(0.05)
    after = [await get(http, f"{u}/bench") for u in hubs]
    turns = [t for a in after for t in a["turns"] if t["at"] >= killed_at]
    first_answer: dict[str, float] = {}
    for t in sorted(turns, key=lambda t: t["at"]):
        if t["device"] in on_killed and t["error"] == "NONE" and t["device"] not in first_answer:
            first_answer[t["device"]] = t["at"] - killed_at
    waits = list(first_answer.values())
    return {
        "killed": address,
        "pool_moved_devices_after_s": [round(m, 2) if m is not None else None for m in moved_at],
        "devices_that_were_on_it": len(on_killed),
        "of_them_answered_since": len(first_answer),
        "first_answer_after_kill_s": {"p50": pct(waits, 50), "max": round(max(waits), 2) if waits else None},
        "note": "first_answer includes each device's own pause before it next speaks (8-20 s here)",
        **summarize(turns),
        "pool_lost_turns": [a["lost_turns"] for a in after],
        "pool_failovers": [a["failovers"] for a in after],
        "observed_s": seconds,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", default="20,60,100,120", help="devices in total, over both hubs")
    p.add_argument("--real-per-hub", type=int, default=2, help="real aiortc devices on each hub")
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--warmup", type=float, default=4.0)
    p.add_argument("--seed", type=int, default=21)
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "scale.json"))
    p.add_argument("--serve-ai", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--serve-hub", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--name", default="", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--data", default="", help=argparse.SUPPRESS)
    p.add_argument("--ai", default="", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve_ai:
        return serve_ai(args)
    if args.serve_hub:
        return serve_hub(args)
    load_before = os.getloadavg()
    report = asyncio.run(bench(args))
    report = {
        "benchmark": "scale",
        "host": {
            "cpus": os.cpu_count(),
            "machine": platform.machine(),
            "python": platform.python_version(),
            "loadavg_before": load_before,
            "note": "2 AI servers, 2 hubs, the devices and other work share this host",
        },
        "ai_servers": "real service, pipeline and store; fast stand-in STT/LLM/TTS (ai_server/fakes.py)",
        "devices": "real = aiortc WebRTC peers; sim = real hub sessions fed frames in the hub process "
        "(no WebRTC transport)",
        "pause_between_utterances_s": PAUSE_S,
        "seed": args.seed,
        **report,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"-> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
