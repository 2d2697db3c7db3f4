"""Hub capacity: N real aiortc devices streaming espeak speech in real time through one hub.

For each N the hub runs in its own process (this script with ``--serve-hub``), so its CPU
is its own (time.process_time inside it); the N device peers and a sink AI server (answers
every END with 1 s of 22050 Hz reply audio, like the real one) run in this process.

The hub runs with its defaults (arbitration window, Smart Turn end of turn, jitter prefetch)
except the listening mode, ``always``: espeak does not say the wake word reliably, and the wake
word's own CPU (~0.0025 core per stream) is measured by bench/wake_word.py. Each device speaks
as one person in its own room would: its own espeak-ng voice and speed, its own sentences,
and independent (seeded) timing with 2-6 s of silence between utterances, so onsets on two
devices coincide only by chance and arbitration compares them as a household has it.

Measured per N (over a steady window after warm-up):
- hub CPU per stream: hub process CPU seconds / wall seconds / N (fraction of one core);
- hub-added latency, exact per-frame samples taken inside the hub on time.monotonic:
  uplink = decoded WebRTC frame received -> written on the gRPC stream,
  downlink = AudioOutput received (idle track) -> first sample handed to the WebRTC encoder;
  plus the sink's view of uplink (AudioInput received - its timestamp_ms; same host clock);
- frames dropped (hub counters) and frames received at the sink / devices vs real time;
- turns started (START at the sink), ended (END) and answered, arbitration decisions.
"Real time" for an N: no dropped frames, uplink and downlink p95 under 60 ms, the sink got
>= 95% of the frames the hub counted as forwarded, every device that spoke heard a reply,
and every device heard its replies at >= 47.5 frames/s. A step counts only if the device peers themselves kept real
time (late on < 1% of frames): on a small shared machine the load generator saturates first.

    python bench/hub_capacity.py --max-devices 16 [--seconds 15] [--steps 1,2,4,8,12,16] [--seed 21]

Prints a table and writes bench/results/hub_capacity.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fractions
import itertools
import json
import os
import platform
import random
import signal
import socket
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
import grpc  # noqa: E402
import grpc.aio  # noqa: E402
import numpy as np  # noqa: E402
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription  # noqa: E402
from aiortc.mediastreams import MediaStreamError  # noqa: E402
from av import AudioFrame  # noqa: E402

from bench import stats  # noqa: E402
from shared.audio import espeak, frame_to_mono, rms_dbfs  # noqa: E402
from shared.contract import pb, pb_grpc  # noqa: E402

RATE = 48_000
FRAME = 960
REPLY_RATE = 22_050
UPLINK_P95_LIMIT_MS = 60.0
DOWNLINK_P95_LIMIT_MS = 60.0
# A device that spoke in the measured window counts as answered if its answer came by this long
# after the window (the end-of-turn fallback, arbitration and the sink's 0.2 s "thinking").
ANSWER_GRACE_S = 3.0


def loopback_only() -> None:
    """Host ICE candidates on 127.0.0.1 only (sandboxes have odd interfaces)."""
    import aioice.ice

    aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def thread_cpu_s() -> dict[str, float]:
    """CPU seconds of this process by thread kind (Python thread names with their numbers dropped;
    threads Python did not start, such as gRPC's and libuv's, as "native <OS name>"), from /proc (Linux)."""
    import re
    import threading

    tick = os.sysconf("SC_CLK_TCK")
    names = {t.native_id: re.sub(r"[-_ ]?\d+$|^Thread-\d+ \((.*)\)$", r"\1", t.name) for t in threading.enumerate()}
    out: dict[str, float] = defaultdict(float)
    with contextlib.suppress(OSError):
        for tid in os.listdir("/proc/self/task"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                head, _, tail = Path(f"/proc/self/task/{tid}/stat").read_text().rpartition(")")
                fields = tail.split()
                native = "native " + re.sub(r"[-_ ]?\d+$", "", head.partition("(")[2])  # the OS thread name
                out[names.get(int(tid), native) or "thread"] += (int(fields[11]) + int(fields[12])) / tick
    return dict(out)


def pct(xs: list[float], p: float) -> float | None:
    """The ``p``-th percentile (0..100) by bench/stats.py, rounded for the JSON; None when there are none."""
    return round(stats.pct(xs, p / 100), 2) if xs else None


# ---------------------------------------------------------------- the hub process


def serve_hub(args: argparse.Namespace) -> int:
    """Run a hub with a /bench route exposing its CPU time and exact latency samples."""
    import logging

    from aiohttp import web

    from hub.runtime import run
    from hub.server import Hub
    from hub.session import DeviceSession
    from shared.config import HubSettings, WebRTCSettings, load

    logging.basicConfig(level=logging.WARNING)
    loopback_only()
    samples: dict[str, list[float]] = {"uplink": [], "downlink": [], "loop_lag": [], "held": []}

    async def loop_lag() -> None:
        """How late a 10 ms timer fires: event-loop stalls (GC, CPU contention, long callbacks)."""
        while True:
            t = time.monotonic()
            await asyncio.sleep(0.01)
            samples["loop_lag"].append(time.monotonic() - t - 0.01)

    # A loopback bench: an explicitly open hub without per-address limits (all devices share 127.0.0.1).
    settings = load(HubSettings, hub_host="127.0.0.1", hub_ai_server=f"127.0.0.1:{args.ai_port}",
                    hub_allow_unauthenticated=True, hub_connect_per_min=60_000,
                    # Devices speak plain phrases; the wake word's CPU is measured by bench/wake_word.py.
                    hub_listening_mode=args.listening_mode)

    async def main() -> None:
        hub = Hub(settings, WebRTCSettings(webrtc_ice_servers=[]), port=args.port)
        model = hub.turn_judge.model if hub.turn_judge is not None else None  # hub.end_of_turn.SmartTurn
        # Frames held while arbitration decides (window + compare, ~0.36 s by design) go out in a
        # burst when the claim is won: their wait is the arbiter's, not the hub's CPU. They are
        # sampled apart ("held") and left out of the uplink figure the real-time test uses.
        replaying = [False]
        resolved = DeviceSession._on_claim_resolved

        def on_claim_resolved(self: DeviceSession, claim: Any) -> None:
            replaying[0] = True
            try:
                resolved(self, claim)
            finally:
                replaying[0] = False

        DeviceSession._on_claim_resolved = on_claim_resolved  # type: ignore[method-assign]
        send = hub.link.send

        def send_tagged(item: Any) -> bool:
            if replaying[0] and item.captured_at is not None:
                samples["held"].append(time.monotonic() - item.captured_at)
                item.captured_at = None
            return send(item)

        hub.link.send = send_tagged  # type: ignore[method-assign]
        for name, hist in (("uplink", hub.metrics.uplink_latency), ("downlink", hub.metrics.downlink_latency)):
            orig = hist.observe

            def observe(v: float, _orig: Any = orig, _name: str = name, **kw: Any) -> None:
                samples[_name].append(v)
                _orig(v, **kw)

            hist.observe = observe  # type: ignore[method-assign,assignment]
        make_app = hub.make_app

        def app_with_bench() -> web.Application:
            app = make_app()

            async def bench(request: web.Request) -> web.Response:
                body = {
                    "cpu_s": time.process_time(),
                    "thread_cpu_s": thread_cpu_s(),
                    # The end-of-turn model's own CPU (features + inference), which scales with turns,
                    # not with streams: reported apart from the per-stream figure.
                    "model_cpu_s": getattr(model, "cpu_s", 0.0),
                    "model_calls": getattr(model, "calls", 0),
                    "wall_s": time.monotonic(),
                    "uplink_ms": [v * 1000 for v in samples["uplink"]],
                    "downlink_ms": [v * 1000 for v in samples["downlink"]],
                    "loop_lag_ms": [v * 1000 for v in samples["loop_lag"]],
                    "held_ms": [v * 1000 for v in samples["held"]],
                    "frames_dropped": dict(hub.metrics.frames_dropped),
                    "frames_forwarded": hub.metrics.frames_forwarded,
                    "arbitration": dict(hub.metrics.arbitration),
                    "end_of_turn": dict(hub.metrics.end_of_turn),
                    "tts_dropped": dict(hub.metrics.tts_dropped),
                    "health": hub.metrics.health(),
                }
                if request.query.get("reset"):
                    for v in samples.values():
                        v.clear()
                return web.json_response(body)

            app.router.add_get("/bench", bench)
            return app

        hub.make_app = app_with_bench  # type: ignore[method-assign]
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await hub.start()
        lag = asyncio.create_task(loop_lag())
        await stop.wait()
        lag.cancel()
        await hub.stop()

    run(main(), use_uvloop=settings.hub_uvloop)  # the hub's own loop choice (HUB_UVLOOP), as `naila hub`
    return 0


# ---------------------------------------------------------------- the sink AI server


class SinkAI(pb_grpc.NailaAIServicer):
    def __init__(self) -> None:
        self.frames: dict[str, int] = defaultdict(int)
        self.latency_ms: list[float] = []
        self.starts = 0
        self.ends = 0
        self.answered: dict[str, int] = defaultdict(int)  # is_final sent, per device
        self.server: grpc.aio.Server | None = None
        self.port = 0
        self.reply = (0.4 * 32767 * np.sin(2 * np.pi * 440 * np.arange(REPLY_RATE) / REPLY_RATE)).astype("<i2")

    async def start(self) -> None:
        self.server = grpc.aio.server()
        pb_grpc.add_NailaAIServicer_to_server(self, self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        await self.server.start()

    def reset(self) -> None:
        self.frames.clear()
        self.latency_ms.clear()
        self.starts = 0
        self.ends = 0
        self.answered.clear()

    async def StreamConversation(
        self, request_iterator: AsyncIterator[pb.AudioInput], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.AudioOutput]:
        out: asyncio.Queue[pb.AudioOutput | None] = asyncio.Queue()

        async def read() -> None:
            async for m in request_iterator:
                now_ms = time.monotonic() * 1000
                n = len(m.audio_pcm) // 640
                self.frames[m.device_id] += n
                if m.event == pb.CONTINUE:
                    self.latency_ms.append(now_ms - m.timestamp_ms)
                elif m.event == pb.START:
                    self.starts += 1
                elif m.event == pb.END:
                    self.ends += 1
                    asyncio.get_running_loop().create_task(self._answer(m, out))
            await out.put(None)

        task = asyncio.create_task(read())
        try:
            while (item := await out.get()) is not None:
                yield item
        finally:
            task.cancel()

    async def _answer(self, end: pb.AudioInput, out: asyncio.Queue[pb.AudioOutput | None]) -> None:
        dev, conv = end.device_id, end.conversation_id
        await asyncio.sleep(0.2)  # "thinking"
        await out.put(pb.AudioOutput(device_id=dev, final_stt="...", conversation_id=conv))
        pcm = self.reply.tobytes()
        step = REPLY_RATE // 5 * 2  # 200 ms chunks
        for i in range(0, len(pcm), step):
            await out.put(pb.AudioOutput(device_id=dev, audio_pcm=pcm[i : i + step], sample_rate=REPLY_RATE,
                                         conversation_id=conv))
        await out.put(pb.AudioOutput(device_id=dev, is_final=True, reply_text="...", conversation_id=conv))
        self.answered[dev] += 1


# ---------------------------------------------------------------- the devices


VOICES = ["en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-029"]
VARIANTS = ["", "+f2", "+m3", "+f4", "+m7"]
PHRASES = [
    "what is the weather like today", "turn on the kitchen lights", "set a timer for ten minutes",
    "what time is it", "play some music in the living room", "remind me to call my sister tomorrow",
    "how long does it take to boil an egg", "is the front door locked", "what did we talk about yesterday",
    "dim the lights in the bedroom please", "add milk and bread to the shopping list",
    "what is on my calendar this afternoon", "how warm is it outside right now", "stop the alarm",
    "tell me a short joke", "when is the next bus into town",
]


def device_script(index: int, seed: int, seconds: float = 40.0,
                  pause_s: tuple[float, float] = (2.0, 6.0)) -> tuple[np.ndarray, dict[str, Any]]:
    """One device's microphone for ``seconds`` (looped): its own voice, sentences and pauses.

    Seeded per device: silence 0-4 s, then utterances of random phrases (its voice, 140-185 wpm)
    each followed by 2-6 s of silence, over the room's own noise floor (white, -60 to -50 dBFS:
    espeak's digital silence between words would make any two dB envelopes look alike to the
    arbiter). Returns the 48 kHz int16 track and what it says.
    """
    rng = random.Random(seed * 1000 + index)
    voice = VOICES[index % len(VOICES)] + VARIANTS[(index // len(VOICES)) % len(VARIANTS)]
    wpm = rng.randint(140, 185)
    parts = [np.zeros(int(RATE * rng.uniform(0.0, 4.0)), dtype=np.int16)]
    total, utterances = parts[0].size, 0
    while total < seconds * RATE:
        speech = speak(rng.choice(PHRASES), voice, wpm)
        pause = np.zeros(int(RATE * rng.uniform(*pause_s)), dtype=np.int16)
        parts += [speech, pause]
        total += speech.size + pause.size
        utterances += 1
    noise_dbfs = rng.uniform(-60.0, -50.0)
    noise = np.random.default_rng(rng.randrange(2**32)).normal(0.0, 32767 * 10 ** (noise_dbfs / 20), total)
    track = np.clip(np.concatenate(parts) + noise, -32768, 32767).astype(np.int16)
    return track, {"voice": voice, "wpm": wpm, "noise_dbfs": round(noise_dbfs, 1),
                   "utterances_per_loop": utterances, "loop_s": round(total / RATE, 1)}


_SPOKEN: dict[tuple[str, str, int], np.ndarray] = {}


def speak(text: str, voice: str, wpm: int) -> np.ndarray:
    key = (text, voice, wpm)
    if key not in _SPOKEN:
        _SPOKEN[key] = espeak(text, rate=RATE, voice=voice, wpm=wpm)
    return _SPOKEN[key]


class LoopingMic(MediaStreamTrack):
    """A device's script, forever, paced in real time like a microphone."""

    kind = "audio"

    def __init__(self, clip: np.ndarray) -> None:
        super().__init__()
        self.clip = np.concatenate([clip, clip[:FRAME]])  # a frame may straddle the loop point
        self.size = clip.size
        self.pos = 0
        self.start: float | None = None
        self.pts = 0
        self.late_frames = 0

    async def recv(self) -> AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self.start is None:
            self.start = time.monotonic()
        else:
            self.pts += FRAME
            wait = self.start + self.pts / RATE - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            elif wait < -0.04:
                self.late_frames += 1
        chunk = self.clip[self.pos : self.pos + FRAME]
        self.pos = (self.pos + FRAME) % self.size
        frame = AudioFrame(format="s16", layout="mono", samples=FRAME)
        frame.planes[0].update(chunk.tobytes())
        frame.pts = self.pts
        frame.sample_rate = RATE
        frame.time_base = fractions.Fraction(1, RATE)
        return frame


class Device:
    def __init__(self, device_id: str, clip: np.ndarray) -> None:
        self.device_id = device_id
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.mic = LoopingMic(clip)
        self.frames_heard = 0
        self.loud_heard = 0
        self.loud_at: list[float] = []  # arrival of each loud (reply) frame
        self.task: asyncio.Task[None] | None = None

    async def connect(self, url: str, http: aiohttp.ClientSession) -> None:
        self.pc.addTransceiver(self.mic, direction="sendrecv")

        @self.pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            async def listen() -> None:
                with contextlib.suppress(MediaStreamError):
                    while True:
                        f = await track.recv()
                        self.frames_heard += 1
                        if isinstance(f, AudioFrame) and rms_dbfs(frame_to_mono(f)) > -40:
                            self.loud_heard += 1
                            self.loud_at.append(time.monotonic())

            self.task = asyncio.create_task(listen())

        await self.pc.setLocalDescription(await self.pc.createOffer())
        async with http.post(f"{url}/connect", json={"device_id": self.device_id,
                                                     "sdp": self.pc.localDescription.sdp}) as r:
            body = await r.json()
            if r.status != 200:
                raise RuntimeError(f"{self.device_id}: /connect {r.status} {body}")
        await self.pc.setRemoteDescription(RTCSessionDescription(body["sdp"], "answer"))

    async def close(self) -> None:
        if self.task:
            self.task.cancel()
        await self.pc.close()


# ---------------------------------------------------------------- one step


async def wait_for(cond: Any, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if await cond():
            return True
        await asyncio.sleep(0.1)
    return False


def start_hub_process(port: int, ai_port: int, listening_mode: str, env: dict[str, str] | None = None,
                      root: Path = ROOT) -> subprocess.Popen[bytes]:
    """This bench's hub (``--serve-hub``) from ``root``: this checkout, or another one to compare with."""
    return subprocess.Popen([sys.executable, str(root / "bench" / "hub_capacity.py"), "--serve-hub",
                             "--port", str(port), "--ai-port", str(ai_port), "--listening-mode", listening_mode],
                            cwd=root, env={**os.environ, **(env or {})})


def reply_frames_per_s(times: list[float], gap_s: float = 0.2) -> float | None:
    """How fast a device heard reply audio while a reply played: loud frames grouped into replies
    (a pause over ``gap_s`` starts the next), frame intervals over reply time. The hub sends
    nothing between replies but a silence packet every 400 ms (hub/tts_track.py), so frames per
    wall second no longer say whether its sender kept real time; this does (50 = real time)."""
    frames = 0
    span = 0.0
    for a, b in itertools.pairwise(times):
        if b - a <= gap_s:
            frames += 1
            span += b - a
    return round(frames / span, 1) if span > 0 else None


def parse_env(pairs: list[str]) -> dict[str, str]:
    """``["HUB_UVLOOP=false", ...]`` -> a dict (a one-line error for anything not KEY=VALUE)."""
    env = {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq or not key:
            raise SystemExit(f"hub_capacity: --compare wants KEY=VALUE settings, got {pair!r}")
        env[key] = value
    return env


async def run_step(n: int, seconds: float, warmup: float, sink: SinkAI, scripts: list[np.ndarray],
                   listening_mode: str, env: dict[str, str] | None = None, root: Path = ROOT) -> dict[str, Any]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start_hub_process(port, sink.port, listening_mode, env, root)
    devices: list[Device] = []
    try:
        async with aiohttp.ClientSession() as http:

            async def ready() -> bool:
                try:
                    async with http.get(f"{url}/health") as r:
                        return r.status == 200
                except aiohttp.ClientError:
                    return False

            if not await wait_for(ready, 30):
                raise RuntimeError("hub did not come up")
            for i in range(n):
                d = Device(f"bench-{i}", scripts[i])
                await d.connect(url, http)
                devices.append(d)

            async def all_connected() -> bool:
                return all(d.pc.connectionState == "connected" for d in devices)

            if not await wait_for(all_connected, 30):
                raise RuntimeError("devices did not connect")
            await asyncio.sleep(warmup)
            async with http.get(f"{url}/bench?reset=1") as r:
                before = await r.json()
            sink.reset()
            heard0 = [(d.frames_heard, d.loud_heard) for d in devices]
            loud0 = [len(d.loud_at) for d in devices]
            late0 = sum(d.mic.late_frames for d in devices)
            client_cpu0 = time.process_time()
            t0 = time.monotonic()
            await asyncio.sleep(seconds)
            wall = time.monotonic() - t0
            loud1 = [len(d.loud_at) for d in devices]
            client_cpu = time.process_time() - client_cpu0
            async with http.get(f"{url}/bench") as r:
                after = await r.json()
            # Who spoke in the window; their answers may come a moment after it (a turn that ended
            # near its end), so they are counted after a grace period (ANSWER_GRACE_S).
            spoke = {d for d, f in sink.frames.items() if f > 0}
            at_sink = (sum(sink.frames.values()), sink.starts, sink.ends, sum(sink.answered.values()))
            await asyncio.sleep(ANSWER_GRACE_S)
            answered = dict(sink.answered)
    finally:
        for d in devices:
            await d.close()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()

    hub_cpu = after["cpu_s"] - before["cpu_s"]
    # (A hub from an older checkout, --compare-root, may not report threads or the model apart.)
    by_thread = {k: round((v - before["thread_cpu_s"].get(k, 0.0)) / (after["wall_s"] - before["wall_s"]), 3)
                 for k, v in after.get("thread_cpu_s", {}).items()}
    dropped = sum(after["frames_dropped"].values()) - sum(before["frames_dropped"].values())
    forwarded = after["frames_forwarded"] - before["frames_forwarded"]
    got_frames, turns_started, turns_ended, turns_answered = at_sink  # the window's, at the sink
    arbitration = {k: v - before["arbitration"].get(k, 0) for k, v in after["arbitration"].items()}
    end_of_turn = {k: v - before["end_of_turn"].get(k, 0) for k, v in after["end_of_turn"].items()}
    heard = [d.frames_heard - h0[0] for d, h0 in zip(devices, heard0, strict=True)]
    loud = [d.loud_heard - h0[1] for d, h0 in zip(devices, heard0, strict=True)]
    rates = [rate for d, i, j in zip(devices, loud0, loud1, strict=True)
             if (rate := reply_frames_per_s(d.loud_at[i:j])) is not None]
    up, down = after["uplink_ms"], after["downlink_ms"]
    result = {
        "devices": n,
        "window_s": round(wall, 2),
        "hub_cpu_core_fraction": round(hub_cpu / wall, 3),
        "hub_cpu_per_stream": round(hub_cpu / wall / n, 4),
        "client_process_cpu_core_fraction": round(client_cpu / wall, 3),
        # Which hub threads the CPU went to (core fraction): the event loop (MainThread), aiortc's
        # audio decoder threads, the end-of-turn model, the gRPC link's threads, native threads.
        "hub_cpu_by_thread": dict(sorted(by_thread.items(), key=lambda kv: -kv[1])),
        "uplink_ms": {"p50": pct(up, 50), "p95": pct(up, 95), "max": round(max(up), 2) if up else None,
                      "n": len(up)},
        "downlink_ms": {"p50": pct(down, 50), "p95": pct(down, 95), "max": round(max(down), 2) if down else None,
                        "n": len(down)},
        "arbitration_held_ms": {"p50": pct(after["held_ms"], 50), "p95": pct(after["held_ms"], 95),
                                "n": len(after["held_ms"])},
        "sink_uplink_ms": {"p50": pct(sink.latency_ms, 50), "p95": pct(sink.latency_ms, 95)},
        "hub_loop_lag_ms": {"p50": pct(after["loop_lag_ms"], 50), "p95": pct(after["loop_lag_ms"], 95),
                            "p99": pct(after["loop_lag_ms"], 99),
                            "max": round(max(after["loop_lag_ms"]), 1) if after["loop_lag_ms"] else None},
        "frames_dropped": dropped,
        "tts_dropped": sum(after["tts_dropped"].values()) - sum(before["tts_dropped"].values()),
        "uplink_frames_at_sink_vs_forwarded": round(got_frames / forwarded, 3) if forwarded else None,
        "device_frames_heard_per_s_min": round(min(heard) / wall, 1),
        "device_reply_frames_per_s_min": min(rates) if rates else None,
        "devices_hearing_replies": sum(1 for x in loud if x > 0),
        "client_late_frames": sum(d.mic.late_frames for d in devices) - late0,
        "turns_started": turns_started,
        "turns_ended": turns_ended,
        "turns_answered": turns_answered,
        "devices_speaking": len(spoke),
        "devices_answered": sum(1 for d in spoke if answered.get(d, 0) > 0),
        "arbitration": arbitration,
        "end_of_turn": end_of_turn,
    }
    # The devices and the sink share this process: if it could not keep its microphones on
    # time (> 1% of frames late), the step measured the load generator, not the hub.
    checks = after.get("model_calls", 0) - before.get("model_calls", 0)
    model_cpu = after.get("model_cpu_s", 0.0) - before.get("model_cpu_s", 0.0)
    result["end_of_turn_checks_per_device_minute"] = round(checks / n / wall * 60, 1)
    result["end_of_turn_model_ms_per_check"] = round(model_cpu / checks * 1000, 1) if checks else None
    result["hub_cpu_per_stream_without_end_of_turn_model"] = (
        round(max(0.0, hub_cpu - model_cpu) / wall / n, 4) if "model_calls" in after else None)
    result["generator_kept_up"] = bool(result["client_late_frames"] <= 0.01 * n * wall * 50)
    p95s = (result["uplink_ms"]["p95"], result["downlink_ms"]["p95"])
    result["real_time"] = bool(
        dropped == 0
        and p95s[0] is not None and p95s[0] < UPLINK_P95_LIMIT_MS
        and (p95s[1] is None or p95s[1] < DOWNLINK_P95_LIMIT_MS)
        and result["uplink_frames_at_sink_vs_forwarded"] is not None
        and result["uplink_frames_at_sink_vs_forwarded"] >= 0.95
        and result["devices_answered"] == result["devices_speaking"]
        and (result["device_reply_frames_per_s_min"] or 0) >= 47.5
    )
    return result


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    loopback_only()
    load_before = os.getloadavg()
    steps = [int(x) for x in args.steps.split(",")] if args.steps else [1, 2, 4, 6, 8, 12, 16, 24, 32]
    steps = [n for n in steps if n <= args.max_devices]
    made = [device_script(i, args.seed) for i in range(max(steps, default=0))]
    scripts = [m[0] for m in made]
    sink = SinkAI()  # type: ignore[abstract]  # serves StreamConversation only
    await sink.start()
    results = []
    # --compare: each step also runs with the hub under these settings, right after the defaults'
    # run, so a change's before/after CPU comes from one run under the same load.
    variant = parse_env(args.compare)
    variant_root = Path(args.compare_root) if args.compare_root else ROOT  # made absolute by main()
    compare = bool(variant) or variant_root != ROOT
    compared: list[dict[str, Any]] = []
    largest = 0
    for n in steps:
        print(f"--- {n} device(s), {args.seconds:.0f}s ...", flush=True)
        r = await run_step(n, args.seconds, args.warmup, sink, scripts, args.listening_mode)
        results.append(r)
        print(json.dumps(r), flush=True)
        if compare:
            print(f"--- {n} device(s) with {variant} from {variant_root} ...", flush=True)
            c = await run_step(n, args.seconds, args.warmup, sink, scripts, args.listening_mode, variant,
                               variant_root)
            compared.append(c)
            print(json.dumps(c), flush=True)
        if r["real_time"] and r["generator_kept_up"]:
            largest = n
        elif not args.keep_going:
            break
    await sink.server.stop(None)  # type: ignore[union-attr]
    return {
        "benchmark": "hub_capacity",
        "host": {"cpus": os.cpu_count(), "machine": platform.machine(), "python": platform.python_version(),
                 "note": "devices, sink AI and the hub share this host's cores",
                 "loadavg_before": load_before},
        "seconds_per_step": args.seconds,
        "hub_settings": {"defaults": True, "hub_listening_mode": args.listening_mode},
        "speech": {"seed": args.seed, "devices": [m[1] for m in made]},
        "criteria": {"uplink_p95_ms_lt": UPLINK_P95_LIMIT_MS, "downlink_p95_ms_lt": DOWNLINK_P95_LIMIT_MS,
                     "frames_dropped": 0, "sink_frames_vs_hub_forwarded_gte": 0.95,
                     "every_device_that_spoke_was_answered": True,
                     "device_reply_frames_per_s_min_gte": 47.5,
                     "counted_only_if": "generator_kept_up (device peers late on < 1% of frames)"},
        "largest_real_time_devices": largest,
        "loadavg_after": os.getloadavg(),
        "steps": results,
        **({"compare": {"hub_env": variant, "hub_root": str(variant_root), "steps": compared}} if compare else {}),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--max-devices", type=int, default=16)
    p.add_argument("--steps", default="", help="comma-separated device counts (default 1,2,4,6,8,12,...)")
    p.add_argument("--seconds", type=float, default=15.0, help="measured window per step")
    p.add_argument("--warmup", type=float, default=3.0)
    p.add_argument("--keep-going", action="store_true", help="run every step even after one fails")
    p.add_argument("--seed", type=int, default=21, help="seeds every device's voice, sentences and timing")
    p.add_argument("--listening-mode", default="always", choices=["always", "wake_word", "push_to_talk"],
                   help="HUB_LISTENING_MODE (default always: espeak does not say the wake word reliably)")
    p.add_argument("--compare", action="append", default=[], metavar="KEY=VALUE",
                   help="also run each step with this hub setting (repeatable; e.g. HUB_UVLOOP=false)")
    p.add_argument("--compare-root", default="", metavar="DIR",
                   help="also run each step with the hub of another checkout (e.g. a git worktree of the "
                   "commit before a change; its bench/hub_capacity.py serves it)")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "hub_capacity.json"))
    p.add_argument("--serve-hub", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--ai-port", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve_hub:
        return serve_hub(args)
    args.compare_root = os.path.abspath(args.compare_root) if args.compare_root else ""
    report = asyncio.run(bench(args))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print()
    print(f"{'N':>3} {'rt':>3} {'gen ok':>6} {'hub cpu/stream':>14} {'w/o model':>9} {'up p50/p95 ms':>14} "
          f"{'down p50/p95 ms':>16} {'dropped':>7}")
    rows = [("", r) for r in report["steps"]]
    if "compare" in report:
        label = ",".join(f"{k}={v}" for k, v in report["compare"]["hub_env"].items())
        if report["compare"]["hub_root"] != str(ROOT):
            label = f"{label} hub from {report['compare']['hub_root']}".strip()
        rows = [row for pair in zip(rows, [(label, c) for c in report["compare"]["steps"]], strict=False)
                for row in pair]
    for tag, r in rows:
        print(f"{r['devices']:>3} {'yes' if r['real_time'] else 'no':>3} "
              f"{'yes' if r['generator_kept_up'] else 'no':>6} {r['hub_cpu_per_stream']:>14.3f} "
              f"{r['hub_cpu_per_stream_without_end_of_turn_model'] or float('nan'):>9.3f} "
              f"{r['uplink_ms']['p50']!s:>6}/{r['uplink_ms']['p95']!s:<7} "
              f"{r['downlink_ms']['p50']!s:>7}/{r['downlink_ms']['p95']!s:<8} {r['frames_dropped']:>7} "
              f"turns {r['turns_started']}/{r['turns_answered']} {tag}")
    print(f"largest N in real time: {report['largest_real_time_devices']} -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
