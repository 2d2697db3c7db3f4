"""Commands to devices: publish a :class:`Command`, wait for its :class:`CommandResponse`.

The device answers on ``naila/devices/{id}/command/response`` with the command's
``request_id``; the commands and their params are the table in shared/mqtt/commands.py. Callers
get the device's ``result`` or an exception: :class:`DeviceOffline` before anything is sent when
the registry says so, :class:`CommandRefused` (a :class:`CommandFailed`) before anything is sent
when the name or params do not fit the table, :class:`CommandFailed` with the device's own error
text, :class:`CommandTimeout`, or :class:`BrokerUnavailable`.
"""

from __future__ import annotations

import asyncio
import logging

from ai_server.control.errors import CommandFailed, CommandRefused, CommandTimeout, DeviceOffline
from ai_server.control.metrics import ControlMetrics
from ai_server.control.pending import PendingReplies
from ai_server.control.registry import DeviceRegistry
from ai_server.control.wire import Publish, send
from shared.mqtt import CommandResponse, MessageError, outbound, topics
from shared.mqtt.commands import command_from
from shared.mqtt.fields import JsonDict

log = logging.getLogger(__name__)


def require_online(registry: DeviceRegistry, device_id: str) -> None:
    """Raise :class:`DeviceOffline` unless the registry has the device online."""
    record = registry.get(device_id)
    if record is None:
        raise DeviceOffline(device_id, known=False)
    if not record.online:
        raise DeviceOffline(device_id)


class Commands:
    def __init__(
        self, publish: Publish, registry: DeviceRegistry, metrics: ControlMetrics, *, default_timeout_s: float
    ) -> None:
        self._publish = publish
        self.registry = registry
        self.metrics = metrics
        self.default_timeout_s = default_timeout_s
        self.pending: PendingReplies[CommandResponse] = PendingReplies()

    async def send_command(
        self, device_id: str, command: str, params: JsonDict | None = None, timeout_s: float | None = None
    ) -> JsonDict:
        """Run ``command`` on ``device_id`` and return the device's ``result`` object."""
        require_online(self.registry, device_id)
        timeout = self.default_timeout_s if timeout_s is None else timeout_s
        try:
            message = command_from(command, params or {})
        except MessageError as exc:
            self.metrics.event("command_refused")
            raise CommandRefused(device_id, command, str(exc)) from None
        request_id = message.request_id
        reply = self.pending.expect(device_id, request_id)
        try:
            await send(self._publish, outbound(topics.device_command(device_id), message))
            log.info("command %s -> %s (request %s)", command, device_id, request_id)
            try:
                async with asyncio.timeout(timeout):
                    response = await reply
            except TimeoutError:
                self.metrics.event("command_timeout")
                raise CommandTimeout(device_id, f"command {command}", request_id, timeout) from None
        finally:
            self.pending.forget(request_id)
        if not response.ok:
            self.metrics.event("command_failed")
            raise CommandFailed(device_id, command, request_id, response.error or "no error text")
        self.metrics.event("command_ok")
        return dict(response.result)

    def on_response(self, device_id: str, response: CommandResponse) -> bool:
        """A ``command/response`` arrived; False when nobody waits for it (late or not ours)."""
        return self.pending.resolve(device_id, response.request_id, response)
