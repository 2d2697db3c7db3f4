"""Which encoding of an embedded model runs on this machine: the shipped file or its re-encoding
(LLM_EMBEDDED_ENCODING; the re-encoding itself is ai_server/llm/models.py's).

Which one is faster depends on the CPU, not on the model. llama.cpp's Q4_1 kernels do more work
per byte and Q8_0's read more bytes (1.5x): on the 2-core AMD EPYC box SmolLM2 as Q8_0 evaluated
a question ~20 ms sooner and decoded 1-2.5 ms a token faster, its first clause ~35 ms sooner; on the
2-core Intel box of the rounds before, Q8_0 decoded 16 ms a token against 10.5 (memory-bound), a
first clause ~30 ms later. So ``auto`` times both once per machine as the reply uses them (one
thread: a short question after a cached prefix, then the first words, the stretch before the
first clause goes to TTS) and remembers the answer in the model cache, keyed by the CPU, the
llama.cpp build and the files. The re-encoding must win by :data:`MARGIN` to be taken: the
shipped bytes are the ones the answers were measured on, and noise should not flip the choice.
Where the timing itself fails, the shipped file runs (and is timed again at the next start).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from shared.config.ai_server import DEFAULT_SYSTEM_PROMPT

log = logging.getLogger(__name__)

MARGIN = 0.95  # the re-encoding runs only when it takes at most this share of the shipped file's time
ROUNDS = 3  # timings per file after a warm-up; the fastest counts (load on the box only ever slows a round)
CHOICES_FILE = "encoding-choice.json"
# A cached prefix (the server's prefill keeps system prompt and history evaluated), then what a
# turn costs after END: the user's words with the chat template's turn marks, and a first clause.
_PREFIX = f"<|im_start|>system\n{DEFAULT_SYSTEM_PROMPT}<|im_end|>\n<|im_start|>user\n"
_QUESTION = "How many legs does a spider have?<|im_end|>\n<|im_start|>assistant\n"
_FIRST_CLAUSE = "A spider has eight legs."

Timer = Callable[[Path], float]


def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo), or the machine type where that is not there."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith(("model name", "hardware")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return os.uname().machine


def first_clause_s(path: Path, rounds: int = ROUNDS) -> float:
    """Seconds the GGUF at ``path`` takes, on one thread, for a question after a cached prefix and
    a first clause's tokens one by one (the fastest of ``rounds``)."""
    from llama_cpp import Llama

    llm: Any = Llama(model_path=str(path), n_ctx=256, n_threads=1, n_threads_batch=1, verbose=False)
    try:
        prefix = llm.tokenize(_PREFIX.encode(), special=True)
        question = llm.tokenize(_QUESTION.encode(), add_bos=False, special=True)
        clause = llm.tokenize(_FIRST_CLAUSE.encode(), add_bos=False)
        llm.eval(prefix)
        times = []
        for _ in range(rounds + 1):  # the first round only warms the weights and the graph
            llm.n_tokens = len(prefix)  # back to the cached prefix (eval drops the cache past it)
            started = time.perf_counter()
            llm.eval(question)
            for token in clause:
                llm.eval([token])
            times.append(time.perf_counter() - started)
        return min(times[1:])
    finally:
        llm.close()


def _key(candidates: Sequence[Path]) -> str:
    import llama_cpp

    files = [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in candidates]
    text = json.dumps([cpu_name(), llama_cpp.__version__, files])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def faster(shipped: Path, reencoded: Path, cache: Path, timer: Timer | None = None) -> Path:
    """``reencoded`` where it beats ``shipped`` on this machine by :data:`MARGIN`, else ``shipped``;
    timed once (``timer``: seconds per file, the real :func:`first_clause_s` by default) and
    remembered in ``cache``."""
    record_file = cache / CHOICES_FILE
    try:
        records: dict[str, Any] = json.loads(record_file.read_text())
    except (OSError, ValueError):
        records = {}
    key = _key([shipped, reencoded])
    known = records.get(key)
    if isinstance(known, dict) and known.get("runs") in (shipped.name, reencoded.name):
        return reencoded if known["runs"] == reencoded.name else shipped
    measure = timer or first_clause_s
    try:
        times = {path.name: measure(path) for path in (shipped, reencoded)}
    except Exception as exc:  # any failure to time leaves the measured bytes running
        log.warning("could not time %s against %s (%s): %s runs", reencoded.name, shipped.name, exc, shipped.name)
        return shipped
    chosen = reencoded if times[reencoded.name] <= MARGIN * times[shipped.name] else shipped
    log.info("LLM encoding on this CPU (%s): %s (first clause %s)", cpu_name(), chosen.name,
             ", ".join(f"{name} {1000 * s:.0f} ms" for name, s in times.items()))
    records[key] = {"runs": chosen.name, "cpu": cpu_name(), "ms": {n: round(1000 * s, 1) for n, s in times.items()}}
    try:
        cache.mkdir(parents=True, exist_ok=True)
        tmp = record_file.with_name(f".{record_file.name}.{os.getpid()}")
        tmp.write_text(json.dumps(records, indent=1))
        os.replace(tmp, record_file)
    except OSError:  # a read-only cache: timed again at the next start, still right
        pass
    return chosen
