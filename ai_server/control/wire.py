"""How control-plane parts publish: an injected coroutine, with broker errors made :class:`BrokerUnavailable`.

The parts (commands, media, chat, alerts...) take a ``Publish`` rather than the MQTT link so
their logic is testable without a broker and the link stays owned by the plane.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import aiomqtt

from ai_server.control.errors import BrokerUnavailable
from shared.mqtt import OutboundMessage

Publish = Callable[[OutboundMessage], Awaitable[None]]


async def send(publish: Publish, message: OutboundMessage) -> None:
    """Publish, raising :class:`BrokerUnavailable` (one line) when the broker cannot be reached."""
    try:
        await publish(message)
    except aiomqtt.MqttError as exc:
        raise BrokerUnavailable(f"cannot publish on {message.topic}: {exc}") from exc
