"""The AI server's MQTT control plane (spec §3.2, §5, §8.5-8.9, §9.1, §15.2).

:class:`ControlPlane` (plane.py) owns the broker link and wires the parts, one module each:
presence (server status, broadcast), registry (devices), commands, media (snapshots, clips),
uploads, chat, speech (speaking on a device through the hub), alerts; inbound.py is the gate
every message passes (rate limit, size, schema, topic agreement), sniff.py / media_check.py
check media content.
"""

from ai_server.control.alerts import PublishedAlert
from ai_server.control.errors import (
    BrokerUnavailable,
    CommandFailed,
    CommandTimeout,
    ControlError,
    DeviceOffline,
    MediaRejected,
    RequestTimeout,
    SnapshotTimeout,
)
from ai_server.control.plane import SUBSCRIPTIONS, ControlPlane
from ai_server.control.registry import DeviceRecord, DeviceRegistry
from ai_server.control.speech import SpeakError

__all__ = [
    "SUBSCRIPTIONS",
    "BrokerUnavailable",
    "CommandFailed",
    "CommandTimeout",
    "ControlError",
    "ControlPlane",
    "DeviceOffline",
    "DeviceRecord",
    "DeviceRegistry",
    "MediaRejected",
    "PublishedAlert",
    "RequestTimeout",
    "SnapshotTimeout",
    "SpeakError",
]
