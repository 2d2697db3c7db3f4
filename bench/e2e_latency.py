"""End-to-end turn latency: end of the user's speech at the device -> first reply audio at the device,
for the first turn of a conversation and for its fifth and later turns, with the hub's end of turn
by silence and by the Smart Turn model (AUDIO_END_OF_TURN) side by side in one run.

Real stack: mosquitto and the AI server as processes, one hub process per end-of-turn mode (both
linked to the one AI server, started with the same settings but AUDIO_END_OF_TURN), shipped models,
and real DeviceAgents with memory sound cards in this process. Each conversation is a new device
(the AI server keeps history per device) asked ``--turns`` questions in a row; conversation c is
run on each hub in turn with the same questions, so the modes meet the same load and words.

Clock: one per turn, ``time.monotonic`` (CLOCK_MONOTONIC, shared by every process of this machine):
the device's end of voice at the mic, the hub's END, the AI server's stage marks and the device's
first reply sample at the speaker are all read on it, so they subtract directly.

Stages of a turn (p50/p95 over the utterances):
  vad_and_network_in  end of voice at the mic -> the hub sends END (Opus uplink, jitter buffer,
                      resampling, and the silence hangover or the end-of-turn model)
  stt                 END at the AI server -> transcript
  llm_first_token     transcript -> first LLM token
  first_sentence      first token -> first speakable clause
  tts_first_chunk     clause -> first synthesised audio
  grpc                the AI server's first audio -> the hub has it (both gRPC hops, AI-side queueing)
  network_out         hub hands the first reply frame to WebRTC -> it plays at the device speaker
Barge-in stop (first mode only): new speech starts at the mic while a reply plays -> last reply sample
(a try whose reply had already ended, or paused between clauses, when the user spoke is not a sample).
Cut-off rate (a question with a mid-sentence pause split into two turns): bench/end_of_turn.py's
figure per mode, read from bench/results/end_of_turn.json (run that bench for it), not measured here.

Usage: python bench/e2e_latency.py [--conversations 10] [--turns 5] [--modes silence,smart_turn]
       [--voices espeak,piper]  (the talker's voice, one per conversation in turn)
writes bench/results/e2e_latency.json and bench/results/e2e_latency.png.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.stats import cpu as stats_cpu  # noqa: E402
from bench.stats import llm_file, pct, spread  # noqa: E402
from naila.harness import SimDevice, start_device  # noqa: E402
from naila.stack import Stack, new_workdir  # noqa: E402

# Short spoken questions of the kind the small model was not tuned on, asked in a Latin square
# (questions_for): every conversation asks distinct questions, and each question is asked as often
# on turn 1 as on turn 5, so the turn-5 figure differs from turn 1 by the turn, not by the words.
QUESTIONS = [
    "What is the capital of France?",
    "How many legs does a spider have?",
    "What color is the sky?",
    "Tell me a joke.",
    "What is two plus two?",
    "Who wrote Romeo and Juliet?",
    "How far away is the moon?",
    "What day comes after Monday?",
    "Can you recommend a good book?",
    "What is the biggest ocean?",
    "How many days are in a week?",
    "What do bees make?",
    "Which planet is the largest?",
    "What is the opposite of hot?",
    "How many minutes are in an hour?",
    "What animal says moo?",
    "What is frozen water called?",
    "Name a fruit that is yellow.",
    "What is the tallest animal?",
    "How many wheels does a bicycle have?",
    "What do plants need to grow?",
    "What is the color of grass?",
    "Who painted the Mona Lisa?",
    "What is the capital of Japan?",
    "How many months are in a year?",
    "What sound does a cat make?",
    "What is the largest desert?",
    "What language is spoken in Spain?",
    "How many hours are in a day?",
    "What is the fastest land animal?",
]
STAGES = ["vad_and_network_in", "stt", "llm_first_token", "first_sentence", "tts_first_chunk", "grpc", "network_out"]
MODES = ["silence", "smart_turn"]
# The talker's voice, one per conversation in turn (naila/harness.py SimDevice.say): espeak-ng's
# formant voice and the shipped piper voice. Smart Turn hears the end of a question in its
# prosody: on the 30 questions below (clean, 200 ms of quiet after them) it rates
# espeak's 0.84 p50 complete and 5 of 30 at >= 0.95 (HUB_END_OF_TURN_THRESHOLD), piper's 0.96
# and 17 of 30. A person's falling intonation is closer to piper's; espeak alone would time the
# model on the voice it trusts least (docs/benchmarks.md, issue 20's sixth round).
VOICES = ["espeak", "piper"]
LATER_TURN = 5  # "turn 5+": the history holds at least four exchanges
GOAL_P50_MS = 500.0
GOAL_LATER_TURN_MS = 50.0  # turn 5+ within this of turn 1
GOAL_BARGE_IN_MS = 150.0
END_OF_TURN_RESULTS = ROOT / "bench" / "results" / "end_of_turn.json"


def questions_for(conversation: int, turns: int) -> list[str]:
    """The questions of one conversation: conversations come in groups of ``turns``; a group shares
    one block of ``turns`` questions, each conversation of it starting one question further on.
    (The order before, QUESTIONS[(k * conversations + c) % len], repeated turn 1's question on
    turn 4 with 10 conversations, and turn 1 and turn 5 never asked the same questions.)"""
    block, shift = divmod(conversation, turns)
    return [QUESTIONS[(block * turns + (k + shift) % turns) % len(QUESTIONS)] for k in range(turns)]


async def one_turn(dev: SimDevice, text: str, voice: str = "espeak") -> dict[str, Any] | None:
    before = len(dev.turns())
    played_before = dev.agent.pipeline.stats()
    _start, voice_end = dev.say(text, voice=voice)
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
        # The hub's marks may be missing on a turn (a reply that beat the link's callback): that
        # turn still counts, without these two stages.
        if "hub_end_to_first_audio_ms" in t:
            stages["grpc"] = t["hub_end_to_first_audio_ms"] - t["tts_first_audio_ms"]
        if "hub_end_to_playout_ms" in t:
            stages["network_out"] = (first_audio - hub_end) * 1000 - t["hub_end_to_playout_ms"]
    played = dev.agent.pipeline.stats()
    return {
        "text": text,
        "transcript": turn["transcript"],
        "reply": turn["reply_text"],
        "total_ms": total,
        "stages_ms": stages,
        "timing": t,
        # The device's playback queue this turn: silence dropped to hold it at the prebuffer (before
        # issue 20 that much latency stayed queued for every later reply), and underruns.
        "playback": {
            "trimmed_ms": played.playback_trimmed_ms - played_before.playback_trimmed_ms,
            "underruns": played.playback_underruns - played_before.playback_underruns,
            "mic_dropped_ms": played.mic_dropped_ms - played_before.mic_dropped_ms,
        },
    }


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
    # Then while it sounds: a reply pauses ~0.2 s between clauses (piper's own silence at each end),
    # and a "stop" said into that pause measures nothing (the next clause may never have started).
    sounding_by = time.monotonic() + 3.0
    while time.monotonic() < sounding_by:
        now = time.monotonic()
        recent = dev.backend.speaker_segments(-45.0, 0.0, since=now - 0.06)
        if recent and recent[-1][1] >= now - 0.03:
            break
        await asyncio.sleep(0.01)
    barge, barge_end = dev.say("Please stop.")
    await asyncio.sleep(2.5)
    # Only sound that began before the barge-in speech ended belongs to the old reply: the
    # answer to the new utterance starts after its END (hangover + STT + LLM + TTS).
    segs = dev.backend.speaker_segments(-45.0, 150.0, since=playing, until=barge + 2.5)
    stop = max((end for s, end in segs if s < barge_end), default=barge)
    await dev.wait_speaker_quiet(barge, quiet_s=1.0)
    await asyncio.sleep(1.0)
    if not any(s <= barge < end for s, end in segs):
        return None  # the reply had ended (or paused between clauses) before the user spoke: no sample
    return (stop - barge) * 1000


def summarise(turns: list[dict[str, Any]]) -> dict[str, Any]:
    totals = [t["total_ms"] for t in turns]
    trimmed = [t["playback"]["trimmed_ms"] for t in turns if "playback" in t]
    return {
        "n": len(turns),
        "total_first_audio_ms": {"p50": pct(totals, 0.5), "p95": pct(totals, 0.95)},
        "playback_trimmed_ms": {"p50": pct(trimmed, 0.5), "max": max(trimmed, default=0.0)},
        "playback_underruns": sum(t["playback"]["underruns"] for t in turns if "playback" in t),
        "stages_ms": {
            s: {
                "p50": pct([t["stages_ms"][s] for t in turns if s in t["stages_ms"]], 0.5),
                "p95": pct([t["stages_ms"][s] for t in turns if s in t["stages_ms"]], 0.95),
            }
            for s in STAGES
        },
    }


def cut_off_rates() -> dict[str, Any]:
    """bench/end_of_turn.py's cut-off rate per end-of-turn configuration (its JSON; empty if not run)."""
    try:
        data = json.loads(END_OF_TURN_RESULTS.read_text())
    except (OSError, ValueError):
        return {}
    found = data.get("end_of_turn", data)
    return {
        name: v["cut_off_rate"]
        for name, v in found.items()
        if isinstance(v, dict) and "cut_off_rate" in v and not name.startswith("grid_")  # not the --grid search
    }


def hub_for(stack: Stack, mode: str) -> Stack:
    """A hub process for ``mode`` beside the stack's, linked to the same broker and AI server."""
    workdir = stack.workdir / f"hub-{mode}"  # its own log
    workdir.mkdir(exist_ok=True)
    hub = Stack(
        workdir=workdir,
        mqtt_host=stack.mqtt_host,
        mqtt_port=stack.mqtt_port,
        ai_port=stack.ai_port,
        extra_env={**stack.extra_env, "AUDIO_END_OF_TURN": mode},
        progress=stack.progress,
        read_token=stack.read_token,
        device_token=stack.device_token,
    )
    hub.start_hub()
    hub.wait_grpc_connected()
    return hub


# A device that has never played a sound cuts the end of its first utterance short: its mic path
# attenuates the last syllable (the last frame above -45 dBFS left the device 50-83 ms before the
# voice ended on 5 of 11 first turns, at most 38 ms before once anything had played; which part of
# the path does it is not found, docs/benchmarks.md), so the hub heard the end early. Every device in a home
# has played something (a reply, a chime) before the question a user times, so each conversation's
# new device plays a short chime first: turn 1 is a new conversation, not a device fresh from boot.
CHIME_S = 0.3


async def chime(dev: SimDevice) -> None:
    rate = dev.agent.pipeline.rate
    t = np.arange(round(CHIME_S * rate)) / rate
    dev.agent.pipeline.playback.push((3000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16))
    await asyncio.sleep(CHIME_S + 1.0)


async def conversation(hub: Stack, device_id: str, questions: list[str], mode: str,
                       voice: str) -> list[dict[str, Any]]:
    dev = await start_device(device_id, hub.hub_url)
    out = []
    try:
        await chime(dev)
        for k, text in enumerate(questions, start=1):
            r = await one_turn(dev, text, voice)
            if r is None:
                print(f"  {mode:10} {voice:6} turn {k}  (no reply) {text!r}", flush=True)
                continue
            r.update(mode=mode, turn=k, device_id=device_id, voice=voice)
            out.append(r)
            print(f"  {mode:10} {voice:6} turn {k} {r['total_ms']:6.0f} ms  {text!r} -> {r['reply'][:50]!r}",
                  flush=True)
    finally:
        await dev.stop()
    return out


async def run(ns: argparse.Namespace) -> dict[str, Any]:
    load_at_start = os.getloadavg()  # the box's other work: figures on a loaded box are upper bounds
    stack = Stack(workdir=new_workdir("naila-bench-"), progress=lambda m: print(m.replace("[demo]", "[bench]")))
    hubs: dict[str, Stack] = {}
    samples: list[dict[str, Any]] = []
    barge: list[float] = []
    barge_tries = 0
    try:
        stack.start_mosquitto()
        stack.start_ai_server()
        for mode in ns.modes:
            hubs[mode] = hub_for(stack, mode)
            warm = await start_device(f"warm-{mode}", hubs[mode].hub_url)
            try:
                await one_turn(warm, "Hello there.")  # warm-up, not counted
            finally:
                await warm.stop()
        for c in range(ns.conversations):
            questions = questions_for(c, ns.turns)
            voice = ns.voices[c % len(ns.voices)]
            for mode in ns.modes:
                samples += await conversation(hubs[mode], f"bench-{mode}-{c}", questions, mode, voice)
        if ns.barge_ins:
            dev = await start_device("bench-barge-in", hubs[ns.modes[0]].hub_url)
            try:
                # A try counts only if the reply was sounding when "Please stop." began; up to twice as many.
                while len(barge) < ns.barge_ins and barge_tries < 2 * ns.barge_ins:
                    barge_tries += 1
                    if (stop_ms := await one_barge_in(dev)) is not None:
                        barge.append(stop_ms)
            finally:
                await dev.stop()
    finally:
        for hub in hubs.values():
            hub.stop()
        stack.stop()
    modes: dict[str, Any] = {}
    for mode in ns.modes:
        first = summarise([t for t in samples if t["mode"] == mode and t["turn"] == 1])
        later = summarise([t for t in samples if t["mode"] == mode and t["turn"] >= LATER_TURN])
        mine = [t for t in samples if t["mode"] == mode]
        modes[mode] = {
            "turn_1": first,
            f"turn_{LATER_TURN}_plus": later,
            "later_minus_first_p50_ms": later["total_first_audio_ms"]["p50"] - first["total_first_audio_ms"]["p50"],
            "all_turns_ms": spread([t["total_ms"] for t in mine]),
            "by_voice_all_turns_ms": {
                v: spread(ts) for v in ns.voices if (ts := [t["total_ms"] for t in mine if t["voice"] == v])
            },
        }
    return {
        "what": "end of speech at the device's mic -> first reply audio at its speaker",
        "clock": "time.monotonic per turn (CLOCK_MONOTONIC, shared by all processes)",
        "cpu": stats_cpu(),
        "machine": f"2-core CPU, shipped models (Whisper tiny.en int8, {llm_file()}, piper joe-us)",
        "load_average_1_5_15": {
            "start": [round(x, 2) for x in load_at_start],
            "end": [round(x, 2) for x in os.getloadavg()],
        },
        "conversations": ns.conversations,
        "turns_per_conversation": ns.turns,
        "voices": ns.voices,
        "goal": {"p50_ms": GOAL_P50_MS, "later_turn_within_ms": GOAL_LATER_TURN_MS, "barge_in_ms": GOAL_BARGE_IN_MS},
        "modes": modes,
        "cut_off_rate": cut_off_rates(),
        "barge_in_stop_ms": {
            "p50": pct(barge, 0.5),
            "p95": pct(barge, 0.95),
            "max": max(barge, default=0.0),
            "n": len(barge),
            "goal": GOAL_BARGE_IN_MS,
        },
        "samples": samples,
        "barge_in_samples_ms": barge,
        "barge_in_tries": barge_tries,
    }


def plot(summary: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [
        (f"{mode} {bucket.replace('_', ' ')}", data)
        for mode, m in summary["modes"].items()
        for bucket, data in m.items()
        if isinstance(data, dict) and "stages_ms" in data  # turn 1, turns 5+ (not the pooled figures)
    ]
    fig, ax = plt.subplots(figsize=(9, 1.2 + 0.5 * len(rows)))

    def p50(d: dict[str, Any], stage: str) -> float:
        v = float(d["stages_ms"][stage]["p50"])
        return max(v, 0.0) if v == v else 0.0  # NaN: stage not seen

    for i, stage in enumerate(STAGES):
        lefts = [sum(p50(d, s) for s in STAGES[:i]) for _, d in rows]
        widths = [p50(d, stage) for _, d in rows]
        ax.barh([name for name, _ in rows], widths, left=lefts, label=stage, color=f"C{i}")
    ax.axvline(GOAL_P50_MS, color="k", linestyle="--", label=f"goal {GOAL_P50_MS:.0f} ms")
    ax.set_xlabel("ms after end of speech (p50 per stage, time.monotonic)")
    ax.set_title("NAILA end of speech -> first reply audio at the device")
    ax.legend(fontsize=7, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.35))
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--conversations", type=int, default=10, help="conversations per mode (turn-1 samples)")
    parser.add_argument("--turns", type=int, default=LATER_TURN, help=f"questions per conversation (>= {LATER_TURN})")
    parser.add_argument("--modes", type=lambda v: v.split(","), default=MODES, help="AUDIO_END_OF_TURN values")
    parser.add_argument("--voices", type=lambda v: v.split(","), default=VOICES,
                        help="talker voices (espeak, piper), one per conversation in turn")
    parser.add_argument("--barge-ins", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    ns = parser.parse_args()
    if ns.turns < LATER_TURN:
        parser.error(f"--turns must be at least {LATER_TURN}")
    summary = asyncio.run(run(ns))
    ns.out.mkdir(parents=True, exist_ok=True)
    (ns.out / "e2e_latency.json").write_text(json.dumps(summary, indent=2))
    plot(summary, ns.out / "e2e_latency.png")
    later = f"turn_{LATER_TURN}_plus"
    cols = [(mode, bucket) for mode in summary["modes"] for bucket in ("turn_1", later)]
    print("\n| stage (p50 ms) | " + " | ".join(f"{m} {b.replace('_', ' ')}" for m, b in cols) + " |")
    print("|---|" + "---|" * len(cols))
    for s in STAGES:
        print(f"| {s} | " + " | ".join(f"{summary['modes'][m][b]['stages_ms'][s]['p50']:.0f}" for m, b in cols) + " |")
    print(
        "| **total to first audio p50** | "
        + " | ".join(f"**{summary['modes'][m][b]['total_first_audio_ms']['p50']:.0f}**" for m, b in cols)
        + " |"
    )
    print(
        "| total to first audio p95 | "
        + " | ".join(f"{summary['modes'][m][b]['total_first_audio_ms']['p95']:.0f}" for m, b in cols)
        + " |"
    )
    print("| n | " + " | ".join(f"{summary['modes'][m][b]['n']}" for m, b in cols) + " |")
    print(
        "| device playback: silence dropped per turn p50 / underruns | "
        + " | ".join(
            f"{d['playback_trimmed_ms']['p50']:.0f} ms / {d['playback_underruns']}"
            for d in (summary["modes"][m][b] for m, b in cols)
        )
        + " |"
    )
    for mode, m in summary["modes"].items():
        print(
            f"{mode}: turn {LATER_TURN}+ minus turn 1, p50: {m['later_minus_first_p50_ms']:+.0f} ms "
            f"(goal within {GOAL_LATER_TURN_MS:.0f} ms); all turns p50 / p95 {m['all_turns_ms']['p50']:.0f} / "
            f"{m['all_turns_ms']['p95']:.0f} ms; by voice "
            + ", ".join(f"{v} {d['p50']:.0f} / {d['p95']:.0f} ms (n {d['n']})"
                        for v, d in m["by_voice_all_turns_ms"].items())
        )
    print(f"cut-off rate (bench/end_of_turn.py): {summary['cut_off_rate'] or 'not run'}")
    b = summary["barge_in_stop_ms"]
    print(f"barge-in stop p50 {b['p50']:.0f} ms p95 {b['p95']:.0f} ms (n {b['n']} of "
          f"{summary['barge_in_tries']} tries: "
          f"a try counts when the reply was sounding as the user spoke; goal <= {GOAL_BARGE_IN_MS:.0f} ms)")
    print(
        f"load average (1/5/15 min) at the start {summary['load_average_1_5_15']['start']}, "
        f"at the end {summary['load_average_1_5_15']['end']}"
    )
    print(f"wrote {ns.out / 'e2e_latency.json'} and {ns.out / 'e2e_latency.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
