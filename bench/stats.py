"""Percentiles for the benchmark scripts: linear interpolation between ranks (numpy's default)."""

from __future__ import annotations

import math


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
