"""Which room each device is in, so every utterance tells the AI server where the user is.

The one place the hub keeps a device's room. It comes from the device's retained MQTT status
(``naila/devices/{id}/status``, set by DEVICE_ROOM on the Pi), decoded once by
hub.device_status, or a browser device names its own room on the web page (hub.web). Either way
it rides on every AudioInput (``room``), the AI server puts it in the LLM's context ("turn off
the lights" means this room's lights), and the dashboard shows it.

Bounded (M8): statuses are rate limited before they are decoded (hub.device_status), and at
most MAX_ROOMS devices are kept, the least recently told forgotten first.
"""

from __future__ import annotations

import logging

from shared.mqtt import DeviceStatus

log = logging.getLogger(__name__)

MAX_ROOMS = 1000


class RoomDirectory:
    def __init__(self, *, max_rooms: int = MAX_ROOMS) -> None:
        self._rooms: dict[str, str] = {}
        self._max_rooms = max_rooms

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

    def on_status(self, status: DeviceStatus) -> None:
        """hub.device_status listener. A status without a room (a will, say) keeps the room known."""
        if status.room:
            if self._rooms.get(status.device_id) != status.room:
                log.info("device %s is in room %s", status.device_id, status.room)
            self.set(status.device_id, status.room)
