"""Arbitration: decision accuracy and the delay it adds to the first START, over generated cases.

Each case places one or two spoken utterances (espeak-ng, real speech envelopes) in a home with
two or three devices. Every device hears each utterance with its own gain (distance), delay
(distance + network, 0-60 ms) and noise floor; its onset is confirmed after 3 frames 10 dB
above its noise, as the hub's VAD would. The claims go through hub.arbitration.Arbiter on a
simulated hub clock (the same code the hub runs), fed frame by frame.

Correct means: for one utterance, exactly one device wins and it is the one that heard it
loudest above its noise; for two different utterances at once (two people in two rooms),
each utterance gets exactly one winner. Added latency = decision time - onset confirmation
of the device that wins (what the hub holds START back for).

Clock: simulated (the arbiter's injected clock); nothing here waits.
Usage: python bench/arbitration.py [--cases N]; writes bench/results/arbitration.json.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.stats import pct  # noqa: E402
from hub.arbitration import FRAME_S, Arbiter, Claim, ClaimState  # noqa: E402
from shared.audio import HUB_RATE, Int16Array, espeak, rms_dbfs  # noqa: E402

PHRASES = [
    "What is the weather like today?",
    "Turn off the kitchen lights.",
    "How many legs does a spider have?",
    "Set a timer for ten minutes.",
    "Play some music in the living room.",
    "Who wrote Romeo and Juliet?",
]
FRAME = HUB_RATE // 50


def envelope(audio: Int16Array) -> list[float]:
    return [rms_dbfs(audio[i : i + FRAME]) for i in range(0, audio.size - FRAME + 1, FRAME)]



def device_levels(
    sources: list[tuple[list[float], float, float]], noise_db: float, rng: random.Random, frames: int
) -> list[float]:
    """Per-frame dB at one device: the power sum of its noise and each (envelope, gain, delay) source."""
    out = []
    for i in range(frames):
        power = 10 ** ((noise_db + rng.uniform(-1.5, 1.5)) / 10)
        for env, gain, delay in sources:
            j = i - round(delay / FRAME_S)
            if 0 <= j < len(env):
                power += 10 ** ((env[j] + gain) / 10)
        out.append(10 * math.log10(power))
    return out


def run_case(envs: list[list[float]], n_devices: int, two_people: bool, rng: random.Random) -> dict[str, Any]:
    lead = 30  # frames of room noise before anyone speaks
    utterances = [rng.randrange(len(envs))]
    if two_people:
        utterances.append(rng.choice([k for k in range(len(envs)) if k != utterances[0]]))
    # Each utterance is spoken near one device (gain 0 dB there), farther from the others.
    speaker_near = rng.sample(range(n_devices), len(utterances))
    devices = []
    for d in range(n_devices):
        noise = rng.uniform(-65, -50)
        sources = []
        for u, near in zip(utterances, speaker_near, strict=True):
            gain = rng.uniform(-3, 0) if d == near else rng.uniform(-30, -6)
            if two_people and d != near:
                gain -= 12  # the other person is in another room, behind a wall
            delay = lead * FRAME_S + rng.uniform(0, 0.06) + (rng.uniform(0, 0.1) if u != utterances[0] else 0)
            sources.append((envs[u], gain, delay))
        frames = lead + max(len(e) for e in envs) + 20
        levels = device_levels(sources, noise, rng, frames)
        devices.append({"noise": noise, "levels": levels, "sources": sources})

    t = {"now": 0.0}
    arbiter = Arbiter(live_devices=lambda: n_devices, clock=lambda: t["now"])
    claims: dict[int, Claim] = {}
    onset_at: dict[int, float] = {}
    decided_at: dict[int, float] = {}
    n_frames = len(devices[0]["levels"])
    for i in range(n_frames):
        now = i * FRAME_S
        t["now"] = now
        for d, dev in enumerate(devices):
            levels = dev["levels"]
            if d in claims:
                claims[d].feed(now, levels[i])
                continue
            if i >= 2 and all(levels[k] > dev["noise"] + 10 for k in (i - 2, i - 1, i)):
                history = [(k * FRAME_S, levels[k]) for k in range(max(0, i - 12), i + 1)]
                onset_at[d] = now

                def resolved(c: Claim, d: int = d) -> None:
                    decided_at[d] = t["now"]

                claims[d] = arbiter.claim(f"dev{d}", (i - 2) * FRAME_S, history, 3, on_resolved=resolved)
        arbiter.poll(now)

    winners = sorted(d for d, c in claims.items() if c.state is ClaimState.WON)
    # Expected: per utterance, the device where it is loudest above that device's noise.
    expected = []
    for u_idx in range(len(utterances)):
        best = max(range(n_devices), key=lambda d: devices[d]["sources"][u_idx][1] - devices[d]["noise"])
        expected.append(best)
    correct = sorted(set(expected)) == winners
    added = [decided_at[d] - onset_at[d] for d in winners if d in decided_at]
    return {"devices": n_devices, "two_people": two_people, "correct": correct, "winners": winners,
            "expected": sorted(set(expected)), "added_ms": [a * 1000 for a in added]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", type=int, default=60, help="cases per kind")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    rng = random.Random(7)
    envs = [envelope(espeak(p)) for p in PHRASES]
    kinds = [(2, False), (3, False), (2, True), (3, True)]
    results: dict[str, Any] = {"clock": "simulated hub clock (Arbiter's injected clock)", "kinds": {}}
    all_added: list[float] = []
    print("| case | cases | correct | added to START p50 / p95 ms |")
    print("|---|---|---|---|")
    for n, two in kinds:
        runs = [run_case(envs, n, two, rng) for _ in range(args.cases)]
        added = [a for r in runs for a in r["added_ms"]]
        all_added += added
        ok = sum(r["correct"] for r in runs)
        name = f"{n} devices, {'two people' if two else 'one person'}"
        results["kinds"][name] = {"cases": len(runs), "correct": ok, "accuracy": ok / len(runs),
                                  "added_ms_p50": pct(added, 0.5), "added_ms_p95": pct(added, 0.95),
                                  "wrong": [r for r in runs if not r["correct"]][:5]}
        print(f"| {name} | {len(runs)} | {ok} ({100 * ok / len(runs):.0f}%) | {pct(added, 0.5):.0f} / "
              f"{pct(added, 0.95):.0f} |")
    results["added_ms_p50"] = pct(all_added, 0.5)
    results["added_ms_p95"] = pct(all_added, 0.95)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "arbitration.json").write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out / 'arbitration.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
