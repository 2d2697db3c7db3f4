"""The AI server's own presence on the broker, and broadcasts to every device.

``naila/server/status`` is retained: ``online: true`` is published on every (re)connect (the
broker may have published the will while we were away), the registered last will is the same
message with ``online: false``, and a clean stop publishes that itself (a clean disconnect
suppresses the will).
"""

from __future__ import annotations

from ai_server.control.wire import Publish, send
from shared.mqtt import Broadcast, OutboundMessage, ServerStatus, build, outbound, server_last_will, topics
from shared.version import naila_version


def will_message(version: str) -> OutboundMessage:
    """The last will registered with the broker: ``online: false`` for this version (needed before the link
    that Presence publishes through exists)."""
    will = server_last_will(version)
    return OutboundMessage(will.topic, will.payload, will.qos, will.retain)


class Presence:
    def __init__(self, publish: Publish, version: str | None = None) -> None:
        self._publish = publish
        self.version = version or naila_version()

    def will(self) -> OutboundMessage:
        """Register with the broker at connect: what others see if the server dies."""
        return will_message(self.version)

    def status(self, online: bool) -> OutboundMessage:
        return outbound(topics.SERVER_STATUS, build(ServerStatus, online=online, version=self.version))

    async def announce(self) -> None:
        """Retained ``online: true`` (called after every connect)."""
        await send(self._publish, self.status(online=True))

    async def broadcast(self, message: str, room: str | None = None) -> Broadcast:
        """Something for every device to say (or only the devices of ``room``)."""
        payload = build(Broadcast, message=message, room=room)
        await send(self._publish, outbound(topics.SERVER_BROADCAST, payload))
        return payload
