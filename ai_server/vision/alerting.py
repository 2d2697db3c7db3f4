"""When a tracked object becomes an alert, and getting it out (MQTT) and into the event history.

The rules (:class:`AlertPolicy`, pure and on an injected clock, so tests drive them directly):

1. Only labels in ``VISION_ALERT_LABELS`` alert.
2. An object alerts when it *enters* a zone (after the zone inertia, :mod:`ai_server.vision.zones`),
   once per track, zone and alert type: a car parked in the driveway is one track for as long as it
   stays, so it never alerts again; leaving and coming back within the same track does not either.
   (A track whose label settles on another class, e.g. a person's "Normal" turning into "Fall",
   does alert for the new type: that is news.)
3. De-duplication per ``(zone, alert_type)``: after an alert, the same pair does not alert again for
   ``dedup_s`` (VISION_ALERT_DEDUP_S), whichever camera or track it comes from.
4. Overlapping cameras (VISION_CAMERAS, same ``overlap`` group) see the same place; the alert
   should come from the best of them (spec §7.3: front door > backyard). An entry from a camera
   that has an online higher-priority partner therefore waits ``hold_s`` for that camera's own
   entry; if it comes, the partner's alert goes out and the waiting one is recorded as ``overlap``;
   if not (the partner's view is blocked), the waiting one goes out when the hold ends.

Every entry ends up as one row of the event history (:mod:`ai_server.store.events`), with the
outcome. :class:`AlertDispatcher` does the slow part off the frame path, one entry at a time in
order: the snapshot and the MQTT alert through :meth:`ControlPlane.publish_alert`, or, with the
control plane off, the snapshot stored here and the alert only recorded.

Nothing decided is lost (finding H5): the control plane publishes even when the snapshot cannot be
stored, and keeps what the broker does not take in its durable outbox (outcome ``queued``, sent
with its original time on reconnect). The track's "announced" mark and the de-duplication window
are set when the alert is decided; should handing it over fail all the same (a bug), they are
re-armed (:meth:`AlertPolicy.rearm`), so the next frame of that object alerts again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Final, Literal, Protocol

from ai_server.store import EventOutcome, MediaRecord, MediaStore
from ai_server.vision.metrics import VisionMetrics
from ai_server.vision.zones import safe_name

if TYPE_CHECKING:  # the control plane (aiomqtt, ...) is not needed to decide or record alerts
    from ai_server.control.alerts import PublishedAlert

log = logging.getLogger(__name__)

_MAX_QUEUED: Final = 1000  # decisions waiting for the dispatcher; beyond this something is badly stuck


def alert_type_for(label: str) -> str:
    """``person`` -> ``person_detected`` (spec §5.2), as a safe topic segment."""
    return safe_name(f"{label}_detected", "object_detected")


class AlertSink(Protocol):
    """Where alerts are published: :meth:`ai_server.control.plane.ControlPlane.publish_alert`."""

    async def publish_alert(
        self,
        alert_type: str,
        zone: str,
        confidence: float,
        source_device: str,
        snapshot_available: bool = False,
        snapshot_bytes: bytes | None = None,
        *,
        time: datetime | None = None,
    ) -> PublishedAlert:
        """Published, or kept in the outbox (``queued``); raises only on a bug."""
        ...


@dataclass(frozen=True, slots=True)
class CameraRank:
    """What the rules need to know of a camera (from VISION_CAMERAS)."""

    priority: int = 0
    overlap: str | None = None


@dataclass(frozen=True, slots=True)
class ZoneEntry:
    """A tracked object entered a zone: an alert-worthy event."""

    device_id: str
    zone: str
    label: str
    alert_type: str
    confidence: float
    track_id: int
    at: float  # pipeline clock
    time: datetime  # UTC capture time of the frame
    jpeg: bytes = field(repr=False)  # the frame: the alert's snapshot
    box: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)  # x, y, w, h in the frame's pixels
    frame_size: tuple[int, int] = (0, 0)  # width, height of the frame the box is in

    def snapshot_analysis(self) -> dict[str, object]:
        """What the dashboard draws over the snapshot (ai_server/household.py reads it back)."""
        return {"width": self.frame_size[0], "height": self.frame_size[1], "detections": [{
            "label": self.label, "confidence": round(self.confidence, 3), "box": [round(v, 1) for v in self.box],
            "track_id": self.track_id, "zone": self.zone}]}


Verdict = Literal["alert", "duplicate", "overlap"]


@dataclass(frozen=True, slots=True)
class Decision:
    entry: ZoneEntry
    verdict: Verdict


@dataclass(slots=True)
class _Held:
    due: float
    priority: int
    entry: ZoneEntry


class AlertPolicy:
    """The rules of the module doc. ``observe`` per tracked object and frame, ``decide`` to collect verdicts."""

    def __init__(
        self,
        *,
        labels: Iterable[str],
        dedup_s: float,
        hold_s: float = 0.0,
        cameras: Mapping[str, CameraRank] | None = None,
        online: Callable[[str], bool] = lambda _device: True,
    ) -> None:
        self.labels = {label.lower() for label in labels}
        self.dedup_s = dedup_s
        self.hold_s = hold_s
        self.cameras = dict(cameras or {})
        self.online = online
        self._announced: dict[tuple[str, int], set[tuple[str, str]]] = {}  # (device, track) -> {(zone, type)}
        self._last: dict[tuple[str, str], tuple[float, str]] = {}  # (zone, type) -> (when, device) of last alert
        self._held: list[_Held] = []

    def rank(self, device_id: str) -> CameraRank:
        return self.cameras.get(device_id, CameraRank())

    def alerts_on(self, label: str) -> bool:
        return label.lower() in self.labels

    def observe(
        self,
        device_id: str,
        track_id: int,
        label: str,
        confidence: float,
        zones: Iterable[str],
        *,
        now: float,
        time: datetime,
        jpeg: bytes,
        box: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0),
        frame_size: tuple[int, int] = (0, 0),
    ) -> list[ZoneEntry]:
        """A tracked object is in ``zones`` (after inertia) in this frame; returns (and holds) its new entries."""
        if not self.alerts_on(label):
            return []
        alert_type = alert_type_for(label)
        announced = self._announced.setdefault((device_id, track_id), set())
        entries: list[ZoneEntry] = []
        for zone in zones:
            if (zone, alert_type) in announced:
                continue  # rule 2: this object already alerted here (a parked car, someone lingering)
            announced.add((zone, alert_type))
            entry = ZoneEntry(device_id, zone, label, alert_type, confidence, track_id, now, time, jpeg, box,
                              frame_size)
            entries.append(entry)
            rank = self.rank(device_id)
            self._held.append(_Held(now + self._hold_for(device_id, rank), rank.priority, entry))
        return entries

    def rearm(self, entry: ZoneEntry) -> None:
        """Handing ``entry``'s alert over failed: this object may alert again here, and the zone's
        de-duplication window it opened is closed."""
        announced = self._announced.get((entry.device_id, entry.track_id))
        if announced is not None:
            announced.discard((entry.zone, entry.alert_type))
        key = (entry.zone, entry.alert_type)
        if self._last.get(key) == (entry.at, entry.device_id):
            del self._last[key]

    def forget_track(self, device_id: str, track_id: int) -> None:
        """The track ended: its memory goes (a new track of the same place is a new object)."""
        self._announced.pop((device_id, track_id), None)

    def decide(self, now: float) -> list[Decision]:
        """Verdicts for the entries whose hold is over, best camera first among those due together."""
        due = [h for h in self._held if h.due <= now]
        if not due:
            return []
        self._held = [h for h in self._held if h.due > now]
        due.sort(key=lambda h: (h.due, -h.priority, h.entry.at))
        decisions: list[Decision] = []
        for held in due:
            entry = held.entry
            key = (entry.zone, entry.alert_type)
            last = self._last.get(key)
            if last is not None and entry.at - last[0] < self.dedup_s:
                same_group = last[1] != entry.device_id and self._overlapping(last[1], entry.device_id)
                decisions.append(Decision(entry, "overlap" if same_group else "duplicate"))
                continue
            self._last[key] = (entry.at, entry.device_id)
            decisions.append(Decision(entry, "alert"))
        return decisions

    @property
    def next_due(self) -> float | None:
        return min((h.due for h in self._held), default=None)

    def _overlapping(self, a: str, b: str) -> bool:
        group = self.rank(a).overlap
        return group is not None and group == self.rank(b).overlap

    def _hold_for(self, device_id: str, rank: CameraRank) -> float:
        if rank.overlap is None or self.hold_s <= 0:
            return 0.0
        better = [d for d, r in self.cameras.items()
                  if d != device_id and r.overlap == rank.overlap and r.priority > rank.priority]
        return self.hold_s if any(self.online(d) for d in better) else 0.0


class AlertDispatcher:
    """Publishes and records decisions in order, in the background; see the module doc."""

    def __init__(
        self,
        store: Callable[[], MediaStore],
        metrics: VisionMetrics,
        sink: AlertSink | None = None,
        rearm: Callable[[ZoneEntry], None] = lambda _entry: None,
    ) -> None:
        self._store = store
        self.metrics = metrics
        self.sink = sink
        self.rearm = rearm  # AlertPolicy.rearm: an alert not handed over may be decided again
        self._queue: asyncio.Queue[Decision] = asyncio.Queue(_MAX_QUEUED)
        self._task: asyncio.Task[None] | None = None

    def submit(self, decisions: Iterable[Decision]) -> None:
        for decision in decisions:
            try:
                self._queue.put_nowait(decision)
            except asyncio.QueueFull:
                self.metrics.event("alert_dropped")
                log.error("vision: alert queue full, %s in %s from %s dropped", decision.entry.alert_type,
                          decision.entry.zone, decision.entry.device_id)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="vision-alerts")

    async def drain(self) -> None:
        """Wait until every submitted decision is published and recorded."""
        await self._queue.join()

    async def close(self) -> None:
        """Finish what is queued (an alert decided is an alert owed), then stop."""
        if self._task is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(10.0):  # not wait_for: see shared/aio.py
                    await self._queue.join()
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            decision = await self._queue.get()
            try:
                await self._handle(decision)
            except Exception:  # a bug or a broken disk: log it, keep serving later alerts
                self.metrics.event("event_record_failed")
                log.exception("vision: handling the %s alert of %s failed", decision.entry.alert_type,
                              decision.entry.device_id)
            finally:
                self._queue.task_done()

    async def _handle(self, decision: Decision) -> None:
        entry = decision.entry
        snapshot: MediaRecord | None = None
        outcome: EventOutcome
        if decision.verdict != "alert":
            outcome = decision.verdict
        elif self.sink is not None:
            try:
                published = await self.sink.publish_alert(
                    entry.alert_type, entry.zone, entry.confidence, entry.device_id, snapshot_bytes=entry.jpeg,
                    time=entry.time,
                )
                snapshot, outcome = published.snapshot, "queued" if published.queued else "alerted"
            except Exception as exc:  # a bug: in the history, and the object may alert again
                self.rearm(entry)
                log.error("vision: alert %s in %s from %s not handed over (re-armed): %s", entry.alert_type,
                          entry.zone, entry.device_id, exc)
                outcome = "unpublished"
        else:
            snapshot, outcome = await self._store_snapshot(entry), "recorded"
        self.metrics.event(f"alert_{outcome}")
        store = self._store()
        if snapshot is not None:
            await self._note_boxes(store, snapshot, entry)
        await asyncio.to_thread(
            store.events.add,
            time=entry.time, device_id=entry.device_id, zone=entry.zone, alert_type=entry.alert_type,
            label=entry.label, confidence=entry.confidence, track_id=entry.track_id, outcome=outcome,
            media_id=None if snapshot is None else snapshot.id, snapshot=None if snapshot is None else snapshot.path,
        )
        if outcome == "recorded":
            log.info("vision: %s in %s from %s (track %d, %.2f), recorded (MQTT off)", entry.alert_type, entry.zone,
                     entry.device_id, entry.track_id, entry.confidence)
        elif outcome not in ("alerted", "queued"):
            log.debug("vision: %s in %s from %s (track %d): %s", entry.alert_type, entry.zone, entry.device_id,
                      entry.track_id, outcome)

    async def _note_boxes(self, store: MediaStore, snapshot: MediaRecord, entry: ZoneEntry) -> None:
        """The box and label of what alerted, kept with its snapshot (the dashboard draws them over it)."""
        try:
            await asyncio.to_thread(store.set_analysis, snapshot.id,
                                    {**(snapshot.analysis or {}), "alert": entry.snapshot_analysis()})
        except Exception as exc:  # the event and its snapshot matter more than the drawing
            self.metrics.event("snapshot_boxes_failed")
            log.warning("vision: the box of snapshot %s not kept: %s", snapshot.id, exc)

    async def _store_snapshot(self, entry: ZoneEntry) -> MediaRecord | None:
        store = self._store()
        try:
            return await asyncio.to_thread(
                store.add, entry.jpeg, source="alert_snapshot", media_type="image", format="jpeg",
                device_id=entry.device_id, zone=entry.zone, time=entry.time,
            )
        except Exception as exc:  # disk full, database locked: the event is still recorded, without it
            self.metrics.event("snapshot_store_failed")
            log.warning("vision: snapshot of %s in %s not stored: %s", entry.alert_type, entry.zone, exc)
            return None
