"""Per-stage turn latency of the AI server with the shipped models, over in-process gRPC.

Each utterance of tests/ai_server/utterances.txt is spoken with espeak-ng, trimmed and
framed as the hub sends it (200 ms pre-roll, speech, 300 ms hangover), and sent in real
time (20 ms CONTINUE frames) to an in-process server, as the hub would; one device, so history builds up as in a real
conversation. Stage times come from the server's TurnTiming (END arrival -> stage, on
its monotonic clock); "client first audio" is END written -> first audio received here.

    python bench/turn_latency.py [--rounds 2] [--no-compare]

prints a table and writes bench/results/turn_latency.json. By default the set is run
twice: with transcription-before-END off, then on, to show what it buys.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ai_server.app import start_server  # noqa: E402
from ai_server.client import StreamClient, as_the_hub_sends  # noqa: E402
from bench import stats  # noqa: E402
from shared.audio import espeak  # noqa: E402
from shared.config import AIServerSettings, load  # noqa: E402
from shared.threads import one_blas_thread  # noqa: E402

UTTERANCES = [ln.strip() for ln in (ROOT / "tests/ai_server/utterances.txt").read_text().splitlines() if ln.strip()]
OUT = ROOT / "bench/results/turn_latency.json"
STAGES = ["stt_ms", "llm_first_token_ms", "first_sentence_ms", "tts_first_audio_ms", "first_frame_sent_ms",
          "total_ms"]
# streaming-architecture.md, "Latency Budget" (AI-server stages; ms).
BUDGET = {"stt_ms": "150-200", "llm_first_token_ms": "+100-300 (LLM)", "tts_first_audio_ms": "+50-100 (TTS)",
          "first_frame_sent_ms": "400-700 (total first audio)"}


def pct(values: list[float]) -> tuple[float, float]:
    """p50 and p95 by bench/stats.py (0 when there are none, to keep the table and JSON numeric)."""
    if not values:
        return 0.0, 0.0
    return stats.pct(values, 0.5), stats.pct(values, 0.95)


async def run_set(address: str, rounds: int, device: str) -> list[dict[str, Any]]:
    records = []
    audio = {u: as_the_hub_sends(espeak(u)) for u in UTTERANCES}
    async with StreamClient(address) as client:
        for r in range(rounds):
            for u in UTTERANCES:
                end = await client.speak(device, audio[u], realtime=True, conversation_id=f"bench-{r}")
                reply = await client.turn(device, end, within_s=120)
                final = reply.final
                assert final is not None
                t = final.timing
                rec = {s: getattr(t, s) for s in STAGES}
                rec.update(
                    utterance=u, transcript=reply.transcript, reply=final.reply_text,
                    error_code=int(final.error_code), client_first_audio_ms=reply.first_audio_ms(),
                    client_transcript_ms=reply.transcript_ms(), audio_s=reply.pcm.size / max(1, reply.sample_rate),
                )
                records.append(rec)
                print(f"  {u!r:45} stt={t.stt_ms:4d} tok={t.llm_first_token_ms:4d} clause={t.first_sentence_ms:4d} "
                      f"tts={t.tts_first_audio_ms:4d} sent={t.first_frame_sent_ms:4d} total={t.total_ms:5d}  "
                      f"heard={reply.transcript!r}", flush=True)
                await asyncio.sleep(0.3)
    return records


def summarise(records: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    ok = [r for r in records if r["error_code"] == 0 and r["first_frame_sent_ms"]]
    out = {}
    for s in [*STAGES, "client_first_audio_ms", "client_transcript_ms"]:
        p50, p95 = pct([float(r[s]) for r in ok if r.get(s)])
        out[s] = {"p50": round(p50, 1), "p95": round(p95, 1), "n": len(ok)}
    # Per-stage increments (what each stage adds), to compare with the spec's per-stage budget.
    steps = [("stt", None, "stt_ms"), ("llm first token", "stt_ms", "llm_first_token_ms"),
             ("first clause", "llm_first_token_ms", "first_sentence_ms"),
             ("tts first audio", "first_sentence_ms", "tts_first_audio_ms"),
             ("send", "tts_first_audio_ms", "first_frame_sent_ms")]
    for name, a, b in steps:
        vals = [float(r[b]) - (float(r[a]) if a else 0.0) for r in ok]
        p50, p95 = pct(vals)
        out[f"delta {name}"] = {"p50": round(p50, 1), "p95": round(p95, 1), "n": len(ok)}
    return out


def table(title: str, summary: dict[str, dict[str, float]]) -> str:
    lines = [title, f"{'stage (ms after END)':34} {'p50':>7} {'p95':>7}   spec budget", "-" * 78]
    for key, v in summary.items():
        budget = BUDGET.get(key, "")
        lines.append(f"{key:34} {v['p50']:7.0f} {v['p95']:7.0f}   {budget}")
    return "\n".join(lines)


async def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=2, help="passes over the utterance set per mode")
    ap.add_argument("--no-compare", action="store_true", help="skip the run without transcription-before-END")
    ap.add_argument("--out", type=Path, default=OUT)
    ns = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    settings = load(AIServerSettings, ai_media_dir=tempfile.mkdtemp(prefix="naila-bench-data-"))
    load_before = os.getloadavg()
    t0 = time.monotonic()
    server = await start_server(settings, host="127.0.0.1", port=0)
    startup_s = time.monotonic() - t0
    modes: dict[str, Any] = {}
    try:
        plan = [("speculative", settings.stt_speculative_ms)]
        if not ns.no_compare:
            plan.insert(0, ("at_end_only", 0))
        for i, (mode, spec_ms) in enumerate(plan):
            server.pipeline.speculate_ms = spec_ms
            print(f"\n== {mode} (STT_SPECULATIVE_MS={spec_ms}), {ns.rounds} x {len(UTTERANCES)} utterances")
            before = dict(server.pipeline.metrics.counters)
            records = await run_set(server.address, ns.rounds, device=f"bench-{i}")
            counters = {k: v - before.get(k, 0) for k, v in server.pipeline.metrics.counters.items()}
            modes[mode] = {"stt_speculative_ms": spec_ms, "summary": summarise(records), "counters": counters,
                           "turns": records}
    finally:
        await server.stop()
    for mode, data in modes.items():
        print()
        print(table(f"{mode}: p50/p95 over {len(data['turns'])} turns", data["summary"]))
        c = data["counters"]
        print(f"background transcriptions {c.get('stt_speculative_runs', 0)}, "
              f"reused at END {c.get('stt_speculative_hits', 0)} of {c.get('turns', 0)} turns")
    result = {
        "what": "AI server turn latency, END arrival -> stage, in-process gRPC, shipped models",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "loadavg_before": load_before, "loadavg_after": os.getloadavg()},
        "models": {"stt": f"{server.pipeline.stt.name} {server.pipeline.stt.model}",
                   "llm": f"{server.pipeline.llm.name} {server.pipeline.llm.model}",
                   "tts": f"{server.pipeline.tts.name} {server.pipeline.tts.model}"},
        "startup_s": round(startup_s, 2),
        "spec_budget_ms": {"stt": "150-200", "llm": "100-300", "tts_first_chunk": "50-100",
                           "total_first_audio_incl_network": "400-700"},
        "goal": "first reply audio <= 700 ms p50 after END",
        "modes": modes,
    }
    ns.out.parent.mkdir(parents=True, exist_ok=True)
    ns.out.write_text(json.dumps(result, indent=1))
    print(f"\nwrote {ns.out}")
    return 0


if __name__ == "__main__":
    one_blas_thread()  # as `naila ai-server` runs (shared/threads.py)
    sys.exit(asyncio.run(main(sys.argv[1:])))
