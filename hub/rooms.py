"""Which room each device is in, so every utterance tells the AI server where the user is.

The room comes from the device's retained MQTT status (``naila/devices/{id}/status``, set by
DEVICE_ROOM on the Pi) through the hub's broker link; a browser device names its own room on
the web page (hub.web). Either way it rides on every AudioInput (``room``), and the AI server
puts it in the LLM's context ("turn off the lights" means this room's lights).
Statuses that do not validate are dropped: a room is always a safe topic segment.

Bounded (M8): each device's statuses pass a rate limit before they are parsed (a device sends
one when it connects and every 30 s; the excess is dropped and counted, and the room, which
rarely changes, comes back with the next heartbeat), and at most MAX_ROOMS devices are kept,
the least recently told forgotten first.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from shared.mqtt import DeviceStatus, MessageError, decode_message, parse_topic
from shared.rate_limit import RateLimiter

log = logging.getLogger(__name__)

MAX_ROOMS = 1000


class RoomDirectory:
    def __init__(self, *, clock: Callable[[], float] = time.monotonic, max_rooms: int = MAX_ROOMS) -> None:
        self._rooms: dict[str, str] = {}
        self._max_rooms = max_rooms
        self._limiter = RateLimiter(rate_per_s=0.5, burst=5, clock=clock, max_keys=max_rooms * 2)
        self.dropped = 0  # statuses over their device's rate

    def room_of(self, device_id: str) -> str:
        return self._rooms.get(device_id, "")

    def __len__(self) -> int:
        return len(self._rooms)

    def set(self, device_id: str, room: str | None) -> None:
        self._rooms.pop(device_id, None)  # re-inserted last: the map's order is least recently told first
        if room:
            if len(self._rooms) >= self._max_rooms:
                del self._rooms[next(iter(self._rooms))]
            self._rooms[device_id] = room

    async def on_status(self, topic: str, payload: bytes) -> None:
        """MQTT listener for ``naila/devices/+/status``."""
        if not payload:  # a cleared retained status
            return
        try:
            device_id = parse_topic(topic).device_id
        except MessageError as exc:
            log.debug("room directory: status on %s dropped: %s", topic[:200], exc)
            return
        if device_id is not None and not self._limiter.allow(device_id):
            self.dropped += 1
            log.debug("room directory: status of %s over its rate, dropped", device_id)
            return
        try:
            _, message = decode_message(topic, payload)
        except MessageError as exc:
            log.debug("room directory: status on %s dropped: %s", topic, exc)
            return
        if isinstance(message, DeviceStatus) and message.room:
            if self._rooms.get(message.device_id) != message.room:
                log.info("device %s is in room %s", message.device_id, message.room)
            self.set(message.device_id, message.room)
