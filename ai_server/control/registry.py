"""Which devices exist, where they are and whether they are online, from ``naila/devices/+/status``.

The broker keeps each device's last status (retained), so subscribing replays the whole fleet
at once; a device that dies without saying goodbye gets its retained last will (``online:
false``) published by the broker (spec §3.2, §9.3). An empty retained payload means someone
cleared the device's status: it is forgotten.

``last_seen`` is when the AI server last heard the device online, on the server's clock (device
clocks drift, and a last will's timestamp is the moment it was *registered*, not when the device
died). A device only ever seen offline keeps the timestamp of that status.

Stale is offline (finding M7): a device says it is online every heartbeat (DEVICE_HEARTBEAT_S).
One not heard from for ``stale_after_s`` (3 heartbeats) is offline for everyone who asks (GetStatus,
speaking, commands, source selection), though no will said so: the broker may have restarted and
lost the will, or replayed an old retained "online". Its next status brings it back.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from ai_server.control.metrics import ControlMetrics
from shared.contract import pb
from shared.mqtt import DeviceStatus, utc_now
from shared.timestamps import utc_iso

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class DeviceRecord:
    """What the registry knows about one device."""

    device_id: str
    online: bool
    capabilities: tuple[str, ...]
    firmware_version: str
    room: str | None
    zone: str | None
    last_seen: datetime
    changed_at: datetime  # when ``online`` last changed (server clock)

    def info(self) -> pb.DeviceInfo:
        return pb.DeviceInfo(
            device_id=self.device_id,
            online=self.online,
            room=self.room or "",
            zone=self.zone or "",
            capabilities=list(self.capabilities),
            last_seen=utc_iso(self.last_seen),
        )


class DeviceRegistry:
    def __init__(self, metrics: ControlMetrics, *, clock: Callable[[], datetime] = utc_now,
                 stale_after_s: float = 0.0) -> None:
        self.metrics = metrics
        self._clock = clock
        self.stale_after = timedelta(seconds=stale_after_s)  # 0: never stale
        self._devices: dict[str, DeviceRecord] = {}

    def update(self, status: DeviceStatus) -> DeviceRecord:
        """Apply a status message; logs and counts an online/offline transition."""
        now = self._clock()
        before = self._devices.get(status.device_id)
        last_seen = now
        if not status.online:
            last_seen = before.last_seen if before is not None else status.timestamp
        changed = before is None or before.online != status.online
        record = DeviceRecord(
            device_id=status.device_id,
            online=status.online,
            capabilities=tuple(status.capabilities),
            firmware_version=status.firmware_version,
            room=status.room,
            zone=status.zone,
            last_seen=last_seen,
            changed_at=now if changed or before is None else before.changed_at,
        )
        self._devices[status.device_id] = record
        if changed:
            self.metrics.event("device_online" if status.online else "device_offline")
            self._refresh_gauge()
            where = f" in {status.room}" if status.room else ""
            if status.online:
                log.info(
                    "device %s%s is online (%s, firmware %s)",
                    status.device_id,
                    where,
                    ",".join(status.capabilities) or "no capabilities",
                    status.firmware_version,
                )
            else:
                log.info(
                    "device %s%s is offline%s",
                    status.device_id,
                    where,
                    "" if before is None else f" (last seen {utc_iso(record.last_seen)})",
                )
        return record

    def forget(self, device_id: str) -> None:
        """The device's retained status was cleared: it no longer exists for us."""
        if self._devices.pop(device_id, None) is not None:
            log.info("device %s removed (its retained status was cleared)", device_id)
            self.metrics.event("device_removed")
            self._refresh_gauge()

    def get(self, device_id: str) -> DeviceRecord | None:
        record = self._devices.get(device_id)
        return None if record is None else self._fresh(record)

    def devices(self) -> list[DeviceRecord]:
        return [self._fresh(self._devices[k]) for k in sorted(self._devices)]

    def _fresh(self, record: DeviceRecord) -> DeviceRecord:
        """``record``, turned offline (once: logged and counted) when it has gone stale."""
        if not record.online or not self.stale_after:
            return record
        now = self._clock()
        if now - record.last_seen <= self.stale_after:
            return record
        stale = replace(record, online=False, changed_at=now)
        self._devices[record.device_id] = stale
        self.metrics.event("device_stale")
        self._refresh_gauge()
        log.info("device %s is offline: not heard from since %s (%.0f s, over 3 heartbeats)", record.device_id,
                 utc_iso(record.last_seen), (now - record.last_seen).total_seconds())
        return stale

    def in_room(self, room: str) -> list[DeviceRecord]:
        return [d for d in self.devices() if d.room == room]

    def device_infos(self) -> list[pb.DeviceInfo]:
        return [d.info() for d in self.devices()]

    def touch(self, device_id: str) -> None:
        """The device just sent something else (a reply, a clip): it was alive now."""
        record = self._devices.get(device_id)
        if record is not None and record.online:
            self._devices[device_id] = replace(record, last_seen=self._clock())

    def _refresh_gauge(self) -> None:
        self.metrics.devices_online.set(sum(1 for d in self._devices.values() if d.online))
