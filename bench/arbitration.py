"""Arbitration: false stand-downs of independent speakers vs correct stand-downs of one utterance.

Every case renders what each device's microphone captures, sample by sample at 16 kHz: real
speech (espeak-ng, several voices and sentences), each source with its own gain, delay and room
reverberation (an exponentially decaying noise tail, RT60 0.2-0.6 s), plus the room's noise.
The per-frame levels go through hub.arbitration.Arbiter (the code the hub runs) on a simulated
hub clock, frame by frame; a device claims when 3 frames are 10 dB over its noise (as the hub's
VAD would), with 15 frames of pre-roll, and withdraws its claim when its speech ends.

Kinds:
* one person, N devices: one utterance heard by every device (nearest 0 to -3 dB, the others
  -6 to -30 dB, 0-60 ms later). Correct: exactly one device answers (best: the one with the
  most speech over its noise); every other device that claimed is stood down (the *correct
  stand-down rate*).
* independent speakers, N devices: a different person (own voice, own sentence) in each room,
  onsets spread over 0-400 ms, each also heard faintly in the other rooms (-30 to -50 dB).
  Every claim should win at once; the *false stand-down rate* is the share of claims stood down
  at first (most are let through later by the re-check: that is the held time's tail).
* two people, 3 devices: two people in two rooms, a third device between them hearing both.

Clock: simulated (the arbiter's injected clock); nothing here waits, so the numbers do not depend
on the machine's load. Usage: python bench/arbitration.py [--cases N] [--seed S];
writes bench/results/arbitration.json.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.stats import pct  # noqa: E402
from hub.arbitration import FRAME_S, Arbiter, Claim, ClaimState  # noqa: E402
from shared.audio import HUB_RATE, espeak  # noqa: E402

PHRASES = [
    "What is the weather like today?",
    "Turn off the kitchen lights.",
    "How many legs does a spider have?",
    "Set a timer for ten minutes.",
    "Play some music in the living room.",
    "Who wrote Romeo and Juliet?",
    "Remind me to call my sister tomorrow.",
    "Is the front door locked?",
    "Add milk and eggs to the shopping list.",
    "What time does the pharmacy close?",
]
VOICES = ["en-us", "en-gb", "en-gb-scotland", "en-029", "en-us+f3", "en-gb+f2", "en-us-nyc", "en-gb-x-rp"]
FRAME = HUB_RATE // 50
PREROLL = 15  # hub/session.py ARBITRATION_PREROLL_FRAMES
LEAD_S = 0.6  # room noise before anyone speaks


@functools.cache
def speech(phrase: int, voice: str) -> np.ndarray:
    """One sentence in one voice, float samples, scaled so its voiced frames are about -20 dBFS."""
    audio = espeak(PHRASES[phrase], voice=voice).astype(np.float64)
    frames = audio[: audio.size // FRAME * FRAME].reshape(-1, FRAME)
    rms = np.sqrt(np.mean(frames**2, axis=1))
    voiced = rms[rms > rms.max() * 0.1]
    target = 32768 * 10 ** (-20 / 20)
    return audio * (target / float(np.sqrt(np.mean(voiced**2))))


def room(signal: np.ndarray, rt60: float, drr_db: float, rng: random.Random) -> np.ndarray:
    """The signal as a microphone in a room hears it: the direct sound plus a decaying noise tail."""
    n = int(rt60 * HUB_RATE)
    t = np.arange(n) / HUB_RATE
    nrng = np.random.default_rng(rng.randrange(2**32))
    tail = nrng.standard_normal(n) * np.exp(-6.9 * t / rt60)
    tail[: HUB_RATE // 400] = 0.0  # first reflections arrive after a few ms
    tail *= math.sqrt(10 ** (-drr_db / 10) / float(np.sum(tail**2)))
    tail[0] = 1.0
    size = 1 << math.ceil(math.log2(signal.size + n))
    out = np.fft.irfft(np.fft.rfft(signal, size) * np.fft.rfft(tail, size), size)
    return out[: signal.size + n]


@dataclass
class Source:
    audio: np.ndarray
    gain_db: float
    delay_s: float
    rt60: float
    drr_db: float


@dataclass
class Device:
    noise_db: float
    sources: list[Source]
    levels: list[float] = field(default_factory=list)

    def render(self, seconds: float, rng: random.Random) -> None:
        total = int(seconds * HUB_RATE)
        nrng = np.random.default_rng(rng.randrange(2**32))
        mic = nrng.standard_normal(total) * 32768 * 10 ** (self.noise_db / 20)
        for s in self.sources:
            heard = room(s.audio, s.rt60, s.drr_db, rng) * 10 ** (s.gain_db / 20)
            at = int(s.delay_s * HUB_RATE)
            end = min(total, at + heard.size)
            mic[at:end] += heard[: end - at]
        frames = np.clip(mic, -32768, 32767)[: total // FRAME * FRAME].reshape(-1, FRAME)
        rms = np.sqrt(np.mean(frames**2, axis=1))
        self.levels = [20 * math.log10(max(r, 1e-6) / 32768) for r in rms]


@dataclass
class Outcome:
    claimed: list[int]
    first: dict[int, ClaimState]  # each claim's first decision
    final: dict[int, ClaimState]
    held_ms: dict[int, float]  # claim -> won: how long its START was held


def simulate(devices: list[Device]) -> Outcome:
    """Feed every device's levels to one Arbiter frame by frame, as the hub's sessions do."""
    clock = {"now": 0.0}
    arbiter = Arbiter(live_devices=lambda: len(devices), clock=lambda: clock["now"])
    claims: dict[int, Claim] = {}
    first: dict[int, ClaimState] = {}
    held: dict[int, float] = {}
    quiet: dict[int, int] = {}
    done: set[int] = set()
    for i in range(len(devices[0].levels)):
        now = i * FRAME_S
        clock["now"] = now
        for d, dev in enumerate(devices):
            lv = dev.levels
            if d in claims:
                c = claims[d]
                c.feed(now, lv[i])
                quiet[d] = quiet.get(d, 0) + 1 if lv[i] < dev.noise_db + 10 else 0
                if quiet[d] >= 25 and d not in done:  # the VAD's END: the session withdraws
                    done.add(d)
                    arbiter.withdraw(c)
                continue
            if i >= 2 and all(lv[k] > dev.noise_db + 10 for k in (i - 2, i - 1, i)):
                history = [(k * FRAME_S, lv[k]) for k in range(max(0, i - PREROLL + 1), i + 1)]

                def resolved(c: Claim, d: int = d, at: float = now) -> None:
                    first.setdefault(d, c.state)
                    if c.state is ClaimState.WON:
                        held[d] = (clock["now"] - at) * 1000

                claims[d] = arbiter.claim(f"dev{d}", (i - 2) * FRAME_S, history, 3, on_resolved=resolved)
        arbiter.poll(now)
    return Outcome(sorted(claims), first, {d: c.state for d, c in claims.items()}, held)


def pick(rng: random.Random, n: int) -> list[tuple[int, str]]:
    """n different sentences in n different voices."""
    return list(zip(rng.sample(range(len(PHRASES)), n), rng.sample(VOICES, n), strict=True))


def one_person(n: int, rng: random.Random) -> dict[str, Any]:
    ((phrase, voice),) = pick(rng, 1)
    audio = speech(phrase, voice)
    near = rng.randrange(n)
    devices = []
    for d in range(n):
        gain = rng.uniform(-3, 0) if d == near else rng.uniform(-30, -6)
        drr = rng.uniform(3, 10) if d == near else rng.uniform(-8, 2)
        delay = LEAD_S + (rng.uniform(0, 0.01) if d == near else rng.uniform(0.005, 0.06))
        devices.append(Device(rng.uniform(-65, -50), [Source(audio, gain, delay, rng.uniform(0.2, 0.6), drr)]))
    for dev in devices:
        dev.render(LEAD_S + audio.size / HUB_RATE + 1.2, rng)
    out = simulate(devices)
    winners = [d for d in out.claimed if out.final[d] is ClaimState.WON]
    # The best capture: speech over the device's own noise (what the arbiter ranks by).
    best = max(devices, key=lambda dev: dev.sources[0].gain_db - dev.noise_db)
    return {
        "claims": len(out.claimed),
        "winners": winners,
        "near": near,
        "right": len(winners) == 1,
        "best": winners == [devices.index(best)],
        "others": len(out.claimed) - 1,
        "stood_down": sum(out.final[d] is ClaimState.LOST for d in out.claimed),
        "held_ms": [out.held_ms[d] for d in winners if d in out.held_ms],
    }


def independent(n: int, rng: random.Random, spread_s: float = 0.4) -> dict[str, Any]:
    talk = pick(rng, n)
    onsets = [LEAD_S + rng.uniform(0, spread_s) for _ in range(n)]
    devices = []
    for d in range(n):
        sources = []
        for p, (phrase, voice) in enumerate(talk):
            own = p == d
            gain = rng.uniform(-3, 0) if own else rng.uniform(-50, -30)
            drr = rng.uniform(3, 10) if own else rng.uniform(-8, 0)
            delay = onsets[p] + (0.0 if own else rng.uniform(0.005, 0.03))
            sources.append(Source(speech(phrase, voice), gain, delay, rng.uniform(0.2, 0.6), drr))
        devices.append(Device(rng.uniform(-65, -50), sources))
    seconds = max(onsets) + max(speech(p, v).size for p, v in talk) / HUB_RATE + 1.2
    for dev in devices:
        dev.render(seconds, rng)
    out = simulate(devices)
    return {
        "claims": len(out.claimed),
        "first_lost": sum(out.first.get(d) is ClaimState.LOST for d in out.claimed),
        "never_won": sum(out.final[d] is not ClaimState.WON for d in out.claimed),
        "held_ms": list(out.held_ms.values()),
    }


def two_people_three_devices(rng: random.Random) -> dict[str, Any]:
    talk = pick(rng, 2)
    onsets = [LEAD_S, LEAD_S + rng.uniform(0, 0.3)]
    gains = [
        [rng.uniform(-3, 0), rng.uniform(-50, -30)],
        [rng.uniform(-50, -30), rng.uniform(-3, 0)],
        [rng.uniform(-24, -10), rng.uniform(-24, -10)],
    ]  # the third device sits between them
    devices = []
    for d in range(3):
        sources = [
            Source(
                speech(*talk[p]),
                gains[d][p],
                onsets[p] + rng.uniform(0, 0.04),
                rng.uniform(0.2, 0.6),
                rng.uniform(3, 10) if gains[d][p] > -6 else rng.uniform(-8, 2),
            )
            for p in range(2)
        ]
        devices.append(Device(rng.uniform(-65, -50), sources))
    seconds = max(onsets) + max(speech(p, v).size for p, v in talk) / HUB_RATE + 1.2
    for dev in devices:
        dev.render(seconds, rng)
    out = simulate(devices)
    winners = [d for d in out.claimed if out.final[d] is ClaimState.WON]
    return {
        "winners": winners,
        "right": winners == [0, 1],
        "first_lost_own": sum(out.first.get(d) is ClaimState.LOST for d in (0, 1) if d in out.claimed),
        "held_ms": [out.held_ms[d] for d in winners if d in out.held_ms],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", type=int, default=60, help="cases per kind")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    results: dict[str, Any] = {
        "clock": "simulated hub clock (Arbiter's injected clock)",
        "cases": args.cases,
        "seed": args.seed,
        "kinds": {},
    }
    print("| case | cases | claims | stood down (correct / false) | right answerer | START held p50 / p95 ms |")
    print("|---|---|---|---|---|---|")

    def row(name: str, runs: list[dict[str, Any]], summary: dict[str, Any], down: str, right: str) -> None:
        held = [h for r in runs for h in r["held_ms"]]
        summary.update(cases=len(runs), held_ms_p50=pct(held, 0.5), held_ms_p95=pct(held, 0.95))
        results["kinds"][name] = summary
        print(
            f"| {name} | {len(runs)} | {summary.get('claims', '')} | {down} | {right} | "
            f"{pct(held, 0.5):.0f} / {pct(held, 0.95):.0f} |"
        )

    for n in (2, 3, 4):
        runs = [one_person(n, rng) for _ in range(args.cases)]
        others = sum(r["others"] for r in runs)
        down = sum(r["stood_down"] for r in runs)
        right = sum(r["right"] for r in runs)
        best = sum(r["best"] for r in runs)
        row(
            f"one person, {n} devices",
            runs,
            {
                "claims": sum(r["claims"] for r in runs),
                "other_claims": others,
                "stood_down": down,
                "correct_stand_down_rate": down / max(1, others),
                "answered_once": right,
                "best_capture": best,
                "wrong": [r for r in runs if not r["right"]][:5],
            },
            f"{down}/{others} ({100 * down / max(1, others):.0f}%) correct",
            f"{right}/{len(runs)} once, {best} by the best capture",
        )
    for n in (2, 4, 8):
        runs = [independent(n, rng) for _ in range(args.cases)]
        claims = sum(r["claims"] for r in runs)
        lost = sum(r["first_lost"] for r in runs)
        never = sum(r["never_won"] for r in runs)
        row(
            f"independent speakers, {n} devices",
            runs,
            {
                "claims": claims,
                "first_lost": lost,
                "false_stand_down_rate": lost / max(1, claims),
                "never_answered": never,
            },
            f"{lost}/{claims} ({100 * lost / max(1, claims):.0f}%) false, {never} never answered",
            f"{claims - never}/{claims}",
        )
    runs = [two_people_three_devices(rng) for _ in range(args.cases)]
    right = sum(r["right"] for r in runs)
    lost = sum(r["first_lost_own"] for r in runs)
    row(
        "two people, 3 devices (one between)",
        runs,
        {"right": right, "own_first_lost": lost, "wrong": [r for r in runs if not r["right"]][:5]},
        f"{lost} own claims false at first",
        f"{right}/{len(runs)}",
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "arbitration.json").write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out / 'arbitration.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
