"""Wake word benchmark: detection rate, false wakes per hour of speech without it, CPU per stream.

The detector is the hub's (shared/wakeword.py over pymicro-wakeword's okay_nabu), fed 20 ms
frames of 16 kHz audio exactly as a hub session feeds it.

* Detection: N utterances of "Okay Nabu" followed by a question, in the shipped piper voice,
  varied in speed (piper's length_scale), level (-24..0 dB) and background noise (white or
  babble-like noise at 20 / 10 dB SNR), each between silences; a hit is a detection within the
  utterance. espeak-ng's "okay nabu" is reported apart (it is known not to fire the model).
* False wakes: sentences without the wake word (piper at several speeds, espeak-ng with several
  voices and rates), concatenated with short pauses; detections per hour of that audio.
* CPU: process time of the detector per second of audio (one stream, one model).

Writes bench/results/wake_word.json. Run: ``.venv/bin/python bench/wake_word.py [--n 60] [--minutes 10]``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shared.audio import Int16Array, espeak
from shared.wakeword import WAKE_RATE, WakeWordDetector, piper_speech

FRAME = 320
QUESTIONS = [
    "How many legs does a spider have?", "What time is it?", "Set a timer for ten minutes.",
    "Turn on the kitchen lights.", "What is the weather like tomorrow?", "Play some music in the living room.",
]
SENTENCES = [
    "The quick brown fox jumps over the lazy dog.", "I will be home a little late tonight.",
    "Could you pass me the salt, please?", "The train to the city leaves at half past eight.",
    "We should paint the fence before the summer ends.", "My sister works at the hospital on weekends.",
    "Okay, let's have a look at the numbers together.", "Nobody knows where the old map went.",
    "The children played in the garden until dinner was ready.", "Did you remember to lock the back door?",
    "A cup of tea would be lovely right now.", "The meeting has been moved to Thursday afternoon.",
    "Please put the blue box next to the bookshelf.", "I think the neighbours are having a party.",
    "The football match ended in a draw again.", "Turn left after the bakery and keep going straight.",
    "She bought three apples, two pears and a melon.", "Hey, how was your trip to the mountains?",
    "The printer in the office is out of paper.", "We need to call the plumber about the sink.",
    "Okay now, everybody, back to work.", "I'm not sure that's such a good idea.",
    "The news said it would rain all weekend.", "Can you believe how fast this year went by?",
    "Let me know when the laundry is done.", "The dog barked at the mailman again this morning.",
    "Grandma makes the best apple pie in town.", "It's a nice day for a walk by the river.",
    "Okay, and then we'll take a taxi to the airport.", "The museum is closed on Mondays.",
]
ESPEAK_VOICES = [("en-us", 160), ("en-gb", 150), ("en-us+f3", 175), ("en-gb+m3", 140), ("en-us+m7", 190)]
PIPER_SPEEDS = [0.85, 1.0, 1.2]


def silence(seconds: float) -> Int16Array:
    return np.zeros(int(seconds * WAKE_RATE), dtype=np.int16)


def babble(n: int, rng: np.random.Generator) -> Int16Array:
    """Babble-like noise: two unrelated piper sentences mixed, looped to ``n`` samples."""
    a = piper_speech(str(rng.choice(SENTENCES)), length_scale=1.1)
    b = piper_speech(str(rng.choice(SENTENCES)), length_scale=0.9)
    m = np.zeros(max(a.size, b.size), dtype=np.float64)
    m[: a.size] += a
    m[: b.size] += b
    return np.resize(m, n).astype(np.float64)


def with_noise(x: Int16Array, snr_db: float | None, kind: str, rng: np.random.Generator) -> Int16Array:
    if snr_db is None:
        return x
    sig = x.astype(np.float64)
    noise = rng.normal(0, 1, x.size) if kind == "white" else babble(x.size, rng)
    p_sig = np.mean(sig[np.abs(sig) > 100] ** 2) if np.any(np.abs(sig) > 100) else 1.0
    noise *= np.sqrt(p_sig / 10 ** (snr_db / 10) / max(np.mean(noise**2), 1e-9))
    return np.clip(sig + noise, -32768, 32767).astype(np.int16)


def gain(x: Int16Array, db: float) -> Int16Array:
    return np.clip(x.astype(np.float64) * 10 ** (db / 20), -32768, 32767).astype(np.int16)


def run_stream(det: WakeWordDetector, audio: Int16Array) -> list[float]:
    hits = []
    for i in range(0, audio.size - FRAME + 1, FRAME):
        if det.process(audio[i : i + FRAME]):
            hits.append((i + FRAME) / WAKE_RATE)
    return hits


def detection(n: int, rng: np.random.Generator) -> dict[str, object]:
    conditions = list(itertools.product([0.85, 1.0, 1.15, 1.3], [0.0, -12.0, -24.0],
                                        [(None, "clean"), (20.0, "white"), (10.0, "white"), (10.0, "babble")]))
    det = WakeWordDetector("okay_nabu")
    hits = 0
    by: dict[str, list[int]] = {}
    misses: list[dict[str, object]] = []
    for i in range(n):
        speed, level, (snr, kind) = conditions[i % len(conditions)]
        wake = piper_speech("Okay Nabu.", length_scale=speed)
        clip = np.concatenate([silence(0.6), wake, silence(0.4), piper_speech(QUESTIONS[i % len(QUESTIONS)]),
                               silence(1.6)])
        clip = with_noise(gain(clip, level), snr, kind, rng)
        fired = run_stream(det, clip)
        wake_end = 0.6 + wake.size / WAKE_RATE
        ok = any(0.6 <= t <= wake_end + 1.0 for t in fired)
        hits += ok
        noise = kind if snr is None else f"{kind} {snr:.0f} dB"
        for key in (f"speed {speed}", f"level {level:+.0f} dB", f"noise {noise}"):
            by.setdefault(key, [0, 0])
            by[key][0] += ok
            by[key][1] += 1
        if not ok:
            misses.append({"speed": speed, "level_db": level, "noise": kind, "snr_db": snr})
    espeak_hits = 0
    for voice, wpm in ESPEAK_VOICES:
        clip = np.concatenate([silence(0.6), espeak("okay nabu", rate=WAKE_RATE, voice=voice, wpm=wpm), silence(1.5)])
        espeak_hits += bool(run_stream(det, clip))
    det.close()
    return {
        "utterances": n,
        "detected": hits,
        "rate": round(hits / n, 4),
        "by_condition": {k: f"{v[0]}/{v[1]}" for k, v in sorted(by.items())},
        "misses": misses[:20],
        "espeak_okay_nabu_detected": f"{espeak_hits}/{len(ESPEAK_VOICES)}",
    }


def false_wakes(minutes: float, rng: np.random.Generator) -> dict[str, object]:
    parts: list[Int16Array] = []
    total = 0
    target = int(minutes * 60 * WAKE_RATE)
    for k in itertools.count():
        text = SENTENCES[k % len(SENTENCES)]
        if k % 2 == 0:
            speech = piper_speech(text, length_scale=PIPER_SPEEDS[(k // 2) % len(PIPER_SPEEDS)])
        else:
            voice, wpm = ESPEAK_VOICES[(k // 2) % len(ESPEAK_VOICES)]
            speech = espeak(text, rate=WAKE_RATE, voice=voice, wpm=wpm)
        parts += [speech, silence(float(rng.uniform(0.2, 0.8)))]
        total += speech.size
        if sum(p.size for p in parts) >= target:
            break
    audio = np.concatenate(parts)
    det = WakeWordDetector("okay_nabu")
    started = time.process_time()
    fired = run_stream(det, audio)
    cpu = time.process_time() - started
    det.close()
    hours = audio.size / WAKE_RATE / 3600
    return {
        "audio_s": round(audio.size / WAKE_RATE, 1),
        "speech_s": round(total / WAKE_RATE, 1),
        "false_wakes": len(fired),
        "false_wakes_at_s": [round(t, 2) for t in fired],
        "per_hour": round(len(fired) / hours, 2),
        "cpu_ms_per_audio_s": round(cpu / (audio.size / WAKE_RATE) * 1000, 3),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=96, help="wake word utterances (varied)")
    ap.add_argument("--minutes", type=float, default=10.0, help="minutes of speech without the wake word")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "wake_word.json")
    ns = ap.parse_args()
    rng = np.random.default_rng(19)
    t0 = time.monotonic()
    det = detection(ns.n, rng)
    print(f"detection: {det['detected']}/{det['utterances']} ({det['rate']:.1%}); espeak: "
          f"{det['espeak_okay_nabu_detected']}", flush=True)
    fw = false_wakes(ns.minutes, rng)
    print(f"false wakes: {fw['false_wakes']} in {fw['audio_s']}s ({fw['per_hour']}/h); "
          f"CPU {fw['cpu_ms_per_audio_s']} ms per second of audio", flush=True)
    result = {
        "bench": "wake_word",
        "model": "okay_nabu (pymicro-wakeword 2.5.0)",
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}",
        "detection": det,
        "false_wakes": fw,
        "cpu_ms_per_audio_s": fw["cpu_ms_per_audio_s"],
        "goals": {"detection_rate": ">= 0.95", "false_wakes_per_hour": "<= 1"},
        "wall_s": round(time.monotonic() - t0, 1),
    }
    ns.out.parent.mkdir(parents=True, exist_ok=True)
    ns.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {ns.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
