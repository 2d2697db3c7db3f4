"""The cost of mutual TLS on the hub <-> AI server gRPC stream, side by side with plaintext in one run.

The hub side is the hub's real conversation link (hub.ai_link.AiLink: its gRPC thread, its queue,
the hand-off to the event loop); the AI side is a real grpc.aio server built with the AI server's
own options and credentials (ai_server.app.server_options, shared.grpc_security), running a sink
servicer in its own process (this script with ``--serve``) so each side's CPU is its own. Only the
models are missing: the sink answers with paced reply audio instead of running STT/LLM/TTS.

Traffic per run, like a hub with ``--devices`` talking at once: uplink AudioInput of 20 ms 16 kHz
PCM (640 bytes) per device every 20 ms, downlink AudioOutput of 40 ms 22050 Hz PCM (1764 bytes) per
device every 40 ms. Each message carries its send time in ``sequence_num`` (nanoseconds of
``time.perf_counter``, CLOCK_MONOTONIC on Linux: one clock for both processes of this host); the
receiver subtracts it from its own reading:

- uplink latency: ``AiLink.send`` on the hub's event loop -> the AI server's handler has the message;
- downlink latency: the sink yields the message -> the hub's ``on_output`` callback runs on its loop;
- CPU per stream: process CPU seconds / wall seconds over the run (fraction of one core), hub and AI
  server processes separately.

"Added" is mTLS minus plaintext, per percentile. Goal: under 1 ms at p95 each way.

    python bench/grpc_tls.py [--seconds 10] [--devices 8] [--rounds 2]

Prints a table and writes bench/results/grpc_tls.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterable, AsyncIterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import grpc  # noqa: E402
import grpc.aio  # noqa: E402

from bench.stats import pct  # noqa: E402
from shared.contract import pb, pb_grpc  # noqa: E402

CLOCK = "time.perf_counter_ns (CLOCK_MONOTONIC, shared by both processes)"
UP_BYTES = 640  # 20 ms at 16 kHz
DOWN_BYTES = 1764  # 40 ms at 22050 Hz
STOP = "__bench_stop__"


# ----- the AI server side (subprocess) -----


class Sink(pb_grpc.NailaAIServicer):
    def __init__(self, devices: int) -> None:
        self.devices = devices
        self.uplink_ns: list[int] = []
        self.cpu0 = time.process_time()
        self.wall0 = time.perf_counter()
        self.done = asyncio.Event()

    async def GetStatus(self, request: pb.StatusRequest, context: Any) -> pb.StatusResponse:
        return pb.StatusResponse(status="ok")

    async def AnalyzeFrames(
        self, request_iterator: AsyncIterable[pb.VisionFrame], context: Any
    ) -> AsyncIterator[pb.VisionResult]:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not part of this benchmark")
        yield pb.VisionResult()  # unreachable: makes this an async generator like the real one

    async def StreamConversation(
        self, request_iterator: AsyncIterable[pb.AudioInput], context: Any
    ) -> AsyncIterator[pb.AudioOutput]:
        stop = asyncio.Event()
        self.cpu0, self.wall0 = time.process_time(), time.perf_counter()

        async def read() -> None:
            async for msg in request_iterator:
                now = time.perf_counter_ns()
                if msg.device_id == STOP:
                    break
                self.uplink_ns.append(now - msg.sequence_num)
            stop.set()

        reader = asyncio.create_task(read())
        pcm = b"\x00\x01" * (DOWN_BYTES // 2)
        ids = [f"dev-{i}" for i in range(self.devices)]
        tick = time.perf_counter()
        try:
            while not stop.is_set():
                for d in ids:
                    yield pb.AudioOutput(device_id=d, audio_pcm=pcm, sample_rate=22050,
                                         sequence_num=time.perf_counter_ns())
                tick += 0.040
                await asyncio.sleep(max(0.0, tick - time.perf_counter()))
        finally:
            reader.cancel()
            self.done.set()


async def serve(args: argparse.Namespace) -> None:
    from ai_server.app import max_concurrent_rpcs, server_options
    from shared.config import AIServerSettings, load
    from shared.grpc_security import ai_server_credentials

    tls = {}
    if args.serve == "mtls":
        d = Path(args.pki)
        tls = {"ai_server_tls_cert": str(d / "ai-server.crt"), "ai_server_tls_key": str(d / "ai-server.key"),
               "ai_server_tls_client_ca": str(d / "ca.crt")}
    settings = load(AIServerSettings, ai_server_host="127.0.0.1", **tls)
    server = grpc.aio.server(options=server_options(settings), maximum_concurrent_rpcs=max_concurrent_rpcs(settings))
    sink = Sink(args.devices)
    pb_grpc.add_NailaAIServicer_to_server(sink, server)
    creds = ai_server_credentials(settings, "127.0.0.1")
    port = server.add_insecure_port("127.0.0.1:0") if creds is None else server.add_secure_port("127.0.0.1:0", creds)
    await server.start()
    print(port, flush=True)
    await sink.done.wait()
    result = {"uplink_ns": sink.uplink_ns, "cpu_s": time.process_time() - sink.cpu0,
              "wall_s": time.perf_counter() - sink.wall0}
    await asyncio.to_thread(Path(args.out).write_text, json.dumps(result))
    await server.stop(0.5)


# ----- the hub side -----


def make_pki(d: Path) -> None:
    from naila.pki import issue, new_ca

    ca = new_ca()
    for name, issued in (("ca", ca),
                         ("ai-server", issue(ca, "ai-server", dns_names=["localhost"], ip_addresses=["127.0.0.1"])),
                         ("hub-main", issue(ca, "hub-main", server=False, client=True))):
        (d / f"{name}.crt").write_bytes(issued.cert_pem)
        (d / f"{name}.key").write_bytes(issued.key_pem)


async def run_mode(mode: str, args: argparse.Namespace, pki: Path) -> dict[str, Any]:
    from hub.ai_link import AiLink, Outbound
    from hub.metrics import HubMetrics
    from shared.backoff import Backoff
    from shared.config import HubSettings, load
    from shared.grpc_security import hub_client

    out = pki / f"{mode}.json"
    cmd = [sys.executable, __file__, "--serve", mode, "--pki", str(pki), "--out", str(out),
           "--devices", str(args.devices)]
    proc = await asyncio.to_thread(subprocess.Popen, cmd, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    port = int(await asyncio.to_thread(proc.stdout.readline))
    tls = {}
    if mode == "mtls":
        tls = {"hub_ai_tls_ca": str(pki / "ca.crt"), "hub_ai_tls_cert": str(pki / "hub-main.crt"),
               "hub_ai_tls_key": str(pki / "hub-main.key")}
    security = hub_client(load(HubSettings, hub_ai_server=f"127.0.0.1:{port}", **tls))
    down_ns: list[int] = []

    def on_output(msg: pb.AudioOutput) -> None:
        down_ns.append(time.perf_counter_ns() - msg.sequence_num)

    link = AiLink(security.target, HubMetrics(), on_output=on_output, backoff=Backoff(0.05, 0.5),
                  per_device_limit=500, security=security)
    link.start()
    assert await link.wait_connected(10), f"{mode}: no stream"
    await asyncio.sleep(0.5)  # handshake and first messages out of the window
    down_ns.clear()
    pcm = b"\x00\x01" * (UP_BYTES // 2)
    ids = [f"dev-{i}" for i in range(args.devices)]
    cpu0, wall0 = time.process_time(), time.perf_counter()
    tick = wall0
    end = wall0 + args.seconds
    while (now := time.perf_counter()) < end:
        for d in ids:
            msg = pb.AudioInput(device_id=d, audio_pcm=pcm, sample_rate=16000, event=pb.CONTINUE,
                                sequence_num=time.perf_counter_ns())
            link.send(Outbound(msg, frames=1, captured_at=None))
        tick += 0.020
        await asyncio.sleep(max(0.0, tick - now))
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    link.send(Outbound(pb.AudioInput(device_id=STOP), frames=0, captured_at=None))
    await asyncio.to_thread(proc.wait, 20)
    await link.stop()
    server = json.loads(out.read_text())
    up_ms = [ns / 1e6 for ns in server["uplink_ns"]]
    down_ms = [ns / 1e6 for ns in down_ns]
    return {
        "mode": mode,
        "uplink_msgs": len(up_ms), "downlink_msgs": len(down_ms),
        "uplink_p50_ms": pct(up_ms, 0.5), "uplink_p95_ms": pct(up_ms, 0.95),
        "downlink_p50_ms": pct(down_ms, 0.5), "downlink_p95_ms": pct(down_ms, 0.95),
        "hub_cpu_per_stream": cpu / wall,  # one stream carries every device
        "ai_cpu_per_stream": server["cpu_s"] / server["wall_s"],
    }


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="naila-bench-tls-") as tmp:
        pki = Path(tmp)
        make_pki(pki)
        for _ in range(args.rounds):  # interleaved, so drift of a shared machine hits both modes alike
            for mode in ("plaintext", "mtls"):
                r = await run_mode(mode, args, pki)
                runs.append(r)
                print(json.dumps(r), flush=True)

    def median(mode: str, key: str) -> float:
        vals = sorted(r[key] for r in runs if r["mode"] == mode)
        return float(vals[len(vals) // 2])

    keys = ("uplink_p50_ms", "uplink_p95_ms", "downlink_p50_ms", "downlink_p95_ms", "hub_cpu_per_stream",
            "ai_cpu_per_stream")
    summary = {mode: {k: median(mode, k) for k in keys} for mode in ("plaintext", "mtls")}
    added = {k: summary["mtls"][k] - summary["plaintext"][k] for k in keys}
    return {
        "bench": "grpc_tls", "clock": CLOCK, "devices": args.devices, "seconds": args.seconds, "rounds": args.rounds,
        "uplink_msgs_per_s": args.devices * 50, "downlink_msgs_per_s": args.devices * 25,
        "host": {"python": platform.python_version(), "grpc": grpc.__version__, "cpus": os.cpu_count()},
        "runs": runs, "median": summary, "added_by_mtls": added,
        "goal_met": added["uplink_p95_ms"] < 1.0 and added["downlink_p95_ms"] < 1.0,
    }


def print_table(res: dict[str, Any]) -> None:
    m, a = res["median"], res["added_by_mtls"]
    print(f"\nhub <-> AI server gRPC stream, {res['devices']} devices ({res['uplink_msgs_per_s']} up + "
          f"{res['downlink_msgs_per_s']} down msg/s), {res['seconds']} s x {res['rounds']} rounds")
    print(f"clock: {res['clock']}")
    print(f"{'':12} {'up p50':>8} {'up p95':>8} {'down p50':>9} {'down p95':>9} {'hub CPU':>8} {'AI CPU':>8}")
    for name, row in (("plaintext", m["plaintext"]), ("mTLS", m["mtls"]), ("added", a)):
        print(f"{name:12} {row['uplink_p50_ms']:8.3f} {row['uplink_p95_ms']:8.3f} {row['downlink_p50_ms']:9.3f} "
              f"{row['downlink_p95_ms']:9.3f} {row['hub_cpu_per_stream'] * 100:7.1f}% "
              f"{row['ai_cpu_per_stream'] * 100:7.1f}%")
    print(f"latencies in ms; CPU = fraction of one core for the whole stream. Goal (<1 ms p95 added each way): "
          f"{'met' if res['goal_met'] else 'NOT met'}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--devices", type=int, default=8)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--out-json", default=str(ROOT / "bench" / "results" / "grpc_tls.json"))
    p.add_argument("--serve", choices=("plaintext", "mtls"), help=argparse.SUPPRESS)
    p.add_argument("--pki", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve:
        asyncio.run(serve(args))
        return 0
    res = asyncio.run(bench(args))
    print_table(res)
    Path(args.out_json).write_text(json.dumps(res, indent=2) + "\n")
    print(f"wrote {args.out_json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
