"""Which room each device is in, so every utterance tells the AI server where the user is.

The room comes from the device's retained MQTT status (``naila/devices/{id}/status``, set by
DEVICE_ROOM on the Pi) through the hub's broker link; a browser device names its own room on
the web page (hub.web). Either way it rides on every AudioInput (``room``), and the AI server
puts it in the LLM's context ("turn off the lights" means this room's lights).
Statuses that do not validate are dropped: a room is always a safe topic segment.
"""

from __future__ import annotations

import logging

from shared.mqtt import DeviceStatus, MessageError, decode_message

log = logging.getLogger(__name__)


class RoomDirectory:
    def __init__(self) -> None:
        self._rooms: dict[str, str] = {}

    def room_of(self, device_id: str) -> str:
        return self._rooms.get(device_id, "")

    def set(self, device_id: str, room: str | None) -> None:
        if room:
            self._rooms[device_id] = room
        else:
            self._rooms.pop(device_id, None)

    async def on_status(self, topic: str, payload: bytes) -> None:
        """MQTT listener for ``naila/devices/+/status``."""
        if not payload:  # a cleared retained status
            return
        try:
            _, message = decode_message(topic, payload)
        except MessageError as exc:
            log.debug("room directory: status on %s dropped: %s", topic, exc)
            return
        if isinstance(message, DeviceStatus) and message.room:
            if self._rooms.get(message.device_id) != message.room:
                log.info("device %s is in room %s", message.device_id, message.room)
            self._rooms[message.device_id] = message.room
