"""Vision counters and batch timings, in the AI server's Prometheus registry and readable in-process.

The pattern of :class:`ai_server.control.metrics.ControlMetrics`: prometheus_client objects in the
server's own registry (``/metrics``), plus a plain tally that GetStatus (``vision_*``) and tests read.
"""

from __future__ import annotations

import threading
from collections import Counter as Tally
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Histogram

_BATCH_BUCKETS_S: Final = (0.01, 0.02, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0)


class VisionMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry = registry or CollectorRegistry()
        self._events = Counter(
            "naila_ai_vision_events",
            "Vision events (frames, refreshes, superseded and refused frames, YOLO calls, tracks, alerts...)",
            ["event"],
            registry=registry,
        )
        self._batch = Histogram(
            "naila_ai_vision_batch_seconds", "Time of one YOLO call (all frames of the batch)",
            buckets=_BATCH_BUCKETS_S, registry=registry,
        )
        self._lock = threading.Lock()
        self.events: Tally[str] = Tally()

    def event(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.events[name] += n
        self._events.labels(name).inc(n)

    def batch(self, seconds: float) -> None:
        self._batch.observe(seconds)

    def snapshot(self) -> dict[str, int]:
        """Flat counters for GetStatus: ``vision_<event>``."""
        with self._lock:
            return {f"vision_{k}": v for k, v in self.events.items()}
