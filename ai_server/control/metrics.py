"""Counters of the MQTT control plane, in the AI server's Prometheus registry and readable in-process.

Same pattern as :class:`ai_server.metrics.Metrics`: prometheus_client objects registered in the
server's own ``CollectorRegistry`` (so /metrics shows them and several servers in one test
process do not collide), plus plain dictionaries that GetStatus and tests read.
"""

from __future__ import annotations

import threading
from collections import Counter as Tally

from prometheus_client import CollectorRegistry, Counter, Gauge


class ControlMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry = registry or CollectorRegistry()
        self._handled = Counter(
            "naila_ai_mqtt_handled", "Inbound MQTT messages handled, by topic kind", ["kind"], registry=registry
        )
        self._rejected = Counter(
            "naila_ai_mqtt_rejected",
            "Inbound MQTT messages refused (malformed, oversized, mismatch, rate_limited, ...)",
            ["reason"],
            registry=registry,
        )
        self._events = Counter(
            "naila_ai_mqtt_events",
            "Control plane events (device transitions, timeouts, speech...)",
            ["event"],
            registry=registry,
        )
        self.devices_online = Gauge(
            "naila_ai_mqtt_devices_online", "Devices whose retained status says online", registry=registry
        )
        self._lock = threading.Lock()
        self.handled: Tally[str] = Tally()
        self.rejected: Tally[str] = Tally()
        self.events: Tally[str] = Tally()

    def handle(self, kind: str) -> None:
        with self._lock:
            self.handled[kind] += 1
        self._handled.labels(kind).inc()

    def reject(self, reason: str) -> None:
        with self._lock:
            self.rejected[reason] += 1
        self._rejected.labels(reason).inc()

    def event(self, name: str) -> None:
        with self._lock:
            self.events[name] += 1
        self._events.labels(name).inc()

    def snapshot(self) -> dict[str, int]:
        """Flat counters for GetStatus: ``mqtt_rejected_<reason>``, ``mqtt_<event>``, ``mqtt_handled_<kind>``."""
        with self._lock:
            out = {f"mqtt_handled_{k}": v for k, v in self.handled.items()}
            out.update({f"mqtt_rejected_{k}": v for k, v in self.rejected.items()})
            out.update({f"mqtt_{k}": v for k, v in self.events.items()})
        return out
