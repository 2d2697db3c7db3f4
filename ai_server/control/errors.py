"""What callers of the control plane see when a device does not do what was asked.

One base class so a caller can ``except ControlError`` once; each subclass carries the ids a
log line or an API answer needs. Messages are one line.
"""

from __future__ import annotations


class ControlError(Exception):
    """A request to a device could not be completed."""


class Rejected(Exception):
    """An inbound message (or media in it) is refused; ``reason`` is a short label counted in the
    metrics (ai_server/control/inbound.py lists them). Here, not in the MQTT gate, so the parts that
    check media raise it without importing the adapter."""

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        self.detail = " ".join(detail.splitlines())[:500]
        super().__init__(f"{reason}: {self.detail}")


class BrokerUnavailable(ControlError):
    """The AI server is not connected to the MQTT broker right now."""


class DeviceOffline(ControlError):
    """The registry says the device is offline (or has never announced itself)."""

    def __init__(self, device_id: str, *, known: bool = True) -> None:
        self.device_id = device_id
        self.known = known
        super().__init__(f"device {device_id!r} is {'offline' if known else 'unknown (no status seen)'}")


class RequestTimeout(ControlError):
    """No reply with the request's id arrived in time."""

    def __init__(self, device_id: str, what: str, request_id: str, timeout_s: float) -> None:
        self.device_id = device_id
        self.what = what
        self.request_id = request_id
        self.timeout_s = timeout_s
        super().__init__(f"{what} to {device_id!r} (request {request_id}): no reply within {timeout_s:g} s")


class CommandTimeout(RequestTimeout):
    """A command got no ``command/response`` in time."""


class SnapshotTimeout(RequestTimeout):
    """A media request got no ``media/snapshot`` / ``media/recording`` upload in time."""


class CommandFailed(ControlError):
    """The device answered the command with ``ok: false``; ``error`` is the device's own message."""

    def __init__(self, device_id: str, command: str, request_id: str, error: str) -> None:
        self.device_id = device_id
        self.command = command
        self.request_id = request_id
        self.error = error
        super().__init__(f"{command} on {device_id!r} failed: {error}")


class CommandRefused(CommandFailed):
    """The command or its params do not fit the command table (shared/mqtt/commands.py): nothing was
    sent. A :class:`CommandFailed`, so callers handle both the same way; ``request_id`` is empty."""

    def __init__(self, device_id: str, command: str, error: str) -> None:
        super().__init__(device_id, command, "", error)


class MediaRejected(ControlError):
    """Media from a device (or a client) failed the format / content / size checks."""

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(detail)
