"""Assist benchmark (issue 19): the intent fast path's accuracy and speed, and the other assist
figures in one place.

1. Intent accuracy over the phrase table (ai_server/assist/phrases.py, the one the tests use):
   a command is right when it is recognised with its intent and every expected slot; a question
   is taken when it matches an intent whose real handler (the AI server's own registry) answers
   instead of declining to the LLM.
2. End of speech -> first reply audio for command turns through an in-process AI server with the
   shipped models (Whisper tiny STT, the embedded LLM, piper TTS) over gRPC: each request spoken
   by espeak-ng and by the piper voice, framed as the hub sends it (START, 20 ms CONTINUE frames
   in real time, END after a 300 ms hangover). Client: END written -> first reply audio frame
   received, on time.monotonic (CLOCK_MONOTONIC, the clock time.perf_counter also reads on Linux);
   the server's own TurnTiming (END arrival -> first frame sent) alongside. One LLM question runs
   the same way for contrast.
3. The wake word, embedded model and visual question figures, read from their own results
   (bench/results/*.json) with the commit and date that wrote them.
4. Recognition CPU per sentence (thread CPU time of the recognising thread).

    python bench/assist.py [--rounds 3]

prints a table and writes bench/results/assist.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ai_server.app import start_server  # noqa: E402
from ai_server.assist.core import AssistContext, IntentRegistry  # noqa: E402
from ai_server.assist.intents import Recognizer  # noqa: E402
from ai_server.assist.phrases import AREAS, COMMANDS, QUESTIONS  # noqa: E402
from ai_server.client import StreamClient, as_the_hub_sends  # noqa: E402
from bench.stats import pct  # noqa: E402
from shared.audio import HUB_RATE, espeak  # noqa: E402
from shared.config import AIServerSettings, load  # noqa: E402
from shared.threads import one_blas_thread  # noqa: E402
from shared.wakeword import piper_speech  # noqa: E402

OUT = ROOT / "bench/results/assist.json"
TURNS = ["what time is it", "set a timer for 5 minutes", "what is 17 times 23", "how many minutes are in 2 hours"]
LLM_QUESTION = "what is the capital of france"
GOALS = {"commands_right": ">= 95%", "questions_taken": "0", "command_first_audio_ms_p50": "<= 300"}


async def accuracy(registry: IntentRegistry, recognizer: Recognizer, now: Any) -> dict[str, Any]:
    """(1): every command with its expected intent and slots; every question left to the LLM."""
    rows = registry.slot_rows()
    wrong = []
    for text, intent, slots in COMMANDS:
        m = recognizer.recognize(text, rows)
        got = None if m is None else {"intent": m.intent, "slots": {k: m.slots.get(k) for k in slots}}
        if m is None or m.intent != intent or any(m.slots.get(k) != v for k, v in slots.items()):
            wrong.append({"text": text, "want": {"intent": intent, "slots": slots}, "got": got})
    taken = []
    for text in QUESTIONS:
        m = recognizer.recognize(text, rows)
        if m is None:
            continue
        try:
            reply = await registry.handle(m, AssistContext(now=now(), device_id="bench-accuracy", room="kitchen"))
        except Exception as exc:  # a handler that raises still kept the question from the LLM
            taken.append({"text": text, "intent": m.intent, "said": f"error: {exc}"})
            continue
        if reply is not None and reply.handled:
            taken.append({"text": text, "intent": m.intent, "said": reply.text})
    right = len(COMMANDS) - len(wrong)
    return {"commands": len(COMMANDS), "commands_right": right,
            "commands_right_pct": round(100 * right / len(COMMANDS), 1), "wrong": wrong,
            "questions": len(QUESTIONS), "questions_taken": len(taken), "taken": taken}


def recognition_cost(registry: IntentRegistry, recognizer: Recognizer, passes: int = 3) -> dict[str, float]:
    """(4): thread CPU and wall time per sentence over the whole table, after a warm-up pass."""
    sentences = [c[0] for c in COMMANDS] + QUESTIONS
    for text in sentences:
        recognizer.recognize(text, registry.slot_rows())
    cpu0, wall0 = time.thread_time(), time.perf_counter()
    for _ in range(passes):
        for text in sentences:
            recognizer.recognize(text, registry.slot_rows())
    n = passes * len(sentences)
    return {"sentences": n, "cpu_ms_per_sentence": round((time.thread_time() - cpu0) * 1000 / n, 2),
            "wall_ms_per_sentence": round((time.perf_counter() - wall0) * 1000 / n, 2)}


def voices(text: str) -> dict[str, Any]:
    return {"espeak": as_the_hub_sends(espeak(text)), "piper": as_the_hub_sends(piper_speech(text, HUB_RATE))}


async def latency(address: str, rounds: int) -> list[dict[str, Any]]:
    """(2): each request x voice x round as a hub utterance; a question through the LLM alongside."""
    audio = {text: voices(text) for text in [*TURNS, LLM_QUESTION]}
    records = []
    async with StreamClient(address) as client:
        for r in range(rounds):
            for text in [*TURNS, LLM_QUESTION]:
                for voice, pcm in audio[text].items():
                    device = f"bench-{voice}"  # a device per voice: its own conversation
                    end = await client.speak(device, pcm, realtime=True, conversation_id=f"bench-{r}")
                    reply = await client.turn(device, end, within_s=120)
                    final = reply.final
                    assert final is not None
                    t = final.timing
                    first = reply.first_audio_ms()
                    kind = "llm" if text == LLM_QUESTION else "command"
                    rec: dict[str, Any] = {"request": text, "voice": voice, "round": r, "kind": kind,
                           "transcript": reply.transcript, "reply": final.reply_text,
                           "error_code": int(final.error_code), "by_code": t.llm_first_token_ms == 0,
                           "client_first_audio_ms": first, "server_stt_ms": t.stt_ms,
                           "server_first_audio_sent_ms": t.first_frame_sent_ms}
                    records.append(rec)
                    print(f"  {voice:6} {text!r:36} first audio {first if first is None else round(first):>5} ms "
                          f"by_code={rec['by_code']!s:5} heard={reply.transcript!r} said={final.reply_text!r}",
                          flush=True)
                    await asyncio.sleep(0.3)
    return records


def summarise(records: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kind in ("command", "llm"):
        rows = [r for r in records if r["kind"] == kind and r["error_code"] == 0 and r["client_first_audio_ms"]]
        client = [float(r["client_first_audio_ms"]) for r in rows]
        server = [float(r["server_first_audio_sent_ms"]) for r in rows]
        out[kind] = {"n": len(rows), "by_code": sum(r["by_code"] for r in rows),
                     "client_first_audio_ms": {"p50": round(pct(client, 0.5), 1), "p95": round(pct(client, 0.95), 1)},
                     "server_first_audio_sent_ms": {"p50": round(pct(server, 0.5), 1),
                                                    "p95": round(pct(server, 0.95), 1)}}
    for text in TURNS:
        vals = [float(r["client_first_audio_ms"]) for r in records
                if r["request"] == text and r["client_first_audio_ms"]]
        out[text] = {"p50": round(pct(vals, 0.5), 1), "n": len(vals)}
    return out


def written_by(path: Path) -> dict[str, str]:
    """The commit and date that last wrote a results file ('uncommitted' when it is newer)."""
    log = subprocess.run(["git", "log", "-1", "--format=%h %cI", "--", str(path)], cwd=ROOT, capture_output=True,
                         text=True, check=False).stdout.split()
    dirty = subprocess.run(["git", "status", "--porcelain", "--", str(path)], cwd=ROOT, capture_output=True,
                           text=True, check=False).stdout.strip()
    mtime = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(path.stat().st_mtime))
    if dirty or not log:
        return {"commit": "uncommitted", "date": mtime}
    return {"commit": log[0], "date": log[1]}


def others() -> dict[str, Any]:
    """(3): the wake word, embedded model and visual question figures from their own benchmarks."""
    out: dict[str, Any] = {}
    path = ROOT / "bench/results/wake_word.json"
    if path.exists():
        w = json.loads(path.read_text())
        out["wake_word"] = {**written_by(path), "model": w.get("model"), "detected": w["detection"]["detected"],
                            "utterances": w["detection"]["utterances"], "rate": w["detection"]["rate"],
                            "by_condition": w["detection"]["by_condition"],
                            "false_wakes_per_hour": w["false_wakes"]["per_hour"],
                            "false_wake_speech_s": w["false_wakes"]["speech_s"],
                            "cpu_ms_per_audio_s": w["cpu_ms_per_audio_s"]}
    path = ROOT / "bench/results/llm_models.json"
    if path.exists():
        m = json.loads(path.read_text())
        out["llm_models"] = {**written_by(path), "threads": m.get("threads"), "models": [
            {k: r.get(k) for k in ("model", "file", "correct", "questions", "ttft_ms_p50", "ttft_ms_max",
                                   "decode_tok_s_p50")} for r in m.get("results", [])]}
    path = ROOT / "bench/results/visual_questions.json"
    if path.exists():
        v = json.loads(path.read_text())
        out["visual_questions"] = {**written_by(path), "detector": v["detector"]["name"], "cases": {
            name: {k: c.get(k) for k in ("right", "asked", "first_audio_ms_p50", "first_audio_ms_max",
                                         "end_of_speech_to_first_audio_ms_p50_estimate")}
            for name, c in v["cases"].items()}}
    return out


def table(result: dict[str, Any]) -> str:
    a, c, lat = result["accuracy"], result["recognition"], result["latency"]["summary"]
    lines = [f"{'measure':58} result", "-" * 90,
             f"{'commands right (intent + slots)':58} {a['commands_right']}/{a['commands']} "
             f"({a['commands_right_pct']}%)",
             f"{'questions taken as commands':58} {a['questions_taken']}/{a['questions']}",
             f"{'recognition CPU per sentence':58} {c['cpu_ms_per_sentence']} ms"]
    for kind, name in (("command", "command turns"), ("llm", f"LLM question {LLM_QUESTION!r}")):
        s = lat[kind]
        lines.append(f"{name + ': first audio p50 / p95 (client)':58} {s['client_first_audio_ms']['p50']:.0f} / "
                     f"{s['client_first_audio_ms']['p95']:.0f} ms (n={s['n']}, by code {s['by_code']})")
    for text in TURNS:
        lines.append(f"{'  ' + text + ': p50':58} {lat[text]['p50']:.0f} ms")
    o = result["others"]
    if "wake_word" in o:
        w = o["wake_word"]
        lines.append(f"{'wake word detected / false wakes per hour / CPU':58} {w['detected']}/{w['utterances']} / "
                     f"{w['false_wakes_per_hour']} / {w['cpu_ms_per_audio_s']} ms per s ({w['commit']})")
    for m in o.get("llm_models", {}).get("models", []):
        lines.append(f"{'model ' + str(m['model']) + ': right / first token p50':58} {m['correct']}/{m['questions']}"
                     f" / {m['ttft_ms_p50']} ms")
    for name, v in o.get("visual_questions", {}).get("cases", {}).items():
        lines.append(f"{'visual questions (' + name + '): right / first audio p50':58} {v['right']}/{v['asked']} / "
                     f"{v['first_audio_ms_p50']} ms")
    return "\n".join(lines)


async def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3, help="passes over the spoken requests")
    ap.add_argument("--out", type=Path, default=OUT)
    ns = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    settings = load(AIServerSettings, ai_media_dir=tempfile.mkdtemp(prefix="naila-bench-assist-"))
    load_before = os.getloadavg()
    server = await start_server(settings, host="127.0.0.1", port=0)
    try:
        assert server.assist is not None, "assist is off (ASSIST_ENABLED=false)"
        registry = server.assist.registry
        registry.add_slot_provider("area", lambda: AREAS)  # a household's rooms, as Home Assistant would name them
        recognizer = Recognizer(str(settings.assist_language or "en"))
        recognizer.warm()
        acc = await accuracy(registry, recognizer, server.assist.now)
        cost = recognition_cost(registry, recognizer)
        print(f"accuracy: {acc['commands_right']}/{acc['commands']} commands, {acc['questions_taken']} questions taken")
        records = await latency(server.address, ns.rounds)
        models = {"stt": f"{server.pipeline.stt.name} {server.pipeline.stt.model}",
                  "llm": f"{server.pipeline.llm.name} {server.pipeline.llm.model}",
                  "tts": f"{server.pipeline.tts.name} {server.pipeline.tts.model}"}
    finally:
        await server.stop()
    result = {
        "bench": "assist", "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "loadavg_before": load_before, "loadavg_after": os.getloadavg()},
        "clock": {"latency": "time.monotonic: END written -> first reply audio received (client)",
                  "monotonic": str(time.get_clock_info("monotonic")),
                  "perf_counter": str(time.get_clock_info("perf_counter"))},
        "models": models, "goals": GOALS, "accuracy": acc, "recognition": cost,
        "latency": {"rounds": ns.rounds, "summary": summarise(records), "turns": records},
        "others": others(),
    }
    print()
    print(table(result))
    ns.out.parent.mkdir(parents=True, exist_ok=True)
    ns.out.write_text(json.dumps(result, indent=1, default=str))
    print(f"\nwrote {ns.out}")
    return 0


if __name__ == "__main__":
    one_blas_thread()  # as `naila ai-server` runs (shared/threads.py)
    sys.exit(asyncio.run(main(sys.argv[1:])))
