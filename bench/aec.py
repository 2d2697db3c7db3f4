"""Echo cancellation on the device: ERLE over time (convergence) and CPU, speexdsp vs WebRTC APM.

Scenario (device_agent.aec_eval.make_scenario): espeak-ng speech as the far end (what the
speaker plays), through a synthetic room (exponentially decaying noise, RT60 150 ms, after a
30 ms delay, echo 6 dB below the speaker) into the mic, -80 dBFS mic noise, and from
``--near-at`` a different voice talking over it (double talk).

Measured per engine, all in the same run on the same signals:
- ERLE curve: 10 log10(P_mic / P_out) in 0.5 s windows (convergence);
- steady-state ERLE: over the last 5 s of far-end-only audio before the near end starts;
- convergence time: first second from which the 1 s ERLE stays >= 20 dB (and >= 30 dB);
- near end in double talk: correlation of the output with the clean near-end speech and its
  level loss in dB (projection), at the canceller's own output delay;
- CPU: time.process_time per second of audio, best of ``--repeats`` runs (the machine is
  shared; the load average is recorded).

Engines: speexdsp MDF through our ctypes binding (linear only, and with Speex's preprocessor for
residual echo + noise, which is the device default), 10 and 20 ms frames, at 16 kHz and 48 kHz;
the ``speexdsp`` PyPI package (same library: must be bit-identical); the device's whole 48 kHz
path (FIR 48->16 kHz, speex + preprocessor, 16->48 kHz); WebRTC APM's AEC3 via ``pywebrtc-audio``.

    python bench/aec.py [--seconds 30] [--near-at 25] [--repeats 3]

Writes bench/results/aec.json and bench/results/aec.png.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from device_agent.aec import EchoCancellerStream, SpeexEchoCanceller  # noqa: E402
from device_agent.aec_eval import (  # noqa: E402
    EchoScenario,
    erle_curve,
    erle_db,
    make_scenario,
    near_end_report,
    run_canceller,
)
from shared.audio import Int16Array  # noqa: E402

RESULTS = ROOT / "bench" / "results"
Process = Callable[[Int16Array, Int16Array], Int16Array]


@dataclass
class Engine:
    name: str
    rate: int
    frame_ms: int
    make: Callable[[], Process]
    note: str = ""


def speex(rate: int, frame_ms: int, ns: bool, engine: str = "ctypes") -> Callable[[], Process]:
    def make() -> Process:
        return SpeexEchoCanceller(
            rate=rate, frame_ms=frame_ms, filter_ms=200, noise_suppression=ns, engine=engine  # type: ignore[arg-type]
        ).process

    return make


def device_path() -> Process:
    """The agent's real path: 48 kHz blocks through EchoCancellerStream (FIR resamplers + speex 16 kHz)."""
    stream = EchoCancellerStream(SpeexEchoCanceller(noise_suppression=True), 48_000)
    return stream.process


def webrtc_apm(rate: int) -> Callable[[], Process]:
    def make() -> Process:
        from pywebrtc_audio import AudioProcessor

        ap = AudioProcessor(sample_rate=rate, echo_cancellation=True, noise_suppression=False)

        def process(mic: Int16Array, ref: Int16Array) -> Int16Array:
            return np.asarray(ap.process(mic, ref), dtype=np.int16)

        return process

    return make


def engines(have_pkg: bool, have_webrtc: bool) -> list[Engine]:
    out = [
        Engine("speex linear 16k/10ms", 16_000, 10, speex(16_000, 10, False), "MDF only (ctypes)"),
        Engine("speex+pre 16k/10ms", 16_000, 10, speex(16_000, 10, True),
               "MDF + preprocessor residual-echo/noise suppression: device default"),
        Engine("speex linear 16k/20ms", 16_000, 20, speex(16_000, 20, False)),
        Engine("speex+pre 16k/20ms", 16_000, 20, speex(16_000, 20, True)),
        Engine("speex linear 48k/10ms", 48_000, 10, speex(48_000, 10, False), "full band: 3x the taps"),
        Engine("device path 48k->16k->48k", 48_000, 10, device_path,
               "what the agent runs: FIR resamplers + speex+pre 16k/10ms"),
    ]
    if have_pkg:
        out.append(Engine("speexdsp package 16k/10ms", 16_000, 10, speex(16_000, 10, False, "package"),
                          "PyPI speexdsp (SWIG): same library, must equal the ctypes binding"))
    if have_webrtc:
        out.append(Engine("webrtc AEC3 16k/10ms", 16_000, 10, webrtc_apm(16_000), "pywebrtc-audio 0.2.0"))
    return out


def sustained_from(curve: list[tuple[float, float]], threshold: float, window_s: float) -> float | None:
    """First time t such that every window from t on (before the near end) is >= threshold."""
    for i in range(len(curve)):
        if all(v >= threshold for _, v in curve[i:]):
            return round(curve[i][0] - window_s, 2)
    return None


def measure(engine: Engine, sc: EchoScenario, near_at: float, repeats: int) -> dict[str, Any]:
    frame = engine.rate * engine.frame_ms // 1000
    cpus: list[float] = []
    out = np.zeros(0, np.int16)
    for _ in range(repeats):
        out, cpu = run_canceller(engine.make(), sc, frame)
        cpus.append(cpu)
    seconds = sc.mic.size / sc.rate
    # Output delay of the canceller (preprocessor: one frame; device path: FIR group delay).
    lag = near_end_report(sc, out).lag
    aligned = np.concatenate([out[lag:], np.zeros(lag, np.int16)])
    far_only_end = near_at
    curve = erle_curve(sc.mic[: int(far_only_end * sc.rate)], aligned[: int(far_only_end * sc.rate)], sc.rate, 0.5)
    curve_1s = erle_curve(sc.mic[: int(far_only_end * sc.rate)], aligned[: int(far_only_end * sc.rate)], sc.rate, 1.0)
    steady = sc.far_only(far_only_end - 5.0, far_only_end)
    near = near_end_report(sc, out)
    cpu_ms = 1000 * min(cpus) / seconds
    return {
        "engine": engine.name,
        "note": engine.note,
        "rate": engine.rate,
        "frame_ms": engine.frame_ms,
        "steady_erle_db": round(erle_db(sc.mic[steady], aligned[steady]), 2),
        "converged_20db_s": sustained_from(curve_1s, 20.0, 1.0),
        "converged_30db_s": sustained_from(curve_1s, 30.0, 1.0),
        "erle_curve": [(round(t, 2), round(v, 2)) for t, v in curve],
        "double_talk": {
            "output_delay_ms": round(1000 * near.lag / sc.rate, 2),
            "near_end_correlation": round(near.correlation, 4),
            "near_end_loss_db": round(near.loss_db, 2),
        },
        "cpu_ms_per_audio_s": round(cpu_ms, 3),
        "cpu_ms_per_audio_s_all_runs": [round(1000 * c / seconds, 3) for c in cpus],
        "core_percent": round(cpu_ms / 10, 3),
        "_out": out,
    }


def plot(results: list[dict[str, Any]], near_at: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(14, 5.5), gridspec_kw={"width_ratios": [2.2, 1]})
    for r in results:
        if r["engine"].startswith("speexdsp package"):
            continue  # identical to the ctypes curve
        t, v = zip(*r["erle_curve"], strict=True)
        style = "--" if "linear" in r["engine"] else "-"
        ax.plot(t, v, style, label=f"{r['engine']} ({r['steady_erle_db']:.1f} dB)", linewidth=1.4)
    ax.axhline(30, color="grey", linewidth=0.8, linestyle=":")
    ax.axhline(20, color="grey", linewidth=0.8, linestyle=":")
    ax.set_xlim(0, near_at)
    ax.set_xlabel("time since the far end started talking (s)")
    ax.set_ylabel("ERLE, 0.5 s windows (dB)")
    ax.set_title("Echo cancellation convergence (espeak speech, RT60 150 ms room, +30 ms)")
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    names = [r["engine"] for r in results]
    cpu = [r["cpu_ms_per_audio_s"] for r in results]
    bars = bx.barh(names, cpu, color=["tab:green" if "webrtc" not in n else "tab:orange" for n in names])
    bx.axvline(10, color="red", linewidth=0.8, linestyle=":", label="1% of one core")
    bx.bar_label(bars, fmt="%.1f", fontsize=8)
    bx.set_xlabel("CPU ms per second of audio (best run)")
    bx.invert_yaxis()
    bx.tick_params(axis="y", labelsize=8)
    bx.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=30.0, help="length of the far-end speech")
    ap.add_argument("--near-at", type=float, default=25.0, help="when the near end starts talking")
    ap.add_argument("--repeats", type=int, default=3, help="runs per engine (CPU = best run)")
    ns = ap.parse_args()

    try:
        import speexdsp  # noqa: F401

        have_pkg = True
    except ImportError:
        have_pkg = False
    try:
        import pywebrtc_audio  # noqa: F401

        have_webrtc = True
    except ImportError:
        have_webrtc = False
        print("pywebrtc-audio not installed: pip install pywebrtc-audio==0.2.0 (WebRTC APM left out)")

    scenarios = {
        rate: make_scenario(rate, far_s=ns.seconds, near_start_s=ns.near_at) for rate in (16_000, 48_000)
    }
    load_before = os.getloadavg()
    results = []
    for engine in engines(have_pkg, have_webrtc):
        r = measure(engine, scenarios[engine.rate], ns.near_at, ns.repeats)
        results.append(r)
        dt = r["double_talk"]
        print(
            f"{r['engine']:28s} steady ERLE {r['steady_erle_db']:5.1f} dB  >=20 dB from "
            f"{r['converged_20db_s']} s  >=30 dB from {r['converged_30db_s']} s  near-end corr "
            f"{dt['near_end_correlation']:.3f} loss {dt['near_end_loss_db']:.2f} dB  "
            f"CPU {r['cpu_ms_per_audio_s']:.2f} ms/s ({r['core_percent']:.2f}% core)"
        )
    by_name = {r["engine"]: r for r in results}
    pkg = by_name.get("speexdsp package 16k/10ms")
    identical = None
    if pkg is not None:
        identical = bool(np.array_equal(pkg["_out"], by_name["speex linear 16k/10ms"]["_out"]))
        print(f"ctypes binding == speexdsp package output: {identical}")
    for r in results:
        del r["_out"]
    default = by_name["speex+pre 16k/10ms"]
    summary = {
        "device_default": default["engine"],
        "device_default_steady_erle_db": default["steady_erle_db"],
        "device_default_cpu_ms_per_audio_s": default["cpu_ms_per_audio_s"],
        "device_path_cpu_ms_per_audio_s": by_name["device path 48k->16k->48k"]["cpu_ms_per_audio_s"],
        "goal": ">= 30 dB steady-state ERLE with speexdsp at < 1% of one core (10 ms CPU per s)",
        "goal_met_linear": by_name["speex linear 16k/10ms"]["steady_erle_db"] >= 30
        and by_name["speex linear 16k/10ms"]["cpu_ms_per_audio_s"] < 10,
        "goal_met_default": default["steady_erle_db"] >= 30 and default["cpu_ms_per_audio_s"] < 10,
        "ctypes_equals_package": identical,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    doc = {
        "bench": "aec",
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "loadavg_before": [round(x, 2) for x in load_before],
            "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        },
        "scenario": {
            "far_end": "espeak-ng speech (two sentences, looped)",
            "room": "synthetic_room_ir: direct tap + exp-decaying noise, RT60 150 ms, unit energy",
            "delay_ms": 30,
            "echo_gain": 0.5,
            "mic_noise_dbfs": -80,
            "seconds": ns.seconds,
            "near_end_at_s": ns.near_at,
            "steady_window_s": [ns.near_at - 5, ns.near_at],
            "filter_ms": 200,
        },
        "summary": summary,
        "results": results,
    }
    (RESULTS / "aec.json").write_text(json.dumps(doc, indent=1) + "\n")
    plot(results, ns.near_at, RESULTS / "aec.png")
    print(f"wrote {RESULTS / 'aec.json'} and {RESULTS / 'aec.png'}")
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
