"""The dashboard's device controls: camera / microphone privacy, mute and listening mode, as MQTT commands.

A control on the page becomes the same :class:`shared.mqtt.Command` the AI server sends when
someone asks by voice (built from the table in shared/mqtt/commands.py; device_agent/commands.py
serves both), published by the hub's MQTT link on ``naila/devices/{id}/command`` (the broker ACL
lets the hub write there). The hub answers as soon
as the command is published; the page changes its state only when the device's retained status
says so (``camera_enabled``, ``microphone_enabled``, ``listening_mode``), so what it shows is what
the device did.

Only the commands below, with exactly their parameters (the command table's models in
shared/mqtt/commands.py), are accepted: the page is not a general MQTT client. The
``listening_mode`` command (``{"mode": "wake_word"|"always"|"push_to_talk"}``) is kept by the
device and reported in its status, which the hub's listening modes follow.
"""

from __future__ import annotations

import logging
import secrets

from aiomqtt import MqttError

from hub.web.upload import Publisher
from shared.mqtt import MessageError, outbound, topics
from shared.mqtt.commands import COMMANDS, command_from, validate_params

log = logging.getLogger("naila.hub.web.controls")

# The commands the page may send (params: shared/mqtt/commands.py's table).
CONTROLS = ("camera", "microphone", "mute", "listening_mode")


class ControlError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def parse_control(body: object) -> tuple[str, dict[str, object]]:
    """``{"command": "camera", "enabled": false}`` -> ("camera", {"enabled": False}); ControlError if not one."""
    if not isinstance(body, dict):
        raise ControlError(400, "body must be a JSON object")
    command = body.get("command")
    if not isinstance(command, str) or command not in CONTROLS:
        raise ControlError(400, f"command must be one of {', '.join(sorted(CONTROLS))}")
    params = {key: value for key, value in body.items() if key != "command"}
    try:
        checked = validate_params(COMMANDS[command], params)
    except MessageError as err:  # e.g. "camera: parameter 'enabled' must be bool (true or false), got str"
        raise ControlError(400, str(err)) from None
    wire: dict[str, object] = checked.model_dump(mode="json")
    return command, wire


async def send_control(mqtt: Publisher | None, device_id: str, command: str, params: dict[str, object]) -> str:
    """Publish the command to the device; its request_id. ControlError when MQTT cannot take it."""
    if mqtt is None:
        raise ControlError(503, "the hub has no MQTT link (HUB_MQTT=false): device controls need it")
    if not mqtt.connected:
        raise ControlError(503, "the hub's MQTT link is down; try again shortly")
    request_id = f"web-{secrets.token_hex(6)}"
    try:
        msg = command_from(command, params, request_id=request_id)
        await mqtt.publish(outbound(topics.device_command(device_id), msg))
    except MessageError as err:  # a device id the topic tree refuses (checked before, so a bug)
        raise ControlError(400, str(err)) from err
    except MqttError as err:
        raise ControlError(503, f"the command could not be published: {err}") from err
    log.info("web control: %s %s %s (request %s)", device_id, command, params, request_id)
    return request_id
