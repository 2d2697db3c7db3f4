"""End-of-turn benchmark: silence hangover vs the Smart Turn model, and Silero vs webrtcvad.

Speech: questions and commands in several espeak-ng voices and the shipped piper voice. Each is
spoken whole, and again with a mid-sentence pause inserted by sox (``pad``) at a word boundary
("what is the weather like in | Paris tomorrow"), for several pause lengths. Every signal runs
through the hub's own VAD state machine (hub/vad.py) frame by frame, exactly as a session feeds it.

* End of turn: for the silence hangover (300 ms) and for smart_turn policies (check after N ms of
  silence; P >= threshold ends at once, P >= the hangover threshold after the 300 ms hangover,
  lower after the fallback), the hub's defaults first, END latency after the end of speech (p50 /
  p95, complete sentences) and the cut-off rate: paused sentences whose turn ended during the
  pause (the question split in two). The model's verdict reaches the state machine
  ``verdict_ms`` after the check (80 ms: features + inference on one free core; 160 ms for a busy
  hub), as it would from the hub's worker thread; this run's measured inference time is reported.
* VAD: Silero (ONNX on onnxruntime) vs webrtcvad (mode 3) on the same complete sentences: onset
  delay (START after the first speech sample), false starts per minute in sox-made noise and
  music, CPU per second of audio.

Writes bench/results/end_of_turn.json. Run: ``.venv/bin/python bench/end_of_turn.py [--quick] [--grid]``
(``--grid`` adds the search over check time and thresholds the default was picked from).
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.stats import pct
from hub.end_of_turn import load_smart_turn
from hub.silero import SileroVoiceDetector
from hub.vad import END_MODEL, TurnCheck, VadConfig, VadEventKind, VadStateMachine, VoiceDetector, WebRtcVoiceDetector
from shared.audio import Int16Array, espeak, read_wav, write_wav
from shared.config import HubSettings
from shared.wakeword import piper_speech

RATE = 16_000
FRAME = 320
PAIRS = [
    ("what is the weather like in", "Paris tomorrow"),
    ("set a timer for", "ten minutes"),
    ("what is the capital of", "France"),
    ("turn on the lights in", "the kitchen"),
    ("remind me to", "call my mother"),
    ("how far is it from", "London to Paris"),
    ("play some music by", "the Beatles"),
    ("can you tell me the", "time in Tokyo"),
]
ESPEAK_VOICES = [("en-us", 160), ("en-us+f3", 150), ("en-gb-x-rp+m3", 150), ("en-us+m7", 170)]
PIPER_SPEEDS = [1.0, 1.2]
PAUSES_MS = [250, 400, 600, 900]
NOISE_FLOOR = 30  # int16 amplitude of the room noise under everything (about -60 dBFS)


@dataclass(frozen=True)
class Mode:
    name: str
    check_ms: int = 0  # 0 = silence only
    threshold: float = 0.5  # P(complete) that ends the turn at once
    fallback_ms: int = 1000  # the silence that ends a turn the model doubts
    hangover_threshold: float = 1.0  # P that ends it after hangover_ms (1.0: no middle tier, as before issue 20)
    hangover_ms: int = 300
    verdict_ms: int = 80  # check -> verdict back: features + inference on one free core (~70 ms CPU measured)


_HUB = HubSettings.model_fields
DEFAULT = Mode(
    "smart_turn_default",
    check_ms=_HUB["hub_end_of_turn_check_ms"].default,
    threshold=_HUB["hub_end_of_turn_threshold"].default,
    fallback_ms=_HUB["hub_end_of_turn_fallback_ms"].default,
    hangover_threshold=_HUB["hub_end_of_turn_hangover_threshold"].default,
    hangover_ms=_HUB["hub_vad_hangover_ms"].default,
)
MODES = [
    Mode("silence_300ms"),
    DEFAULT,
    replace(DEFAULT, name="smart_turn_default_verdict160ms", verdict_ms=160),  # a busy hub: the verdict is late
    Mode("smart_turn_200ms_t0.5_fb1000 (before)", 200, 0.5),
    Mode("smart_turn_120ms_t0.5_fb1000", 120, 0.5),
    Mode("smart_turn_120ms_t0.9_fb1000", 120, 0.9),
    Mode("smart_turn_120ms_t0.9_h0.5", 120, 0.9, hangover_threshold=0.5),
    Mode("smart_turn_200ms_t0.5_fb700", 200, 0.5, 700),
]


def grid() -> list[Mode]:
    """The policies searched for the default (``--grid``): when to ask, and the two thresholds."""
    return [
        Mode(f"grid_{c}ms_t{t}_h{h}", c, t, hangover_threshold=h)
        for c in (100, 120, 160)
        for t in (0.5, 0.7, 0.8, 0.9, 0.95)
        for h in (0.05, 0.1, 0.2, 0.3, 0.5)
        if h < t
    ]


@dataclass
class Case:
    key: str
    audio: Int16Array
    speech_start: float  # s
    speech_end: float  # s: last speech sample
    pause: tuple[float, float] | None  # (start, end) of the inserted pause, s


def trim(x: Int16Array) -> Int16Array:
    idx = np.nonzero(np.abs(x.astype(np.int32)) > 300)[0]
    return x[idx[0] : idx[-1] + 1]


def boundary(full: Int16Array, prefix: Int16Array) -> int:
    """Sample index of the quietest 20 ms near where the prefix alone ends: the word boundary."""
    n = prefix.size // FRAME
    energy = np.sqrt((full[: full.size // FRAME * FRAME].reshape(-1, FRAME).astype(np.float64) ** 2).mean(1))
    lo, hi = max(1, n - 10), min(energy.size - 1, n + 4)
    return (lo + int(np.argmin(energy[lo:hi]))) * FRAME


def sox_pad(audio: Int16Array, at_s: float, pause_s: float) -> Int16Array:
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "in.wav", Path(tmp) / "out.wav"
        write_wav(src, audio, RATE)
        subprocess.run(["sox", str(src), str(dst), "pad", f"{pause_s:.3f}@{at_s:.4f}"], check=True)
        out, rate = read_wav(dst)
    assert rate == RATE
    return out


def with_room(audio: Int16Array, lead_s: float = 0.5, tail_s: float = 2.0, seed: int = 0) -> Int16Array:
    x = np.concatenate([np.zeros(int(lead_s * RATE), np.int16), audio, np.zeros(int(tail_s * RATE), np.int16)])
    noise = np.random.default_rng(seed).normal(0, NOISE_FLOOR, x.size)
    return np.clip(x.astype(np.float64) + noise, -32768, 32767).astype(np.int16)


def build_cases(quick: bool) -> list[Case]:
    voices: list[tuple[str, tuple[str, int] | float]] = [(f"espeak:{v}", (v, w)) for v, w in ESPEAK_VOICES]
    voices += [(f"piper:{s}", s) for s in PIPER_SPEEDS]
    pairs = PAIRS[:3] if quick else PAIRS
    cases: list[Case] = []
    for vname, spec in voices:
        for a, b in pairs:
            if isinstance(spec, tuple):
                full, pre = (
                    trim(espeak(f"{a} {b}", voice=spec[0], wpm=spec[1])),
                    trim(espeak(a, voice=spec[0], wpm=spec[1])),
                )
            else:
                full, pre = (
                    trim(piper_speech(f"{a} {b}", length_scale=float(spec))),
                    trim(piper_speech(a, length_scale=float(spec))),
                )
            lead = 0.5
            cases.append(Case(f"{vname}|{a} {b}|complete", with_room(full), lead, lead + full.size / RATE, None))
            k = boundary(full, pre)
            for pause_ms in [] if quick and vname != "espeak:en-us" else PAUSES_MS:
                paused = sox_pad(full, k / RATE, pause_ms / 1000)
                cases.append(
                    Case(
                        f"{vname}|{a} {b}|pause{pause_ms}",
                        with_room(paused),
                        lead,
                        lead + paused.size / RATE,
                        (lead + k / RATE, lead + k / RATE + pause_ms / 1000),
                    )
                )
    return cases


_probs: dict[tuple[str, int], tuple[float, float]] = {}  # (case, check frame) -> (P(complete), inference s)


def model_verdict(case: Case, frame_index: int, audio: Int16Array) -> tuple[float, float]:
    key = (case.key, frame_index)
    if key not in _probs:
        model = load_smart_turn()
        started = time.perf_counter()
        p = model.complete_probability(audio)
        _probs[key] = (p, time.perf_counter() - started)
    return _probs[key]


def run_case(case: Case, mode: Mode) -> dict[str, object]:
    cfg = VadConfig.from_ms(
        onset_frames=3,
        hangover_ms=mode.hangover_ms,
        preroll_ms=200,
        barge_in_frames=5,
        check_ms=mode.check_ms,
        fallback_ms=mode.fallback_ms if mode.check_ms else 0,
        end_threshold=mode.threshold,
        hangover_threshold=mode.hangover_threshold,
    )
    vad = VadStateMachine(WebRtcVoiceDetector(3), cfg)
    pending: list[tuple[int, TurnCheck, float]] = []  # (frame the verdict arrives, check, P(complete))
    ends: list[tuple[float, str]] = []
    n = case.audio.size // FRAME
    for i in range(n):
        events = vad.process(case.audio[i * FRAME : (i + 1) * FRAME])
        check = vad.take_check()
        if check is not None:
            p, _ = model_verdict(case, check.frame_index, check.audio)
            # A fixed delay, not this run's measured one: the box's other load would make the
            # cut-off rate itself vary from run to run (a late verdict finds the speaker going on).
            pending.append((i + max(1, -(-mode.verdict_ms // 20)), check, p))
        for _arrive, chk, probability in [x for x in pending if x[0] == i]:
            events += vad.verdict(chk, probability)
        pending = [x for x in pending if x[0] > i]
        for e in events:
            if e.kind is VadEventKind.END:
                # END is known at the end of the frame that caused it (or of the verdict's frame).
                at = (i + 1) * FRAME / RATE
                ends.append((at, e.reason))
    cut = case.pause is not None and any(case.pause[0] <= at < case.pause[1] + 0.06 for at, _ in ends)
    final = [at for at, _ in ends if at >= case.speech_end - 0.05]
    return {
        "cut_off": cut,
        "ends": len(ends),
        "end_latency_ms": (final[0] - case.speech_end) * 1000 if final else None,
        "by_model": any(r == END_MODEL for at, r in ends if at >= case.speech_end - 0.05),
    }


def end_of_turn_bench(cases: list[Case], modes: list[Mode]) -> dict[str, object]:
    out: dict[str, object] = {}
    load_smart_turn().complete_probability(np.zeros(RATE, np.int16))  # load and warm up outside the timing
    for mode in modes:
        rows = [(c, run_case(c, mode)) for c in cases]
        complete = [r for c, r in rows if c.pause is None]
        lat = [float(r["end_latency_ms"]) for r in complete if r["end_latency_ms"] is not None]  # type: ignore[arg-type]
        per_pause: dict[str, float] = {}
        for pause_ms in PAUSES_MS:
            sel = [r for c, r in rows if c.key.endswith(f"|pause{pause_ms}")]
            if sel:
                per_pause[str(pause_ms)] = round(sum(bool(r["cut_off"]) for r in sel) / len(sel), 3)
        paused = [r for c, r in rows if c.pause is not None]
        cut_rate = round(sum(bool(r["cut_off"]) for r in paused) / max(1, len(paused)), 3)
        out[mode.name] = {
            "complete_sentences": len(complete),
            "end_latency_ms_p50": round(pct(lat, 0.5), 1),
            "end_latency_ms_p95": round(pct(lat, 0.95), 1),
            "ended_by_model": sum(bool(r["by_model"]) for r in complete),
            "paused_sentences": len(paused),
            "cut_off_rate": cut_rate,
            "cut_off_rate_by_pause_ms": per_pause,
        }
        print(
            f"{mode.name:40s} END p50 {pct(lat, 0.5):6.0f} ms p95 {pct(lat, 0.95):6.0f} ms  "
            f"cut-offs {cut_rate:.2f} {per_pause}"
        )
    infer = [s for _, s in _probs.values()]
    out["model_inference_ms_p50"] = round(pct(infer, 0.5) * 1000, 1)
    out["model_inference_ms_p95"] = round(pct(infer, 0.95) * 1000, 1)
    out["model_checks"] = len(infer)
    model = load_smart_turn()  # its process CPU per check: the cost without the box's other load
    out["model_cpu_ms_per_check"] = round(model.cpu_s / max(1, model.calls) * 1000, 1)
    print(
        f"model: {len(infer)} checks, wall p50 {out['model_inference_ms_p50']} ms p95 "
        f"{out['model_inference_ms_p95']} ms, CPU {out['model_cpu_ms_per_check']} ms per check"
    )
    return out


def sox_signal(args: list[str], seconds: float) -> Int16Array:
    with tempfile.TemporaryDirectory() as tmp:
        dst = Path(tmp) / "n.wav"
        subprocess.run(
            ["sox", "-n", "-r", str(RATE), "-b", "16", "-c", "1", str(dst), "synth", str(seconds), *args], check=True
        )
        out, _ = read_wav(dst)
    return out


NOISES = {
    "white_-30dB": ["whitenoise", "vol", "0.03"],
    "pink_-20dB": ["pinknoise", "vol", "0.1"],
    "brown_-15dB": ["brownnoise", "vol", "0.18"],
    "music_chords": ["pluck", "C4", "pluck", "E4", "pluck", "G4", "tremolo", "3", "60", "vol", "0.3"],
    "music_tones": ["sine", "220-880", "sine", "330-660", "tremolo", "5", "80", "vol", "0.3"],
}


def drive(detector: VoiceDetector, audio: Int16Array) -> tuple[list[float], float]:
    vad = VadStateMachine(
        detector, VadConfig.from_ms(onset_frames=3, hangover_ms=300, preroll_ms=200, barge_in_frames=5)
    )
    starts: list[float] = []
    cpu = 0.0
    for i in range(audio.size // FRAME):
        t0 = time.process_time()
        events = vad.process(audio[i * FRAME : (i + 1) * FRAME])
        cpu += time.process_time() - t0
        starts += [(i + 1) * FRAME / RATE for e in events if e.kind is VadEventKind.START]
    return starts, cpu


def vad_bench(cases: list[Case], noise_s: float) -> dict[str, object]:
    engines: dict[str, Callable[[], VoiceDetector]] = {
        "webrtc": lambda: WebRtcVoiceDetector(3),
        "silero": lambda: SileroVoiceDetector(),
    }
    complete = [c for c in cases if c.pause is None]
    noises = {name: sox_signal(a, noise_s) for name, a in NOISES.items()}
    out: dict[str, object] = {}
    for name, make in engines.items():
        delays: list[float] = []
        cpu, audio_s, missed = 0.0, 0.0, 0
        for c in complete:
            starts, spent = drive(make(), c.audio)
            cpu += spent
            audio_s += c.audio.size / RATE
            starts = [t for t in starts if t >= c.speech_start]  # not a start on the stream's first frames
            if starts:
                delays.append((starts[0] - c.speech_start) * 1000)
            else:
                missed += 1
        false: dict[str, float] = {}
        for nname, sig in noises.items():
            starts, spent = drive(make(), sig)
            cpu += spent
            audio_s += sig.size / RATE
            false[nname] = round(len(starts) / (sig.size / RATE / 60), 2)
        out[name] = {
            "onset_delay_ms_p50": round(pct(delays, 0.5), 1),
            "onset_delay_ms_p95": round(pct(delays, 0.95), 1),
            "missed_sentences": missed,
            "false_starts_per_min": false,
            "cpu_ms_per_s_audio": round(cpu / audio_s * 1000, 2),
        }
        print(
            f"{name:8s} onset p50 {pct(delays, 0.5):5.0f} ms p95 {pct(delays, 0.95):5.0f} ms  missed {missed}  "
            f"false starts/min {false}  CPU {cpu / audio_s * 1000:.2f} ms/s"
        )
    return out


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="3 sentences, pauses for one voice only")
    ap.add_argument("--grid", action="store_true", help="also search check time and thresholds (the default's search)")
    ap.add_argument("--noise-s", type=float, default=60.0, help="seconds of each noise for false starts")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "end_of_turn.json"))
    args = ap.parse_args(argv)
    t0 = time.time()
    cases = build_cases(args.quick)
    print(
        f"{len(cases)} signals ({sum(c.pause is None for c in cases)} complete, "
        f"{sum(c.pause is not None for c in cases)} with a pause of {PAUSES_MS} ms)"
    )
    result = {
        "machine": f"{platform.machine()}, {platform.processor() or '?'}",
        "signals": len(cases),
        "voices": [v for v, _ in ESPEAK_VOICES] + [f"piper x{s}" for s in PIPER_SPEEDS],
        "sentences": [f"{a} | {b}" for a, b in PAIRS],
        "end_of_turn": end_of_turn_bench(cases, MODES + (grid() if args.grid else [])),
        "vad": vad_bench(cases, args.noise_s),
        "wall_s": 0.0,
    }
    result["wall_s"] = round(time.time() - t0, 1)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
