"""End-to-end turn latency: end of the user's speech at the device -> first reply audio at the device.

Real stack (mosquitto, AI server and hub as processes, shipped models) and a real DeviceAgent
with a memory sound card in this process. Every time is time.monotonic (CLOCK_MONOTONIC is
one clock for all processes of this machine), so device, hub and AI server stamps compare.

Stages of a turn (p50/p95 over the utterances):
  vad_and_network_in  end of voice at the mic -> the hub sends END (Opus uplink, jitter buffer,
                      resampling, and the VAD hangover)
  stt                 END at the AI server -> transcript
  llm_first_token     transcript -> first LLM token
  first_sentence      first token -> first speakable clause
  tts_first_chunk     clause -> first synthesised audio
  grpc                the AI server's first audio -> the hub has it (both gRPC hops, AI-side queueing)
  network_out         hub hands the first reply frame to WebRTC -> it plays at the device speaker
Barge-in stop: new speech starts at the mic while a reply plays -> last reply sample at the speaker.

Usage: python bench/e2e_latency.py [--runs N] [--barge-ins N]; writes bench/results/e2e_latency.json
and bench/results/e2e_latency.png.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.stats import pct  # noqa: E402
from naila.harness import SimDevice, start_device  # noqa: E402
from naila.stack import Stack, new_workdir  # noqa: E402

UTTERANCES = [
    "What is the capital of France?",
    "How many legs does a spider have?",
    "What color is the sky?",
    "Tell me a joke.",
    "What is two plus two?",
    "Who wrote Romeo and Juliet?",
    "How far away is the moon?",
    "What is the weather like today?",
    "Can you recommend a good book?",
    "What day comes after Monday?",
]
STAGES = ["vad_and_network_in", "stt", "llm_first_token", "first_sentence", "tts_first_chunk", "grpc",
          "network_out"]
GOAL_P50_MS = 800.0
GOAL_BARGE_IN_MS = 150.0



async def one_turn(dev: SimDevice, text: str) -> dict[str, Any] | None:
    before = len(dev.turns())
    _start, voice_end = dev.say(text)
    turn = await dev.wait_turn(before, within_s=120)
    first_audio = None
    deadline = time.monotonic() + 30
    while first_audio is None and time.monotonic() < deadline:
        first_audio = dev.backend.speaker_started_at(-45.0, since=voice_end)
        await asyncio.sleep(0.02)
    await dev.wait_speaker_quiet(voice_end, quiet_s=0.8)
    if first_audio is None or not turn.get("reply_text"):
        return None
    t = turn["timing"]
    hub_end = float(turn.get("hub_end_monotonic", 0.0))
    total = (first_audio - voice_end) * 1000
    stages: dict[str, float] = {
        "stt": t["stt_ms"],
        "llm_first_token": t["llm_first_token_ms"] - t["stt_ms"],
        "first_sentence": t["first_sentence_ms"] - t["llm_first_token_ms"],
        "tts_first_chunk": t["tts_first_audio_ms"] - t["first_sentence_ms"],
    }
    if hub_end:
        stages["vad_and_network_in"] = (hub_end - voice_end) * 1000
        stages["grpc"] = t["hub_end_to_first_audio_ms"] - t["tts_first_audio_ms"]
        stages["network_out"] = (first_audio - hub_end) * 1000 - t["hub_end_to_playout_ms"]
    return {"text": text, "transcript": turn["transcript"], "reply": turn["reply_text"], "total_ms": total,
            "stages_ms": stages, "timing": t}


async def one_barge_in(dev: SimDevice) -> float | None:
    start, _ = dev.say("Tell me a long story about a brave knight and a dragon.")
    deadline = time.monotonic() + 120
    playing = None
    while playing is None and time.monotonic() < deadline:
        playing = dev.backend.speaker_started_at(-45.0, since=start)
        await asyncio.sleep(0.02)
    if playing is None:
        return None
    await asyncio.sleep(1.0)  # a second into the reply (the echo guard measures the room first)
    barge, barge_end = dev.say("Please stop.")
    await asyncio.sleep(2.5)
    # Only sound that began before the barge-in speech ended belongs to the old reply: the
    # answer to the new utterance starts after its END (hangover + STT + LLM + TTS).
    segs = dev.backend.speaker_segments(-45.0, 150.0, since=playing, until=barge + 2.5)
    stop = max((end for s, end in segs if s < barge_end), default=barge)
    await dev.wait_speaker_quiet(barge, quiet_s=1.0)
    await asyncio.sleep(1.0)
    return max(0.0, (stop - barge) * 1000)


async def run(ns: argparse.Namespace) -> dict[str, Any]:
    stack = Stack(workdir=new_workdir("naila-bench-"), progress=lambda m: print(m.replace("[demo]", "[bench]")))
    try:
        stack.start_mosquitto()
        stack.start_ai_server()
        stack.start_hub()
        stack.wait_grpc_connected()
        dev = await start_device("bench-device", stack.hub_url)
        try:
            await one_turn(dev, "Hello there.")  # warm-up, not counted
            turns = []
            for i in range(ns.runs):
                text = UTTERANCES[i % len(UTTERANCES)]
                r = await one_turn(dev, text)
                if r:
                    turns.append(r)
                    print(f"  {r['total_ms']:7.0f} ms  {text!r} -> {r['reply'][:60]!r}", flush=True)
                else:
                    print(f"  (no reply) {text!r}", flush=True)
            barge = [b for b in [await one_barge_in(dev) for _ in range(ns.barge_ins)] if b is not None]
        finally:
            await dev.stop()
    finally:
        stack.stop()
    totals = [t["total_ms"] for t in turns]
    summary = {
        "clock": "time.monotonic (CLOCK_MONOTONIC, shared by all processes)",
        "machine": "2-core CPU, shipped models (Whisper tiny.en int8, SmolLM2-135M Q4_1, piper joe-us)",
        "turns": len(turns),
        "total_first_audio_ms": {"p50": pct(totals, 0.5), "p95": pct(totals, 0.95), "goal_p50": GOAL_P50_MS},
        "stages_ms": {s: {"p50": pct([t["stages_ms"][s] for t in turns if s in t["stages_ms"]], 0.5),
                          "p95": pct([t["stages_ms"][s] for t in turns if s in t["stages_ms"]], 0.95)}
                      for s in STAGES},
        "barge_in_stop_ms": {"p50": pct(barge, 0.5), "p95": pct(barge, 0.95), "max": max(barge, default=0.0),
                             "n": len(barge), "goal": GOAL_BARGE_IN_MS},
        "samples": turns,
        "barge_in_samples_ms": barge,
    }
    return summary


def plot(summary: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 3.2))
    left = 0.0
    for stage in STAGES:
        v = summary["stages_ms"][stage]["p50"]
        if v != v:  # nan
            continue
        ax.barh(["p50"], [v], left=left, label=f"{stage} {v:.0f}")
        left += max(v, 0.0)
    ax.axvline(GOAL_P50_MS, color="k", linestyle="--", label=f"goal {GOAL_P50_MS:.0f} ms")
    ax.set_xlabel("ms after end of speech (time.monotonic)")
    ax.set_title(f"NAILA end-to-end first reply audio, p50 total {summary['total_first_audio_ms']['p50']:.0f} ms")
    ax.legend(fontsize=7, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.3))
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--barge-ins", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    ns = parser.parse_args()
    summary = asyncio.run(run(ns))
    ns.out.mkdir(parents=True, exist_ok=True)
    (ns.out / "e2e_latency.json").write_text(json.dumps(summary, indent=2))
    plot(summary, ns.out / "e2e_latency.png")
    tot = summary["total_first_audio_ms"]
    print("\n| stage | p50 ms | p95 ms |\n|---|---|---|")
    for s in STAGES:
        v = summary["stages_ms"][s]
        print(f"| {s} | {v['p50']:.0f} | {v['p95']:.0f} |")
    print(f"| **total to first audio** | **{tot['p50']:.0f}** | **{tot['p95']:.0f}** |")
    b = summary["barge_in_stop_ms"]
    print(f"| barge-in stop | {b['p50']:.0f} | {b['p95']:.0f} |")
    print(f"turns {summary['turns']}, goal p50 <= {GOAL_P50_MS:.0f} ms, barge-in <= {GOAL_BARGE_IN_MS:.0f} ms")
    print(f"wrote {ns.out / 'e2e_latency.json'} and {ns.out / 'e2e_latency.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
