"""The hub's counters and latency histograms: one source for /health and /metrics.

Counters live as plain ints in :class:`HubMetrics` (cheap to bump on the media path, read
directly by /health) and are exported to Prometheus by a collector reading them at scrape
time. Histograms are prometheus_client Histograms. Every hub owns its own
CollectorRegistry, so tests can run several hubs in one process.
"""

from __future__ import annotations

import os
import resource
import time
from collections import Counter
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

# Latency buckets in seconds: 1 ms .. 5 s.
_FAST = (0.001, 0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0)
_SLOW = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)


class HubMetrics:
    """Counters (ints), gauges (callbacks) and histograms of one hub."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.started_at = clock()
        self._clock = clock
        # The /health counters (spec names).
        self.frames_forwarded = 0  # 20 ms frames of audio written to the AI stream
        self.vad_onsets = 0
        self.vad_ends = 0
        self.tts_frames_routed = 0  # AudioOutput messages with audio routed to a device
        self.grpc_reconnects = 0  # times the AI stream came back after being lost
        # The rest, by reason.
        self.interrupts = 0
        self.bad_requests: Counter[str] = Counter()  # 400s by reason
        self.unauthorized = 0  # 401s
        # /connect front door (issue 18, H1/H6): 408/429/503 refusals by reason, 421s, dropped slow connections.
        self.connect_refused: Counter[str] = Counter()
        self.host_refused = 0  # requests for a Host that is not the hub's (DNS rebinding), 421
        self.header_timeouts = 0  # connections closed with no complete request after HUB_REQUEST_TIMEOUT_S
        self.utterances_capped = 0  # utterances ended at HUB_MAX_UTTERANCE_S without a pause (H4)
        # Web app and data endpoints (hub/web, hub/status_routes.py): refusals and drops, by reason.
        self.web_refused: Counter[str] = Counter()
        self.frames_dropped: Counter[str] = Counter()  # uplink frames not sent, by reason
        self.tts_dropped: Counter[str] = Counter()  # AudioOutput messages not played, by reason
        self.control_messages: Counter[str] = Counter()  # control-channel messages sent, by type
        self.arbitration: Counter[str] = Counter()  # arbitration decisions for this hub's devices: won / lost
        # Listening modes (issue 19): wake words (heard / quiet), utterances not sent (by mode) and
        # control messages from devices that were refused (by reason).
        self.wake_words: Counter[str] = Counter()
        self.utterances_ignored: Counter[str] = Counter()
        self.control_rejected: Counter[str] = Counter()
        # End of turn by a model (issue 20, AUDIO_END_OF_TURN=smart_turn): verdicts by outcome (complete =
        # END at once, likely = END after the hangover, incomplete = the fallback; late = after speech resumed,
        # stale = skipped unasked, error).
        self.end_of_turn: Counter[str] = Counter()
        self.sessions_opened = 0
        self.sessions_closed: Counter[str] = Counter()  # by reason (dead peers: ice_failed, no_rtp)
        self.grpc_connect_failures = 0
        self.grpc_heartbeat_failures = 0
        self.unknown_device_outputs = 0
        # MQTT (hub/mqtt_control.py, hub/mqtt_signaling.py).
        self.mqtt_offers = 0  # messages on naila/devices/+/signaling/offer
        self.mqtt_answers = 0  # SDP answers published
        self.mqtt_offers_other_hub = 0  # offers another hub answers (issue 21: several hubs)
        self.mqtt_offers_rejected: Counter[str] = Counter()  # offers refused, by reason
        self.mqtt_ice: Counter[str] = Counter()  # trickled device candidates, by outcome
        self.mqtt_listener_errors = 0  # exceptions raised by hub MQTT listeners
        # Vision (hub/vision): camera frames through the motion gate to the AI server's AnalyzeFrames.
        self.vision_frames_in = 0  # decoded camera frames the motion gate saw
        self.vision_motion_frames = 0  # of those, with motion
        self.vision_frames_forwarded = 0  # motion frames chosen for detection (every Nth)
        self.vision_refreshes = 0  # no-motion refresh frames chosen (latest view, no detection)
        self.vision_frames_sent = 0  # frames written on the AnalyzeFrames stream
        self.vision_frames_dropped: Counter[str] = Counter()  # chosen frames not delivered, by reason
        self.vision_frame_errors: Counter[str] = Counter()  # bad frames skipped: decode / encode
        self.vision_results = 0  # VisionResults received
        self.vision_result_errors = 0  # of those, with an error
        self.vision_detections = 0  # objects in those results
        self.vision_stream_reconnects = 0  # AnalyzeFrames stream re-established after a loss
        self.vision_connect_failures = 0  # failed attempts to reach the AI server for vision
        # Gauges, read at scrape time.
        self.active_devices: Callable[[], int] = lambda: 0
        self.grpc_connected: Callable[[], bool] = lambda: False
        self.ai_status: Callable[[], str] = lambda: ""  # the AI server's GetStatus status ("" = not known)
        self.mqtt_connected: Callable[[], bool] = lambda: False
        self.vision_cameras: Callable[[], int] = lambda: 0
        self.vision_connected: Callable[[], bool] = lambda: False
        self.vision_queue_depth: Callable[[], int] = lambda: 0
        self.negotiations: Callable[[], int] = lambda: 0

        self.registry = CollectorRegistry(auto_describe=True)
        self.uplink_latency = Histogram(
            "naila_hub_uplink_latency_seconds",
            "Hub-added latency device->AI: decoded frame received from WebRTC to written on the gRPC stream",
            buckets=_FAST,
            registry=self.registry,
        )
        self.downlink_latency = Histogram(
            "naila_hub_downlink_latency_seconds",
            "Hub-added latency AI->device: AudioOutput received (idle track) to its first sample "
            "handed to the WebRTC encoder",
            buckets=_FAST,
            registry=self.registry,
        )
        self.grpc_end_to_transcript = Histogram(
            "naila_hub_grpc_end_to_transcript_seconds",
            "gRPC round trip: END written to the transcript (final_stt) received",
            buckets=_SLOW,
            registry=self.registry,
        )
        self.grpc_end_to_first_audio = Histogram(
            "naila_hub_grpc_end_to_first_audio_seconds",
            "gRPC round trip: END written to the first reply audio received",
            buckets=_SLOW,
            registry=self.registry,
        )
        self.grpc_end_to_final = Histogram(
            "naila_hub_grpc_end_to_final_seconds",
            "gRPC round trip: END written to is_final received",
            buckets=_SLOW,
            registry=self.registry,
        )
        self.grpc_status_rtt = Histogram(
            "naila_hub_grpc_status_rtt_seconds",
            "gRPC round trip of the GetStatus heartbeat on the AI channel",
            buckets=_FAST,
            registry=self.registry,
        )
        self.end_of_turn_latency = Histogram(
            "naila_hub_end_of_turn_latency_seconds",
            "End-of-turn model: question asked (first short pause) to verdict back on the event loop",
            buckets=_FAST,
            registry=self.registry,
        )
        self.vision_result_latency = Histogram(
            "naila_hub_vision_result_latency_seconds",
            "AnalyzeFrames round trip: frame written on the stream to its VisionResult received",
            buckets=(*_FAST, 2.0, 5.0),
            registry=self.registry,
        )
        self.registry.register(_CounterCollector(self))

    def uptime_secs(self) -> int:
        return int(self._clock() - self.started_at)

    @property
    def frames_dropped_total(self) -> int:
        return sum(self.frames_dropped.values())

    def health(self) -> dict[str, object]:
        """The /health body: exactly the spec's fields."""
        connected = bool(self.grpc_connected())
        # Degraded too when the AI server says so (a fallback voice, a vision model that failed to load).
        ok = connected and self.ai_status() in ("", "ok")
        return {
            "status": "ok" if ok else "degraded",
            "uptime_secs": self.uptime_secs(),
            "active_devices": int(self.active_devices()),
            "grpc_connected": connected,
            "frames_forwarded": self.frames_forwarded,
            "vad_onsets": self.vad_onsets,
            "vad_ends": self.vad_ends,
            "tts_frames_routed": self.tts_frames_routed,
            "grpc_reconnects": self.grpc_reconnects,
        }

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def open_fds() -> int | None:
    """File descriptors this process holds (Linux /proc); None where that cannot be read."""
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return None


class _CounterCollector(Collector):
    """Exports HubMetrics' ints at scrape time (no double bookkeeping on the media path)."""

    def __init__(self, m: HubMetrics) -> None:
        self._m = m

    def describe(self) -> Iterator[Metric]:
        return iter(())  # unchecked collector: names are fixed and do not clash

    def collect(self) -> Iterator[Metric]:
        m = self._m
        simple = {
            "frames_forwarded": (m.frames_forwarded, "20 ms audio frames forwarded to the AI server"),
            "vad_onsets": (m.vad_onsets, "Speech onsets (START sent)"),
            "vad_ends": (m.vad_ends, "Speech ends (END sent)"),
            "tts_frames_routed": (m.tts_frames_routed, "AudioOutput audio messages routed to a device"),
            "grpc_reconnects": (m.grpc_reconnects, "AI stream re-established after a loss"),
            "grpc_connect_failures": (m.grpc_connect_failures, "Failed attempts to open the AI stream"),
            "grpc_heartbeat_failures": (m.grpc_heartbeat_failures, "AI streams torn down for missed heartbeats"),
            "interrupts": (m.interrupts, "Barge-ins (INTERRUPT sent)"),
            "unauthorized_requests": (m.unauthorized, "/connect requests refused with 401"),
            "host_refused": (m.host_refused, "Requests for a Host name that is not the hub's, refused with 421"),
            "header_timeouts": (m.header_timeouts, "Connections closed for sending no complete request in time"),
            "utterances_capped": (m.utterances_capped, "Utterances ended at HUB_MAX_UTTERANCE_S without a pause"),
            "unknown_device_outputs": (m.unknown_device_outputs, "AudioOutput for a device not connected"),
            "sessions_opened": (m.sessions_opened, "WebRTC sessions opened"),
            "mqtt_offers": (m.mqtt_offers, "Messages received on naila/devices/+/signaling/offer"),
            "mqtt_answers": (m.mqtt_answers, "SDP answers published on naila/devices/<id>/signaling/answer"),
            "mqtt_offers_other_hub": (m.mqtt_offers_other_hub, "MQTT offers left to the hub elected to answer them"),
            "mqtt_listener_errors": (m.mqtt_listener_errors, "Exceptions raised by hub MQTT listeners"),
            "vision_frames_in": (m.vision_frames_in, "Decoded camera frames through the motion gate"),
            "vision_motion_frames": (m.vision_motion_frames, "Camera frames with motion"),
            "vision_frames_forwarded": (m.vision_frames_forwarded, "Motion frames chosen for detection (every Nth)"),
            "vision_refreshes": (m.vision_refreshes, "No-motion refresh frames chosen (latest view, no detection)"),
            "vision_frames_sent": (m.vision_frames_sent, "Frames written on the AnalyzeFrames stream"),
            "vision_results": (m.vision_results, "VisionResults received"),
            "vision_result_errors": (m.vision_result_errors, "VisionResults carrying an error"),
            "vision_detections": (m.vision_detections, "Objects detected in received VisionResults"),
            "vision_stream_reconnects": (m.vision_stream_reconnects, "AnalyzeFrames stream re-established"),
            "vision_connect_failures": (m.vision_connect_failures, "Failed attempts to reach the AI server for vision"),
        }
        for name, (value, doc) in simple.items():
            c = CounterMetricFamily(f"naila_hub_{name}", doc)
            c.add_metric([], value)
            yield c
        labelled = {
            "bad_requests": ("reason", m.bad_requests, "/connect requests refused with 400, by reason"),
            "connect_refused": ("reason", m.connect_refused,
                                "/connect requests refused for limits and capacity (408/429/503), by reason"),
            "frames_dropped": ("reason", m.frames_dropped, "Uplink 20 ms frames dropped, by reason"),
            "tts_dropped": ("reason", m.tts_dropped, "AudioOutput messages not played, by reason"),
            "control_messages": ("type", m.control_messages, "Control-channel messages sent to devices, by type"),
            "arbitration": ("outcome", m.arbitration, "Utterances claimed when several devices may hear one person"),
            "wake_words": ("outcome", m.wake_words, "Wake words heard, and wakes that ended with nobody speaking"),
            "utterances_ignored": ("mode", m.utterances_ignored,
                                   "Utterances not sent upstream by the listening mode (no wake word, button up)"),
            "control_rejected": ("reason", m.control_rejected, "Control messages from devices refused, by reason"),
            "end_of_turn_verdicts": ("outcome", m.end_of_turn, "End-of-turn model verdicts, by outcome"),
            "sessions_closed": ("reason", m.sessions_closed, "WebRTC sessions closed, by reason"),
            "mqtt_offers_rejected": ("reason", m.mqtt_offers_rejected, "MQTT offers refused, by reason"),
            "mqtt_ice_candidates": ("outcome", m.mqtt_ice, "Trickled ICE candidates from devices, by outcome"),
            "vision_frames_dropped": ("reason", m.vision_frames_dropped,
                                      "Chosen camera frames not delivered to the AI server, by reason"),
            "vision_frame_errors": ("kind", m.vision_frame_errors, "Bad camera frames skipped, by kind"),
            "web_refused": ("reason", m.web_refused,
                            "Web logins, data reads and device statuses refused or dropped, by reason"),
        }
        for name, (label, counts, doc) in labelled.items():
            c = CounterMetricFamily(f"naila_hub_{name}", doc, labels=[label])
            for key, value in sorted(counts.items()):
                c.add_metric([key], value)
            yield c
        g = GaugeMetricFamily("naila_hub_active_devices", "Devices with a live WebRTC session")
        g.add_metric([], int(m.active_devices()))
        yield g
        g = GaugeMetricFamily("naila_hub_grpc_connected", "1 while the AI stream is up")
        g.add_metric([], 1 if m.grpc_connected() else 0)
        yield g
        g = GaugeMetricFamily("naila_hub_mqtt_connected", "1 while the hub is connected to the MQTT broker")
        g.add_metric([], 1 if m.mqtt_connected() else 0)
        yield g
        g = GaugeMetricFamily("naila_hub_vision_cameras", "Cameras streaming into the motion gate")
        g.add_metric([], int(m.vision_cameras()))
        yield g
        g = GaugeMetricFamily("naila_hub_vision_connected", "1 while the AnalyzeFrames stream is up")
        g.add_metric([], 1 if m.vision_connected() else 0)
        yield g
        g = GaugeMetricFamily("naila_hub_vision_queue_frames", "Frames waiting for the AnalyzeFrames stream")
        g.add_metric([], int(m.vision_queue_depth()))
        yield g
        g = GaugeMetricFamily("naila_hub_negotiations", "SDP offers being negotiated (HTTP and MQTT)")
        g.add_metric([], int(m.negotiations()))
        yield g
        fds = open_fds()
        if fds is not None:
            g = GaugeMetricFamily("naila_hub_open_fds", "File descriptors the hub process holds open")
            g.add_metric([], fds)
            yield g
            g = GaugeMetricFamily("naila_hub_max_fds", "The hub process's file-descriptor limit (soft)")
            g.add_metric([], resource.getrlimit(resource.RLIMIT_NOFILE)[0])
            yield g
        g = GaugeMetricFamily("naila_hub_uptime_seconds", "Seconds since the hub started")
        g.add_metric([], m.uptime_secs())
        yield g
