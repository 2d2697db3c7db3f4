"""The embedded models side by side: answer accuracy on spoken-style questions, warm first token
and decode speed on this CPU (2 threads). Chooses nothing by itself; ai_server.llm.models's
DEFAULT_MODEL cites these numbers.

    .venv/bin/python bench/llm_models.py [--models smollm2-135m:shipped,qwen2.5-0.5b] [--threads 2]
        [--system-prompt TEXT]

Every installed catalogue model runs (a missing extra is reported and skipped), and a model the
catalogue re-encodes runs both ways (``key:shipped``, ``key:reencoded``; a bare key is
LLM_EMBEDDED_ENCODING's ``auto``, whichever is faster on this CPU). Each question is
also asked as Whisper often writes a browser's or a room microphone's speech (lowercase, no
question mark: "bare words") and as the server passes such words on (ai_server/conversation.py
as_written: "as written"), after the timed answer; an echo is an answer that starts by repeating the
question. Then the questions are asked as conversations, as the server prompts them (its history
and sampling, the seed fixed per order), in 6 shuffled orders ("in talk"). Writes
bench/results/llm_models.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ai_server.conversation import Conversations, as_written
from ai_server.errors import StartupError
from ai_server.llm.embedded import REPEAT_PENALTY
from ai_server.llm.models import CATALOGUE, model_path
from shared.config import AIServerSettings
from shared.config.ai_server import DEFAULT_SYSTEM_PROMPT

# (question as Whisper writes it: capitals and a question mark, which the small models answer
# differently from lowercase words, see docs/benchmarks.md; regex an acceptable answer contains)
CONVERSATION_ORDERS = 6  # shuffled orders of the questions asked as one conversation each (sampling seed = order)
QUESTIONS: list[tuple[str, str]] = [
    ("What is the capital of France?", r"paris"),
    ("Who wrote Romeo and Juliet?", r"shakespeare"),
    ("How many legs does a spider have?", r"\b(8|eight)\b"),
    ("What color is the sky on a clear day?", r"blue"),
    ("What is the largest planet in our solar system?", r"jupiter"),
    ("How many days are there in a week?", r"\b(7|seven)\b"),
    ("What do bees make?", r"honey"),
    ("What is the boiling point of water in Celsius?", r"\b100\b|hundred"),
    ("Who painted the Mona Lisa?", r"leonardo|da vinci"),
    ("What is the opposite of hot?", r"cold"),
    ("What language do people speak in Spain?", r"spanish"),
    ("How many continents are there?", r"\b(7|seven)\b"),
    ("What is the freezing point of water in Celsius?", r"\b0\b|zero"),
    ("What gas do plants take in from the air?", r"carbon dioxide|co2"),
    ("What is the capital of Japan?", r"tokyo"),
    ("Which animal is known as the king of the jungle?", r"lion"),
    ("How many hours are in a day?", r"\b(24|twenty[- ]four)\b"),
    ("What is the chemical symbol for gold?", r"\bau\b"),
    ("Who was the first person to walk on the moon?", r"armstrong"),
    ("What is the tallest mountain in the world?", r"everest"),
    ("What is the main ingredient of guacamole?", r"avocado"),
    ("How many strings does a standard guitar have?", r"\b(6|six)\b"),
]


def bare(question: str) -> str:
    """The question as Whisper often writes a browser's or a room microphone's speech: lowercase,
    no question mark."""
    return question.lower().rstrip("?")


def run_model(entry: str, threads: int, max_tokens: int, system_prompt: str = DEFAULT_SYSTEM_PROMPT) -> dict[str, Any]:
    from llama_cpp import Llama

    key, _, encoding = entry.partition(":")
    path = model_path(key, encoding=encoding or "auto")
    t0 = time.perf_counter()
    llm: Any = Llama(  # its stubs reject plain message dicts; the server holds it as Any too
        model_path=str(path), n_ctx=1024, n_threads=threads, n_threads_batch=threads, verbose=False
    )
    load_s = time.perf_counter() - t0
    system = {"role": "system", "content": system_prompt}
    # Warm: weights paged in, the system prompt in the KV cache (as the server's prefill does).
    llm.create_chat_completion(messages=[system, {"role": "user", "content": "Hi"}], max_tokens=1, temperature=0)
    rows: list[dict[str, Any]] = []
    for question, expected in QUESTIONS:
        start = time.perf_counter()
        first = None
        pieces: list[str] = []
        tokens = 0
        for chunk in llm.create_chat_completion(
            messages=[system, {"role": "user", "content": question}], stream=True,
            max_tokens=max_tokens, temperature=0.0, repeat_penalty=REPEAT_PENALTY,
        ):
            piece = chunk["choices"][0]["delta"].get("content")
            if piece:
                tokens += 1
                first = first or time.perf_counter()
                pieces.append(piece)
        end = time.perf_counter()
        answer = "".join(pieces).strip()
        # The bare words, and what the server makes of them (ai_server/conversation.py); after the
        # timed answer, so its prompt shares no more with the one before than the system's.
        as_heard: dict[str, dict[str, Any]] = {}
        for form, text in (("bare", bare(question)), ("as_written", as_written(bare(question)))):
            out = llm.create_chat_completion(messages=[system, {"role": "user", "content": text}],
                                             max_tokens=max_tokens, temperature=0.0, repeat_penalty=REPEAT_PENALTY)
            said = out["choices"][0]["message"]["content"].strip()
            as_heard[form] = {"asked": text, "answer": said, "ok": bool(re.search(expected, said, re.IGNORECASE)),
                              "echo": said.lower().startswith(bare(question)[:15])}
        rows.append({
            "question": question, "answer": answer, "ok": bool(re.search(expected, answer, re.IGNORECASE)),
            "ttft_ms": round(((first or end) - start) * 1000, 1),
            "decode_tok_s": round((tokens - 1) / (end - first), 1) if first and tokens > 1 and end > first else None,
            "as_heard": as_heard,
        })
    talk = conversations(llm, system_prompt, max_tokens)
    llm.close()
    decode = [r["decode_tok_s"] for r in rows if r["decode_tok_s"]]
    return {
        "model": entry, "file": path.name, "load_s": round(load_s, 2),
        "correct": sum(r["ok"] for r in rows), "questions": len(rows),
        **{f"correct_{form}": sum(r["as_heard"][form]["ok"] for r in rows) for form in ("bare", "as_written")},
        **{f"echoes_{form}": sum(r["as_heard"][form]["echo"] for r in rows) for form in ("bare", "as_written")},
        "conversation_right": sum(a["ok"] for a in talk), "conversation_answers": len(talk),
        "ttft_ms_p50": round(statistics.median(r["ttft_ms"] for r in rows), 1),
        "ttft_ms_max": max(r["ttft_ms"] for r in rows),
        "decode_tok_s_p50": round(statistics.median(decode), 1) if decode else None,
        "answers": rows,
        "conversations": talk,
    }


def conversations(llm: Any, system_prompt: str, max_tokens: int,
                  orders: int = CONVERSATION_ORDERS) -> list[dict[str, Any]]:
    """The questions one after another in one conversation, as the server prompts them (its history,
    its sampling: ai_server.conversation.Conversations, LLM_TEMPERATURE, LLM_HISTORY_TURNS), in
    ``orders`` shuffled orders: what history and sampling do to the answers."""
    settings = AIServerSettings()
    answers: list[dict[str, Any]] = []
    for order in range(orders):
        asked = QUESTIONS[:]
        random.Random(order).shuffle(asked)
        llm.set_seed(order)  # every model and encoding samples alike: the answers differ by the model
        talk = Conversations(system_prompt, settings.llm_history_turns)
        for question, expected in asked:
            out = llm.create_chat_completion(messages=talk.messages("bench", question), max_tokens=max_tokens,
                                             temperature=settings.llm_temperature, repeat_penalty=REPEAT_PENALTY)
            said = out["choices"][0]["message"]["content"].strip()
            talk.record("bench", question, said)
            answers.append({"order": order, "question": question, "answer": said,
                            "ok": bool(re.search(expected, said, re.IGNORECASE))})
    return answers


def default_models() -> str:
    """Every catalogue model; one the catalogue re-encodes, both ways."""
    entries: list[str] = []
    for key, model in CATALOGUE.items():
        entries += [f"{key}:shipped", f"{key}:reencoded"] if model.run_as else [key]
    return ",".join(entries)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=default_models())
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--system-prompt", default=DEFAULT_SYSTEM_PROMPT, help="the shipped one unless given")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "llm_models.json"))
    args = ap.parse_args()
    results, skipped = [], {}
    for key in args.models.split(","):
        try:
            results.append(run_model(key, args.threads, args.max_tokens, args.system_prompt))
        except StartupError as exc:
            skipped[key] = str(exc)
            print(f"skipped {key}: {exc}", file=sys.stderr)
    out = {"threads": args.threads, "max_tokens": args.max_tokens, "system_prompt": args.system_prompt,
           "results": results, "skipped": skipped}
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(f"{'model':<24} {'correct':>8} {'bare words':>11} {'as written':>11} {'in talk':>8} "
          f"{'TTFT p50 ms':>12} {'TTFT max ms':>12} "
          f"{'decode tok/s':>13} {'load s':>7}")
    for r in results:
        print(f"{r['model']:<24} {r['correct']:>4}/{r['questions']:<3} "
              f"{r['correct_bare']:>5} ({r['echoes_bare']} echo) "
              f"{r['correct_as_written']:>3} ({r['echoes_as_written']} echo) "
              f"{r['conversation_right']:>3}/{r['conversation_answers']:<3} {r['ttft_ms_p50']:>12} "
              f"{r['ttft_ms_max']:>12} {r['decode_tok_s_p50']!s:>13} {r['load_s']:>7}")


if __name__ == "__main__":
    main()
