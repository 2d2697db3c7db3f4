"""Timers and reminders that outlive their AI server: replicated through retained MQTT messages (issue 21).

Each AI server keeps the alarms it owns in its own SQLite store (ai_server/store/timers.py) and runs
them; the broker, the one thing every AI server already shares, holds a copy of each:

* ``naila/servers/{server_id}/status`` (retained :class:`~shared.mqtt.ServerPresence`): ``online``
  at every connect of this server's *alarm link*, and its last will ``online: false``. The alarm
  link is a second MQTT connection because a connection has one will and the control plane's is
  the spec's ``naila/server/status``; it has its own keep-alive (AI_ALARMS_KEEPALIVE_S) so the
  broker notices a dead server within 1.5 times it.
* ``naila/alarms/{server_id}/{alarm_id}`` (retained :class:`~shared.mqtt.AlarmRecord`): every timer
  and reminder the server owns, with its absolute due time; an empty retained message removes it
  (it fell due and rang, was cancelled, or another server adopted it).

The servers of one AI_MQTT_SHARE_GROUP (those that share the requests; the presence says the group)
replicate among themselves: another group on the same broker is left alone.
Every server subscribes to both and keeps a mirror of the others' alarms (:class:`AlarmMirror`), so
"how long is left on my timer" and "cancel my timer" find them wherever asked; cancelling one clears
its record and its owner, subscribed, drops it. When an owner goes offline (its will, or a clean
goodbye) the servers still online agree without talking which of them adopts each of its alarms:
the highest rendezvous weight of ``(server_id, alarm_id)`` among the live servers (as hub/ai_pool.py
spreads devices). The adopter takes the alarm into its own store and schedules it (one already due
rings at once when at most ASSIST_TIMER_MISSED_S late, as a restart does), publishes it under its
own id, then clears the dead owner's record.

Coming back: a server's own "online" (with this run's ``session``) comes back to it after every
retained message that was there when it subscribed (the broker queues those first), so it is the
point where the server knows the broker's state. Only then does it restore its store (at start) or
reconcile (after a reconnect): an alarm whose record is gone (cancelled elsewhere, or adopted and
rung) or that another server now holds is dropped without ringing; the rest is published again.
If the broker cannot be reached the store is restored anyway after :data:`RESTORE_WAIT_S`, so a
single server without its broker rings as before. What can still go wrong: docs/scale.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
import socket
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Final

import aiomqtt

from ai_server.assist.alarms import REMINDER_RING, AlarmKind, Alarms
from ai_server.assist.clock import Clock
from ai_server.assist.reminders import Reminder
from ai_server.assist.timers import Timer
from ai_server.store.timers import ReminderRow, TimerRow
from shared.errors import one_line
from shared.mqtt import (
    AlarmRecord,
    MessageError,
    OutboundMessage,
    ServerPresence,
    TopicKind,
    build,
    check_consistent,
    decode,
    outbound,
    parse_topic,
    topics,
)
from shared.mqtt_link import MqttLink
from shared.rate_limit import RateLimiter

if TYPE_CHECKING:
    from shared.config import AIServerSettings, MqttSettings

log = logging.getLogger(__name__)

#: How long a starting server waits for the broker's state before it restores its store anyway.
RESTORE_WAIT_S: Final = 10.0

Publish = Callable[[OutboundMessage], Awaitable[None]]
Clear = Callable[[str], Awaitable[None]]  # an empty retained message on this topic
Count = Callable[[str], None]


def weight(server_id: str, alarm_id: str) -> int:
    """The rendezvous weight of an alarm on a server: the same on every server, every run."""
    digest = hashlib.blake2b(f"{server_id}\0{alarm_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def adopter(servers: Sequence[str], alarm_id: str) -> str:
    """Which of ``servers`` takes ``alarm_id`` over (the highest weight)."""
    return max(servers, key=lambda s: weight(s, alarm_id))


def server_id_of(settings: AIServerSettings) -> str:
    """AI_SERVER_ID, else AI_MQTT_CLIENT_ID, else the host name: stable across restarts (it names
    what the server owns), made a topic segment."""
    raw = settings.ai_server_id or settings.ai_mqtt_client_id or socket.gethostname()
    return re.sub(r"[^A-Za-z0-9_.-]", "-", raw)[:64].strip(".") or "ai-server"


def presence(server_id: str, session: str, version: str, *, online: bool, group: str = "") -> OutboundMessage:
    """This server's retained presence (``online=False``: its last will and goodbye)."""
    message = build(ServerPresence, server_id=server_id, online=online, session=session, version=version, group=group)
    return outbound(topics.server_presence(server_id), message)


def alarm_link(
    mqtt: MqttSettings,
    settings: AIServerSettings,
    server_id: str,
    session: str,
    version: str,
    replica: Callable[[], AlarmReplica],
) -> MqttLink:
    """The alarm link: its own connection (one will each), keep-alive AI_ALARMS_KEEPALIVE_S, a clean
    session (the retained messages are the state; nothing queued while away matters)."""
    return MqttLink(
        mqtt.model_copy(update={"mqtt_keepalive_s": settings.ai_alarms_keepalive_s}),
        client_id=f"naila-alarms-{server_id}",
        subscriptions=(topics.ALL_SERVER_PRESENCE, topics.ALL_ALARMS),
        on_message=lambda topic, payload: replica().on_message(topic, payload),
        on_connect=lambda link: replica().on_connect(),
        will=presence(server_id, session, version, online=False, group=settings.ai_mqtt_share_group),
    )


class AlarmMirror:
    """The other AI servers' timers and reminders as the broker holds them (the RemoteAlarms of
    :class:`~ai_server.assist.alarms.Alarms`); kept by :class:`AlarmReplica`."""

    def __init__(self, clear: Clear, count: Count, group: str = "") -> None:
        self.records: dict[str, AlarmRecord] = {}  # alarm id -> the record of the server that owns it
        self.group = group  # ours (AI_MQTT_SHARE_GROUP)
        self.groups: dict[str, str] = {}  # server id -> its group, from its presence
        self._clear = clear
        self._count = count
        self._tasks: set[asyncio.Task[None]] = set()

    def ours(self, server_id: str) -> bool:
        """The server is one of our group's (its presence said so)."""
        return self.groups.get(server_id) == self.group

    def held(self) -> list[AlarmRecord]:
        """The records of our group's servers."""
        return [r for r in self.records.values() if self.ours(r.server_id)]

    def timers(self) -> list[Timer]:
        return [
            Timer(
                r.alarm_id,
                r.asker,
                r.room,
                r.label,
                r.set_s or r.duration_s,
                r.duration_s,
                r.due,
                r.left_s,
                r.created,
                owner=r.server_id,
            )
            for r in self.held()
            if r.kind == "timer" and not r.ringing
        ]

    def reminders(self) -> list[Reminder]:
        return [
            Reminder(r.alarm_id, r.asker, r.room, r.label, r.due, r.created, owner=r.server_id)
            for r in self.held()
            if r.kind == "reminder" and r.due is not None and not r.ringing
        ]

    def kind_of(self, alarm_id: str) -> AlarmKind | None:
        record = self.records.get(alarm_id)
        return None if record is None or not self.ours(record.server_id) else record.kind

    def cancel(self, alarm_id: str) -> bool:
        """Clear another server's alarm: its owner sees its record cleared and drops it."""
        record = self.records.get(alarm_id)
        if record is None or not self.ours(record.server_id):
            return False
        del self.records[alarm_id]
        self._count("alarms_cancelled_remote")
        log.info(
            "%s %s of %s cancelled here: clearing it on its owner %s",
            record.kind,
            alarm_id,
            record.asker,
            record.server_id,
        )
        task = asyncio.get_running_loop().create_task(self._send_clear(record), name=f"alarm-clear-{alarm_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    def stop_ringing(self, device: str | None, room: str | None) -> list[str]:
        hit = [
            r.alarm_id
            for r in self.held()
            if r.ringing and ((device and r.asker == device) or (room and r.room and r.room == room))
        ]
        return [alarm_id for alarm_id in hit if self.cancel(alarm_id)]

    async def _send_clear(self, record: AlarmRecord) -> None:
        try:
            await self._clear(topics.alarm(record.server_id, record.alarm_id))
        except (aiomqtt.MqttError, TimeoutError) as exc:
            self._count("alarm_publish_failed")
            log.warning(
                "could not clear %s %s on its owner %s: %s",
                record.kind,
                record.alarm_id,
                record.server_id,
                one_line(exc),
            )


class AlarmReplica:
    """This server's side of the replication; see the module doc. Fed by the alarm link's callbacks."""

    def __init__(
        self,
        server_id: str,
        session: str,
        version: str,
        alarms: Alarms,
        mirror: AlarmMirror,
        *,
        publish: Publish,
        clear: Clear,
        clock: Clock,
        count: Count,
    ) -> None:
        self.server_id = server_id
        self.session = session
        self.version = version
        self.alarms = alarms
        self.mirror = mirror
        self._publish = publish
        self._clear = clear
        self.clock = clock
        self._count = count
        self.presence: dict[str, bool] = {}  # the other servers of our group: online?
        self.published: dict[str, AlarmRecord] = {}  # our alarms as we last put them on the broker
        self._seen_own: dict[str, AlarmRecord] = {}  # our records the broker held at this connect
        self._unconfirmed: set[str] = set()  # restored while the broker was away: checked at the first sync
        # Our earlier presence (a previous start's, or this one's will/goodbye) was retained at this
        # connect: the broker kept its state, so a record of ours it lacks was really cleared. A broker
        # restarted without its persistence (or crashed within its autosave interval) has none, and
        # then a missing record means nothing: the alarm is kept and published again.
        self._broker_remembers = False
        self.synced = False  # the broker's state is known since the last connect
        self.restored = False  # the store was restored
        self._lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self._bad_logs = RateLimiter(0.1, 5)

    # ---- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Publish every change of our alarms, and restore the store after RESTORE_WAIT_S if the broker is away."""
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._follow_changes(), name="alarm-replica"),
            loop.create_task(self._restore_anyway(), name="alarm-restore"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def goodbye(self) -> OutboundMessage:
        return presence(self.server_id, self.session, self.version, online=False, group=self.mirror.group)

    async def _follow_changes(self) -> None:
        seen = self.alarms.changes.version
        while True:
            seen = await self.alarms.changes.wait(seen)
            await self.sync()

    async def _restore_anyway(self) -> None:
        await self.clock.sleep(RESTORE_WAIT_S)
        if not self.restored:
            log.warning(
                "alarms: the broker's copy was not reached within %.0f s: restoring the store without it",
                RESTORE_WAIT_S,
            )
            self._restore(reconcile=False)

    def _restore(self, *, reconcile: bool) -> None:
        """Restore the store; with ``reconcile``, first drop what the broker says is gone or elsewhere."""
        self.restored = True
        store = self.alarms.timers.store
        if reconcile and store is not None:
            for row in store.timers():
                if self._gone(row.id):
                    store.delete_timer(row.id)
            for reminder in store.reminders():
                if self._gone(reminder.id):
                    store.delete_reminder(reminder.id)
        self.alarms.timers.restore()
        self.alarms.reminders.restore()
        if not reconcile:
            self._unconfirmed = {*self.alarms.timers.timers, *self.alarms.reminders.reminders}
        self.alarms.changes()

    def _gone(self, alarm_id: str) -> bool:
        """Our alarm must not ring here: another server holds it, or its record was cleared while we were away."""
        if self.mirror.kind_of(alarm_id) is not None:
            why = f"server {self.mirror.records[alarm_id].server_id} has it now"
        elif alarm_id not in self._seen_own and self._broker_remembers:
            why = "its record was cleared (cancelled or rung elsewhere)"
        else:
            return False
        self._count("alarms_dropped_on_return")
        log.info("alarm %s dropped without ringing: %s", alarm_id, why)
        return True

    # ---- the link's callbacks ----------------------------------------------------------------

    async def on_connect(self) -> None:
        self.synced = False
        self._seen_own = {}
        self._broker_remembers = False
        # The marker: when this comes back, every retained message of our subscriptions has arrived.
        await self._send(presence(self.server_id, self.session, self.version, online=True, group=self.mirror.group))

    async def on_message(self, topic: str, payload: bytes) -> None:
        try:
            parsed = parse_topic(topic)
            assert parsed.server_id is not None
            if parsed.kind is TopicKind.SERVER_PRESENCE:
                await self._on_presence(parsed.server_id, payload, topic)
            elif parsed.kind is TopicKind.ALARM:
                assert parsed.alarm_id is not None
                await self._on_alarm(parsed.server_id, parsed.alarm_id, payload, topic)
        except MessageError as exc:
            self._count("alarm_messages_refused")
            if self._bad_logs.allow("bad"):
                log.warning("alarm replica: refused a message on %.200s: %s", topic, one_line(exc, with_type=False))

    async def _on_presence(self, server: str, payload: bytes, topic: str) -> None:
        if server == self.server_id:
            if payload.strip():
                message = decode(ServerPresence, payload)
                check_consistent(parse_topic(topic), message)
                if not self.synced and (message.session != self.session or not message.online):
                    self._broker_remembers = True  # a retained presence of ours from before this connect
                if message.online and message.session == self.session and not self.synced:
                    await self._synced()
                elif message.online and message.session != self.session and self.synced:
                    self._count("alarm_server_id_clash")
                    log.error(
                        "another AI server announced itself as %s: give each server its own AI_SERVER_ID "
                        "(docs/scale.md); their timers will be confused",
                        self.server_id,
                    )
            return
        if not payload.strip():  # a decommissioned server: its alarms are no longer anyone's to adopt
            self.presence.pop(server, None)
            self.mirror.groups.pop(server, None)
        else:
            message = decode(ServerPresence, payload)
            check_consistent(parse_topic(topic), message)
            self.mirror.groups[server] = message.group
            if message.group != self.mirror.group:  # another household (or test) on the same broker
                self.presence.pop(server, None)
                return
            was = self.presence.get(server)
            self.presence[server] = message.online
            if was != message.online:
                log.info("alarm replica: server %s is %s", server, "online" if message.online else "offline")
        if self.synced:
            await self._take_over()

    async def _on_alarm(self, server: str, alarm_id: str, payload: bytes, topic: str) -> None:
        if not payload.strip():  # cleared
            if server == self.server_id and not self.synced:
                self._seen_own.pop(alarm_id, None)  # cleared by another server while we take stock
            elif server != self.server_id:
                record = self.mirror.records.get(alarm_id)
                if record is not None and record.server_id == server:
                    del self.mirror.records[alarm_id]
            # Not our own clear (that leaves ``published`` first): cancelled on another server, or
            # adopted by one that saw us offline. Either way it must not ring here.
            elif self.synced and self.published.pop(alarm_id, None) is not None and self._drop(alarm_id):
                self._count("alarms_cancelled_elsewhere")
                log.info("alarm %s was cleared by another server: dropped here", alarm_id)
            return
        record = decode(AlarmRecord, payload)
        check_consistent(parse_topic(topic), record)
        if server == self.server_id:
            if not self.synced:
                self._seen_own[alarm_id] = record
            return  # otherwise the echo of our own publish
        self.mirror.records[alarm_id] = record
        if self.synced and self._local(alarm_id) and self.mirror.ours(server):
            # Two live servers hold it (both adopted it): the rendezvous winner of the two keeps it.
            if adopter([self.server_id, server], alarm_id) == self.server_id:
                del self.mirror.records[alarm_id]
            elif self._drop(alarm_id):
                self._count("alarms_yielded")
                log.info("alarm %s is held by %s too: it keeps it", alarm_id, server)
        if self.synced:
            await self._take_over()

    # ---- state -------------------------------------------------------------------------------

    async def _synced(self) -> None:
        if not self.restored:
            self._restore(reconcile=True)
        else:
            for alarm_id in [*self.alarms.timers.timers, *self.alarms.reminders.reminders]:
                # Kept through a reconnect only if the broker still has our record and nobody else holds it.
                known = alarm_id in self.published or alarm_id in self._unconfirmed
                if (self.mirror.kind_of(alarm_id) or known) and self._gone(alarm_id):
                    self._drop(alarm_id)
        self._unconfirmed = set()
        self.published = dict(self._seen_own)
        self.synced = True
        log.info(
            "alarm replica: in step with the broker as %s (%d servers seen, %d of their alarms mirrored)",
            self.server_id,
            len(self.presence),
            len(self.mirror.held()),
        )
        await self.sync()
        await self._take_over()

    def _local(self, alarm_id: str) -> bool:
        rings = self.alarms.timers.ringer.rings
        return (
            alarm_id in self.alarms.timers.timers
            or alarm_id in self.alarms.reminders.reminders
            or alarm_id in rings
            or REMINDER_RING + alarm_id in rings
        )

    def _drop(self, alarm_id: str) -> bool:
        """Forget one of our alarms without ringing it; one that rings stops."""
        ringer = self.alarms.timers.ringer
        for key in (alarm_id, REMINDER_RING + alarm_id):
            if key in ringer.rings:
                ringer.cancel(key)
                return True
        return self.alarms.timers.drop(alarm_id) or self.alarms.reminders.drop(alarm_id)

    def _records(self) -> dict[str, AlarmRecord]:
        """Our alarms as records (one that cannot be written, e.g. an odd asker, is skipped and counted)."""
        found: dict[str, AlarmRecord] = {}
        for t in self.alarms.timers.timers.values():
            self._add(
                found,
                t.id,
                kind="timer",
                asker=t.asker,
                room=t.room,
                label=t.name,
                due=t.due,
                left_s=t.left_s,
                duration_s=t.duration_s,
                set_s=t.set_s,
                created=t.created,
            )
        for r in self.alarms.reminders.reminders.values():
            self._add(
                found, r.id, kind="reminder", asker=r.asker, room=r.room, label=r.task, due=r.due, created=r.created
            )
        for ring in self.alarms.timers.ringer.rings.values():
            # A ringing alarm keeps its record (marked) until the ring ends: "stop" said to another
            # server clears it, and a survivor rings it again if this server dies mid-ring.
            alarm_id = ring.key.removeprefix(REMINDER_RING)
            base = self.published.get(alarm_id)
            if base is not None and alarm_id not in found:
                found[alarm_id] = base if base.ringing else base.model_copy(update={"ringing": True})
        return found

    def _add(self, found: dict[str, AlarmRecord], alarm_id: str, **fields: object) -> None:
        try:
            found[alarm_id] = build(AlarmRecord, alarm_id=alarm_id, server_id=self.server_id, **fields)
        except MessageError as exc:
            self._count("alarms_not_replicated")
            if self._bad_logs.allow("record"):
                log.warning("alarm %s is not replicated: %s", alarm_id, one_line(exc, with_type=False))

    async def sync(self) -> None:
        """Put our alarms on the broker as they are now: changed ones published, gone ones cleared."""
        if not self.synced:
            return
        async with self._lock:
            current = self._records()
            for alarm_id, record in current.items():
                if self.published.get(alarm_id) != record and await self._send(
                    outbound(topics.alarm(self.server_id, alarm_id), record)
                ):
                    self.published[alarm_id] = record
            for alarm_id in [a for a in self.published if a not in current]:
                del self.published[alarm_id]  # first: the echo of this clear is then ours, not someone else's
                await self._send_clear(topics.alarm(self.server_id, alarm_id))

    async def _take_over(self) -> None:
        """Adopt the alarms of offline servers that the rendezvous gives to this one."""
        live = sorted({s for s, online in self.presence.items() if online} | {self.server_id})
        for record in self.mirror.held():
            if self.presence.get(record.server_id) or adopter(live, record.alarm_id) != self.server_id:
                continue
            await self._adopt(record)

    async def _adopt(self, record: AlarmRecord) -> None:
        self.mirror.records.pop(record.alarm_id, None)
        if record.kind == "timer":
            kept = (
                self.alarms.timers.adopt(
                    TimerRow(
                        record.alarm_id,
                        record.asker,
                        record.room,
                        record.label,
                        record.duration_s,
                        record.due,
                        record.left_s,
                        record.created,
                    ),
                    record.set_s,
                )
                is not None
            )
        else:
            assert record.due is not None  # AlarmRecord's own check
            kept = (
                self.alarms.reminders.adopt(
                    ReminderRow(record.alarm_id, record.asker, record.room, record.label, record.due, record.created)
                )
                is not None
            )
        self._count("alarms_adopted")
        log.info(
            "%s %s of %s adopted from offline server %s%s",
            record.kind,
            record.alarm_id,
            record.asker,
            record.server_id,
            "" if kept else " (missed: fell due too long ago)",
        )
        await self.sync()  # ours first, then the dead owner's is cleared: never a moment with no copy
        await self._send_clear(topics.alarm(record.server_id, record.alarm_id))

    async def _send(self, message: OutboundMessage) -> bool:
        try:
            await self._publish(message)
            return True
        except (aiomqtt.MqttError, TimeoutError) as exc:  # the next connect puts everything right
            self._count("alarm_publish_failed")
            log.warning("alarm replica: could not publish %s: %s", message.topic, one_line(exc))
            return False

    async def _send_clear(self, topic: str) -> None:
        try:
            await self._clear(topic)
        except (aiomqtt.MqttError, TimeoutError) as exc:
            self._count("alarm_publish_failed")
            log.warning("alarm replica: could not clear %s: %s", topic, one_line(exc))
