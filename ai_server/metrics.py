"""Turn counters and per-stage latency: recent p50/p95 for GetStatus, histograms for Prometheus.

Each server gets its own CollectorRegistry, so several servers in one process (tests)
do not collide. Stage names match TurnTiming's fields without the ``_ms`` suffix.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

log = logging.getLogger(__name__)

STAGES = ("stt", "llm_first_token", "first_sentence", "tts_first_audio", "first_frame_sent", "total")
BUCKETS_S = (0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.85, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)


class Metrics:
    def __init__(self, window: int = 200) -> None:
        self.registry = CollectorRegistry()
        self._stage = Histogram(
            "naila_ai_turn_stage_seconds",
            "Time from END to each stage of a turn (AI server monotonic clock)",
            ["stage"],
            buckets=BUCKETS_S,
            registry=self.registry,
        )
        self._events = Counter(
            "naila_ai_events", "Turn events (turns, interrupts, empty transcripts, ...)", ["event"],
            registry=self.registry,
        )
        self._errors = Counter("naila_ai_errors", "Turns answered with an error code", ["code"],
                               registry=self.registry)
        self.active = Gauge("naila_ai_active_conversations", "Devices with an utterance or reply in flight",
                            registry=self.registry)
        self._lock = threading.Lock()
        self._windows: dict[str, deque[float]] = {s: deque(maxlen=window) for s in STAGES}
        self.counters: dict[str, int] = {}
        self._http: Any = None

    def count(self, event: str, n: int = 1) -> None:
        with self._lock:
            self.counters[event] = self.counters.get(event, 0) + n
        self._events.labels(event).inc(n)

    def error(self, code: str) -> None:
        with self._lock:
            key = f"errors_{code}"
            self.counters[key] = self.counters.get(key, 0) + 1
        self._errors.labels(code).inc()

    def observe_turn(self, stages_ms: dict[str, float]) -> None:
        """Record the stages a turn reached (missing stages are simply not recorded)."""
        with self._lock:
            for stage, ms in stages_ms.items():
                if stage in self._windows:
                    self._windows[stage].append(ms)
        for stage, ms in stages_ms.items():
            self._stage.labels(stage).observe(ms / 1000.0)

    def latencies(self) -> list[tuple[str, float, float, int]]:
        """(stage, p50 ms, p95 ms, samples) over the recent window, for stages with data."""
        out = []
        with self._lock:
            for stage in STAGES:
                values = list(self._windows[stage])
                if values:
                    p50, p95 = np.percentile(values, [50, 95])
                    out.append((stage, float(p50), float(p95), len(values)))
        return out

    def serve_http(self, port: int, addr: str = "0.0.0.0") -> int:
        """Expose /metrics on ``port`` (0 = any free port); returns the bound port."""
        server, _thread = start_http_server(port, addr=addr, registry=self.registry)
        self._http = server
        bound = int(server.server_port)
        log.info("Prometheus metrics on http://%s:%d/metrics", addr, bound)
        return bound

    def close(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
