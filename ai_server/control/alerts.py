"""Alerts (spec §5.2): one :class:`Alert` on ``naila/alerts/{zone}/{alert_type}`` and on ``naila/alerts/all``.

Both publishes are QoS 1 (the shared policy table): an alert must arrive, whatever else fails
(finding H5):

* A snapshot given with the alert is checked like any media and stored (source ``alert_snapshot``,
  with the zone and source device) first, so ``snapshot_available: true`` is never a lie; but the
  store gets :data:`SNAPSHOT_BUDGET_S` at most. A snapshot refused by the checks, a store that fails
  (disk full, ``database is locked``) or is slow sends the alert with ``snapshot_available: false``
  (a slow store may still keep the snapshot later, unreferenced by the alert).
* A broker that is unreachable, or does not acknowledge within ``publish_timeout_s``, puts the alert
  in the durable outbox (:mod:`ai_server.control.outbox`); :meth:`Alerts.replay` sends what is owed,
  with its original time, when the link is back (the control plane calls it on every connect).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from ai_server.control.errors import BrokerUnavailable, Rejected
from ai_server.control.media import DeviceMedia
from ai_server.control.media_check import MediaPolicy
from ai_server.control.metrics import ControlMetrics
from ai_server.control.outbox import AlertOutbox
from ai_server.control.wire import Publish, send
from ai_server.store import MediaRecord
from shared.errors import one_line
from shared.mqtt import Alert, build, outbound, topics, utc_now

log = logging.getLogger(__name__)

#: The longest an alert waits for its snapshot to be stored (SQLite waits 5 s on a locked database).
SNAPSHOT_BUDGET_S: Final = 1.0


@dataclass(frozen=True, slots=True)
class PublishedAlert:
    alert: Alert
    snapshot: MediaRecord | None
    queued: bool = False  # in the outbox: the broker did not take it yet; sent on reconnect


class Alerts:
    def __init__(
        self,
        publish: Publish,
        policy: MediaPolicy,
        media: DeviceMedia,
        metrics: ControlMetrics,
        *,
        outbox: AlertOutbox | None = None,
        publish_timeout_s: float = 5.0,
        snapshot_budget_s: float = SNAPSHOT_BUDGET_S,
    ) -> None:
        self._publish = publish
        self.policy = policy
        self.media = media
        self.metrics = metrics
        self.outbox = outbox if outbox is not None else AlertOutbox(None, metrics.event)
        self.publish_timeout_s = publish_timeout_s
        self.snapshot_budget_s = snapshot_budget_s
        self._replaying = asyncio.Lock()

    async def publish_alert(
        self,
        alert_type: str,
        zone: str,
        confidence: float,
        source_device: str,
        snapshot_available: bool = False,
        snapshot_bytes: bytes | None = None,
        snapshot_format: str = "jpeg",
        *,
        time: datetime | None = None,
    ) -> PublishedAlert:
        """Store the snapshot (if any, within its budget), then publish the alert on its zone topic and on
        ``alerts/all``, or keep it in the outbox when the broker does not take it (``queued``).

        ``time``: when it happened (the frame's capture time); now when not given. Raises
        ``MessageError`` only for ids that cannot be topic segments (a caller bug).
        """
        record = await self._snapshot(zone, alert_type, source_device, snapshot_bytes, snapshot_format)
        alert = build(
            Alert,
            alert_type=alert_type,
            zone=zone,
            confidence=confidence,
            source_device=source_device,
            timestamp=time or utc_now(),
            # With bytes, only a stored snapshot counts; without, the caller knows (e.g. a stream recording).
            snapshot_available=record is not None if snapshot_bytes is not None else snapshot_available,
            snapshot_id=record.id if record is not None else None,
        )
        try:
            await self._send(alert)
        except (BrokerUnavailable, TimeoutError) as exc:
            await asyncio.to_thread(self.outbox.put, alert)
            self.metrics.event("alert_queued")
            log.warning("alert %s in %s from %s kept in the outbox, sent when the broker is back: %s", alert_type,
                        zone, source_device, one_line(exc) or "no acknowledgement in time")
            return PublishedAlert(alert, record, queued=True)
        self.metrics.event("alert_published")
        log.info("alert %s in %s from %s (confidence %.2f)%s", alert_type, zone, source_device, confidence,
                 f", snapshot {record.id}" if record is not None else "")
        return PublishedAlert(alert, record)

    def start_replay(self) -> asyncio.Task[int]:
        """:meth:`replay` in the background (the link's connect callback must not wait on it)."""
        task = asyncio.get_running_loop().create_task(self.replay(), name="alert-replay")
        task.add_done_callback(_replay_done)
        return task

    async def replay(self) -> int:
        """Send what the outbox owes, oldest first, until done or the broker fails again; returns how many went."""
        sent = 0
        async with self._replaying:  # one replay at a time: reconnects can come in quick succession
            for owed in self.outbox.pending():
                try:
                    await self._send(owed.alert)
                except (BrokerUnavailable, TimeoutError) as exc:
                    log.warning("alert outbox: replay paused, %d alert(s) still owed: %s", len(self.outbox),
                                one_line(exc) or "no acknowledgement in time")
                    break
                await asyncio.to_thread(self.outbox.done, owed.id)
                self.metrics.event("alert_replayed")
                sent += 1
                a = owed.alert
                log.info("alert %s in %s from %s of %s sent from the outbox", a.alert_type, a.zone, a.source_device,
                         a.timestamp.isoformat(timespec="seconds"))
        return sent

    async def _send(self, alert: Alert) -> None:
        async with asyncio.timeout(self.publish_timeout_s):  # a broker killed mid-publish never acknowledges
            await send(self._publish, outbound(topics.alert(alert.zone, alert.alert_type), alert))
            await send(self._publish, outbound(topics.ALERTS_ALL, alert))

    async def _snapshot(self, zone: str, alert_type: str, source_device: str, data: bytes | None,
                        fmt: str) -> MediaRecord | None:
        if data is None:
            return None
        try:
            checked = self.policy.check("image", fmt, data)
        except Rejected as exc:
            self.metrics.event("alert_snapshot_refused")
            log.warning("alert %s/%s: snapshot not stored (%s): %s", zone, alert_type, exc.reason, exc.detail)
            return None
        task = asyncio.ensure_future(
            self.media.store_media(checked, source="alert_snapshot", device_id=source_device, zone=zone))
        try:
            # shield: past the budget the alert goes without it, and the write may still finish.
            async with asyncio.timeout(self.snapshot_budget_s):  # not wait_for: see shared/aio.py
                return await asyncio.shield(task)
        except TimeoutError:
            self.metrics.event("alert_snapshot_slow")
            log.warning("alert %s/%s: storing the snapshot takes over %.1f s; the alert goes without it", zone,
                        alert_type, self.snapshot_budget_s)
            task.add_done_callback(_late_snapshot)
        except Exception as exc:  # disk full, database locked, I/O error: the alert matters more
            self.metrics.event("alert_snapshot_failed")
            log.warning("alert %s/%s: snapshot not stored, the alert goes without it: %s", zone, alert_type,
                        one_line(exc))
        return None


def _replay_done(task: asyncio.Task[int]) -> None:
    if not task.cancelled() and (exc := task.exception()) is not None:  # a bug: what is owed stays owed
        log.error("alert outbox: replay failed: %s", one_line(exc))


def _late_snapshot(task: asyncio.Future[MediaRecord]) -> None:
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None:
        log.warning("a late alert snapshot was not stored either: %s", one_line(exc))
    else:
        log.info("a late alert snapshot was stored as %s (not referenced by its alert)", task.result().id)
