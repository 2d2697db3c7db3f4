"""Wake word cut-off and smoothing sweep (issue 19): detection in noise against false wakes.

The same audio as bench/wake_word.py (its clips and its 10 minutes of speech without the wake word,
same seed): the okay_nabu model runs once over it with no smoothing (sliding window 1), its raw
probabilities are kept with their times, and every (cut-off, sliding window) pair is then applied
offline exactly as pymicro-wakeword does (mean of the last N probabilities > cut-off, one
detection per 1.5 s as shared/wakeword.py). The shipped setting is cut-off 0.85, window 5.

    .venv/bin/python bench/wake_word_cutoff.py [--n 96] [--minutes 10]

prints a table and writes bench/results/wake_word_cutoff.json.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import wake_word as ww
from shared.audio import Int16Array, espeak
from shared.wakeword import DEFAULT_REFRACTORY_MS, WAKE_RATE, piper_speech

CUTOFFS = (0.85, 0.8, 0.75, 0.7, 0.65, 0.6, 0.5)
WINDOWS = (3, 4, 5, 7)


class RawModel:
    """okay_nabu's probabilities, unsmoothed, each with the time (s) of the audio fed so far."""

    def __init__(self) -> None:
        from pymicro_wakeword import MicroWakeWord, MicroWakeWordFeatures, Model

        self.features = MicroWakeWordFeatures()
        self.model = MicroWakeWord.from_builtin(Model("okay_nabu"))
        self.model.sliding_window_size = 1
        self.model._probabilities = deque(maxlen=1)  # the smoothing is applied offline
        self.samples = 0

    def run(self, audio: Int16Array) -> list[tuple[float, float]]:
        out: list[tuple[float, float]] = []
        for i in range(0, audio.size - ww.FRAME + 1, ww.FRAME):
            for f in self.features.process_streaming(audio[i : i + ww.FRAME].astype("<i2").tobytes()):
                p = self.model.process_streaming_prob(f)
                if p is not None and len(self.model._features) == 0:  # an inference ran
                    out.append(((self.samples + ww.FRAME) / WAKE_RATE, float(p)))
            self.samples += ww.FRAME
        return out


def fires(probs: list[tuple[float, float]], cutoff: float, window: int) -> list[float]:
    """Detection times: pymicro-wakeword's sliding mean over ``window`` inferences, then the refractory."""
    recent: deque[float] = deque(maxlen=window)
    quiet_until = -1.0
    hits = []
    for t, p in probs:
        recent.append(p)
        if len(recent) == window and sum(recent) / window > cutoff and t >= quiet_until:
            hits.append(t)
            quiet_until = t + DEFAULT_REFRACTORY_MS / 1000
    return hits


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=96)
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "wake_word_cutoff.json")
    ns = ap.parse_args()
    rng = np.random.default_rng(19)  # bench/wake_word.py's seed: the same clips, in the same order
    t0 = time.monotonic()
    conditions = list(
        itertools.product(
            [0.85, 1.0, 1.15, 1.3],
            [0.0, -12.0, -24.0],
            [(None, "clean"), (20.0, "white"), (10.0, "white"), (10.0, "babble")],
        )
    )
    model = RawModel()
    clips = []  # (noise label, probabilities relative to the clip, wake word end)
    for i in range(ns.n):
        speed, level, (snr, kind) = conditions[i % len(conditions)]
        wake = piper_speech("Okay Nabu.", length_scale=speed)
        clip = np.concatenate(
            [ww.silence(0.6), wake, ww.silence(0.4), piper_speech(ww.QUESTIONS[i % len(ww.QUESTIONS)]), ww.silence(1.6)]
        )
        clip = ww.with_noise(ww.gain(clip, level), snr, kind, rng)
        start = model.samples / WAKE_RATE
        probs = [(t - start, p) for t, p in model.run(clip)]
        noise = kind if snr is None else f"{kind} {snr:.0f} dB"
        clips.append((noise, probs, 0.6 + wake.size / WAKE_RATE))
    # The false-wake audio, as bench/wake_word.py builds it (the rng continues as there).
    parts: list[Int16Array] = []
    target = int(ns.minutes * 60 * WAKE_RATE)
    for k in itertools.count():
        text = ww.SENTENCES[k % len(ww.SENTENCES)]
        if k % 2 == 0:
            speech = piper_speech(text, length_scale=ww.PIPER_SPEEDS[(k // 2) % len(ww.PIPER_SPEEDS)])
        else:
            voice, wpm = ww.ESPEAK_VOICES[(k // 2) % len(ww.ESPEAK_VOICES)]
            speech = espeak(text, rate=WAKE_RATE, voice=voice, wpm=wpm)
        parts += [speech, ww.silence(float(rng.uniform(0.2, 0.8)))]
        if sum(p.size for p in parts) >= target:
            break
    audio = np.concatenate(parts)
    quiet = RawModel().run(audio)
    rows: list[dict[str, Any]] = []
    for cutoff, window in itertools.product(CUTOFFS, WINDOWS):
        by: dict[str, list[int]] = {}
        for noise, probs, wake_end in clips:
            ok = any(0.6 <= t <= wake_end + 1.0 for t in fires(probs, cutoff, window))
            by.setdefault(noise, [0, 0])
            by[noise][0] += ok
            by[noise][1] += 1
        false = fires(quiet, cutoff, window)
        rows.append(
            {
                "cutoff": cutoff,
                "window": window,
                "detected": sum(v[0] for v in by.values()),
                "utterances": len(clips),
                "by_noise": {k: f"{v[0]}/{v[1]}" for k, v in sorted(by.items())},
                "false_wakes": len(false),
                "false_wakes_at_s": [round(t, 2) for t in false],
            }
        )
    print(f"{'cutoff':>6} {'window':>6} {'detected':>9} {'white 10 dB':>12} {'babble 10 dB':>13} {'false wakes':>12}")
    for r in rows:
        print(
            f"{r['cutoff']:>6} {r['window']:>6} {r['detected']:>5}/{r['utterances']:<3} "
            f"{r['by_noise'].get('white 10 dB', '-'):>12} {r['by_noise'].get('babble 10 dB', '-'):>13} "
            f"{r['false_wakes']:>8} in {audio.size / WAKE_RATE:.0f} s"
        )
    result = {
        "bench": "wake_word_cutoff",
        "model": "okay_nabu",
        "shipped": {"cutoff": 0.85, "window": 5},
        "false_wake_audio_s": round(audio.size / WAKE_RATE, 1),
        "rows": rows,
        "wall_s": round(time.monotonic() - t0, 1),
    }
    ns.out.parent.mkdir(parents=True, exist_ok=True)
    ns.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {ns.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
