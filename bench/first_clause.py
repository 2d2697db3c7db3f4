"""The first clause of a reply: its length and its synthesis cost, turn 1 vs turns 5+ (issue 20).

The replies are the real ones the shipped model gave in the last ``bench/e2e_latency.py`` run
(bench/results/e2e_latency.json, with their turn numbers). Each is streamed into the
ClauseSplitter a few characters at a time, as the LLM streams it, with today's rules and with the
rules before issue 20 (no cut where a new phrase opens); the first clause is then synthesised by
the shipped piper voice. Clock: ``time.process_time`` (this process's CPU, all its threads), so
the box's other load does not move the figure much; piper runs on the threads the AI server gives
it. Characters stand in for the LLM's time to generate the clause (tokens are ~4 characters).

Writes bench/results/first_clause.json. Run: ``.venv/bin/python bench/first_clause.py``.
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ai_server.clauses import ClauseSplitter
from ai_server.tts import PiperTTS
from bench.stats import pct

ROOT = Path(__file__).resolve().parents[1]
LATER_TURN = 5
RULES = {
    "today": {},
    "before issue 20": {"first_cut_words": 10**6},  # the phrase-start cut off
}


def first_clause(reply: str, **rules: int) -> str:
    splitter = ClauseSplitter(**rules)
    for i in range(0, len(reply), 4):  # as the model streams it
        out = splitter.push(reply[i : i + 4])
        if out:
            return out[0]
    return (splitter.flush() or [""])[0]


async def synth_cpu_ms(tts: PiperTTS, text: str, repeats: int) -> float:
    spent = []
    for _ in range(repeats):
        started = time.process_time()
        async for _chunk in tts.synthesize(text):
            pass
        spent.append(time.process_time() - started)
    return 1000 * min(spent)  # the least disturbed of the repeats


async def run(samples: list[dict[str, Any]], repeats: int) -> dict[str, Any]:
    tts = PiperTTS()
    await tts.warm()
    out: dict[str, Any] = {}
    try:
        for name, rules in RULES.items():
            rows = []
            for s in samples:
                clause = first_clause(s["reply"], **rules)
                rows.append(
                    {
                        "turn": s["turn"],
                        "clause": clause,
                        "words": len(clause.split()),
                        "chars": len(clause),
                        "synth_cpu_ms": await synth_cpu_ms(tts, clause, repeats),
                    }
                )
            summary: dict[str, Any] = {}
            for bucket, sel in (
                ("turn_1", [r for r in rows if r["turn"] == 1]),
                (f"turn_{LATER_TURN}_plus", [r for r in rows if r["turn"] >= LATER_TURN]),
            ):
                summary[bucket] = {
                    "n": len(sel),
                    **{f"{k}_p50": round(pct([float(r[k]) for r in sel], 0.5), 1) for k in ("words", "chars")},
                    "synth_cpu_ms_p50": round(pct([r["synth_cpu_ms"] for r in sel], 0.5), 1),
                    "synth_cpu_ms_p95": round(pct([r["synth_cpu_ms"] for r in sel], 0.95), 1),
                }
            out[name] = {"summary": summary, "clauses": rows}
            for bucket, v in summary.items():
                print(
                    f"{name:16s} {bucket:12s} n {v['n']:3d}  words p50 {v['words_p50']:4.1f}  chars p50 "
                    f"{v['chars_p50']:5.1f}  piper CPU p50 {v['synth_cpu_ms_p50']:6.1f} ms "
                    f"p95 {v['synth_cpu_ms_p95']:6.1f} ms"
                )
    finally:
        await tts.close()
    return out


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--replies", type=Path, default=ROOT / "bench" / "results" / "e2e_latency.json")
    ap.add_argument("--repeats", type=int, default=3, help="syntheses per clause (the least CPU counts)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "first_clause.json")
    args = ap.parse_args(argv)
    samples = [s for s in json.loads(args.replies.read_text())["samples"] if s.get("reply")]
    load = os.getloadavg()
    result = {
        "replies_from": str(args.replies.relative_to(ROOT) if args.replies.is_relative_to(ROOT) else args.replies),
        "clock": "time.process_time (CPU of this process, all threads)",
        "load_average_1_5_15": [round(x, 2) for x in load],
        "rules": asyncio.run(run(samples, args.repeats)),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"load average {load}; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
