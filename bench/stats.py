"""Percentiles for the benchmark scripts: linear interpolation between ranks (numpy's default)."""

from __future__ import annotations

import math
import os
from pathlib import Path


def pct(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values``; NaN when there are none."""
    if not values:
        return math.nan
    s = sorted(values)
    k = (len(s) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def spread(values: list[float]) -> dict[str, float]:
    """p50, p95 and how many: the figures a bench reports for one set of timings."""
    return {"p50": pct(values, 0.5), "p95": pct(values, 0.95), "n": len(values)}


def cpu() -> str:
    """This machine's CPU as a bench's JSON records it: the figures differ by CPU model (an Intel
    box with AMX and an AMD EPYC with AVX-512 gave the same code different latencies)."""
    model, flags = "unknown CPU", set[str]()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    isa = [f for f in ("avx2", "avx512f", "avx512_vnni", "amx_tile") if f in flags]
    return f"{os.cpu_count()} x {model}" + (f" ({', '.join(isa)})" if isa else "")


def llm_file() -> str:
    """The GGUF the AI server runs with this environment's settings (LLM_EMBEDDED_ENCODING picks the
    shipped SmolLM2 Q4_1 or its Q8_0 re-encoding by this CPU): a bench's JSON records it."""
    from ai_server.llm.embedded import resolve_model_path
    from shared.config import AIServerSettings

    s = AIServerSettings()
    return resolve_model_path(s.llm_model_path, s.llm_embedded_model, s.llm_model_cache, s.llm_embedded_encoding).name
