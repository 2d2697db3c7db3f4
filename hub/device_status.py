"""The hub's one subscription to device statuses (``naila/devices/+/status``), decoded once.

Every part of the hub that cares what a device says about itself (its room: hub.rooms; its
listening mode: hub.listening; the dashboard: hub.web.state) registers a listener here and gets
validated :class:`~shared.mqtt.DeviceStatus` objects, never raw payloads. A status that does not
validate is dropped (logged at debug: anyone on the LAN may send one), so ids and rooms handed on
are always safe topic segments.

Bounded (M8): each device's statuses pass a rate limit before they are parsed (a device sends one
when it connects and every DEVICE_HEARTBEAT_S, 30 s). One over the limit is parked, unparsed and
only the latest per device, and applied once the device is under its rate again (a timer, or
:meth:`DeviceStatusFeed.apply_parked`), so the final state of a flapping device still arrives.
An empty retained message (a cleared status) is passed on at once and drops what was parked.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from hub.metrics import HubMetrics
from shared.mqtt import DeviceStatus, MessageError, decode_message, parse_topic, topics
from shared.rate_limit import RateLimiter

log = logging.getLogger(__name__)

# 5 at once, then one every 2 s: far above a device's real rate, and it bounds what one
# misbehaving client can make the hub decode.
STATUS_BURST = 5
STATUS_PER_S = 0.5
MAX_PARKED = 500  # devices flooding at once past this is an attack, not a house: dropped

StatusListener = Callable[[DeviceStatus], None]
ClearedListener = Callable[[str], None]


class DeviceStatusFeed:
    """Register :meth:`on_mqtt` for ``topics.ALL_DEVICE_STATUS``; listeners get each status once."""

    def __init__(self, metrics: HubMetrics | None = None, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._metrics = metrics
        self._limiter = RateLimiter(STATUS_PER_S, STATUS_BURST, clock=clock, max_keys=MAX_PARKED * 4)
        self._parked: dict[str, tuple[str, bytes]] = {}  # device id -> its latest over-limit status
        self._timer: asyncio.TimerHandle | None = None
        self._on_status: list[StatusListener] = []
        self._on_cleared: list[ClearedListener] = []
        self.limited = 0  # statuses over their device's rate (parked or dropped)
        self.invalid = 0  # statuses that did not validate

    def add_listener(self, on_status: StatusListener, on_cleared: ClearedListener | None = None) -> None:
        self._on_status.append(on_status)
        if on_cleared is not None:
            self._on_cleared.append(on_cleared)

    async def on_mqtt(self, topic: str, payload: bytes) -> None:
        """MQTT listener for ``naila/devices/+/status``."""
        self.receive(topic, payload)

    def receive(self, topic: str, payload: bytes) -> None:
        try:
            parsed = parse_topic(topic)
        except MessageError as exc:
            self.invalid += 1
            log.debug("device status on %r dropped: %s", topic[:200], exc)
            return
        device_id = parsed.device_id
        if parsed.kind is not topics.TopicKind.DEVICE_STATUS or device_id is None:
            return
        if not payload:
            self._parked.pop(device_id, None)  # older than the clear: must not bring it back
            for cleared in self._on_cleared:
                cleared(device_id)
            return
        if device_id in self._parked or not self._limiter.allow(device_id):
            self._park(device_id, topic, payload)
            return
        self._apply(topic, payload)

    def _park(self, device_id: str, topic: str, payload: bytes) -> None:
        self.limited += 1
        if self._metrics is not None:
            # Exported as naila_hub_web_refused_total{reason="status_limited"}: the dashboard counted it first.
            self._metrics.web_refused["status_limited"] += 1
        if device_id not in self._parked:
            if len(self._parked) >= MAX_PARKED:
                return
            log.info("statuses of %s over %.1f/s; only its latest is applied", device_id, STATUS_PER_S)
        self._parked[device_id] = (topic, payload)
        self._schedule()

    def _schedule(self) -> None:
        if self._timer is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop (a test driving it by hand): apply_parked is called directly
        self._timer = loop.call_later(1 / STATUS_PER_S, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self.apply_parked()
        if self._parked:
            self._schedule()

    def apply_parked(self) -> None:
        """Apply the parked statuses of devices that are under their rate again."""
        for device_id, (topic, payload) in list(self._parked.items()):
            if self._limiter.allow(device_id):
                del self._parked[device_id]
                self._apply(topic, payload)

    def _apply(self, topic: str, payload: bytes) -> None:
        try:
            _, message = decode_message(topic, payload)
        except MessageError as exc:
            self.invalid += 1
            log.debug("device status on %r dropped: %s", topic[:200], exc)
            return
        if not isinstance(message, DeviceStatus):
            return
        for listener in self._on_status:
            try:
                listener(message)
            except Exception:
                # One broken consumer must not keep the others from hearing the device.
                log.exception("device status listener %r failed on %s", listener, message.device_id)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
