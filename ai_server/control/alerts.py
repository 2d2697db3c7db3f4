"""Alerts (spec §5.2): one :class:`Alert` on ``naila/alerts/{zone}/{alert_type}`` and on ``naila/alerts/all``.

Both publishes are QoS 1 (the shared policy table): an alert must arrive. A snapshot given
with the alert is checked like any media and stored (source ``alert_snapshot``, with the zone
and source device) *before* the alert goes out, so ``snapshot_available: true`` is never a lie;
a snapshot that fails the checks is logged and the alert goes out without it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from ai_server.control.inbound import Rejected
from ai_server.control.media import DeviceMedia
from ai_server.control.media_check import MediaPolicy
from ai_server.control.metrics import ControlMetrics
from ai_server.control.wire import Publish, send
from ai_server.store import MediaRecord
from shared.mqtt import Alert, build, outbound, topics

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PublishedAlert:
    alert: Alert
    snapshot: MediaRecord | None


class Alerts:
    def __init__(self, publish: Publish, policy: MediaPolicy, media: DeviceMedia, metrics: ControlMetrics) -> None:
        self._publish = publish
        self.policy = policy
        self.media = media
        self.metrics = metrics

    async def publish_alert(
        self,
        alert_type: str,
        zone: str,
        confidence: float,
        source_device: str,
        snapshot_available: bool = False,
        snapshot_bytes: bytes | None = None,
        snapshot_format: str = "jpeg",
    ) -> PublishedAlert:
        """Store the snapshot (if any), then publish the alert on its zone topic and on ``alerts/all``.

        Raises ``MessageError`` for ids that cannot be topic segments (a caller bug) and
        :class:`BrokerUnavailable` when not connected.
        """
        record: MediaRecord | None = None
        if snapshot_bytes is not None:
            try:
                checked = self.policy.check("image", snapshot_format, snapshot_bytes)
                record = await self.media.store_media(
                    checked, source="alert_snapshot", device_id=source_device, zone=zone
                )
            except Rejected as exc:
                self.metrics.event("alert_snapshot_refused")
                log.warning("alert %s/%s: snapshot not stored (%s): %s", zone, alert_type, exc.reason, exc.detail)
        alert = build(
            Alert,
            alert_type=alert_type,
            zone=zone,
            confidence=confidence,
            source_device=source_device,
            # With bytes, only a stored snapshot counts; without, the caller knows (e.g. a stream recording).
            snapshot_available=record is not None if snapshot_bytes is not None else snapshot_available,
        )
        await send(self._publish, outbound(topics.alert(zone, alert_type), alert))
        await send(self._publish, outbound(topics.ALERTS_ALL, alert))
        self.metrics.event("alert_published")
        log.info(
            "alert %s in %s from %s (confidence %.2f)%s",
            alert_type,
            zone,
            source_device,
            confidence,
            f", snapshot {record.id}" if record is not None else "",
        )
        return PublishedAlert(alert, record)
