"""Timers replicated across AI servers (issue 21) on a hand-moved clock: a dead server's timer is adopted
by exactly one survivor and rings once, one due during the outage rings at once (or is reported missed),
the old owner coming back does not ring it again, questions and cancel work on any server, and bad
records are refused and counted.

The one fake is the broker (:class:`FakeBroker`: retained messages, per-client ordered delivery, a last
will on a kill); the timers, reminders, stores, mirror and replica are the real code, and each server's
player records what would reach a device. The real broker and processes: tests/scale/test_alarm_failover.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from ai_server.assist import reminders as reminders_mod
from ai_server.assist import timers as timers_mod
from ai_server.assist.alarms import AlarmChanges, Alarms
from ai_server.assist.clock import ManualClock
from ai_server.assist.core import AssistContext, AssistReply, AssistServices, IntentMatch, IntentRegistry
from ai_server.assist.replica import RESTORE_WAIT_S, AlarmMirror, AlarmReplica, adopter, presence, server_id_of
from shared.config import AIServerSettings, load
from shared.mqtt import OutboundMessage, topics
from tests.ai_server.assist.test_timers import T0, FakePlayer

pytestmark = pytest.mark.unit


class FakeBroker:
    """Retained messages and ordered delivery to every connected client (each has an inbox task, as
    shared/mqtt_link.py does); a killed client's will is published."""

    def __init__(self) -> None:
        self.retained: dict[str, bytes] = {}
        self.inboxes: dict[str, asyncio.Queue[tuple[str, bytes]]] = {}
        self.pumps: dict[str, asyncio.Task[None]] = {}

    async def publish(self, sender: str, topic: str, payload: bytes) -> None:
        if sender not in self.inboxes:
            raise aiomqtt.MqttError("not connected")
        self._deliver(topic, payload)

    def _deliver(self, topic: str, payload: bytes) -> None:
        if payload:
            self.retained[topic] = payload
        else:
            self.retained.pop(topic, None)
        for inbox in self.inboxes.values():
            inbox.put_nowait((topic, payload))

    async def connect(self, server: Server) -> None:
        inbox: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
        for topic, payload in self.retained.items():  # retained first, as mosquitto queues them at SUBSCRIBE
            inbox.put_nowait((topic, payload))
        self.inboxes[server.key] = inbox

        async def pump() -> None:
            while True:
                topic, payload = await inbox.get()
                await server.replica.on_message(topic, payload)

        self.pumps[server.key] = asyncio.get_running_loop().create_task(pump())
        await server.replica.on_connect()

    def drop(self, server: Server, *, will: bool = True) -> None:
        """The connection is gone (a kill, or a cut): the broker publishes the will."""
        self.inboxes.pop(server.key)
        self.pumps.pop(server.key).cancel()
        if will:
            self._deliver(server.replica.goodbye().topic, server.replica.goodbye().payload)


class Server:
    """One AI server's alarms and replica, on a store folder of its own."""

    def __init__(
        self, server_id: str, broker: FakeBroker, clock: ManualClock, data: Path, session: str, group: str = ""
    ) -> None:
        self.id = server_id
        self.key = session  # its connection, as the broker tells clients apart
        self.player = FakePlayer()
        self.player.clock = clock
        self.registry = IntentRegistry()
        self.counts: dict[str, int] = {}
        services = AssistServices(self.registry, clock.now, str(data))
        changes = AlarmChanges()

        async def send(message: OutboundMessage) -> None:
            await broker.publish(session, message.topic, message.payload)

        async def clear(topic: str) -> None:
            await broker.publish(session, topic, b"")

        self.mirror = AlarmMirror(clear, self.count, group)
        timers = timers_mod.install(
            services, player=self.player, clock=clock.clock, on_change=changes, remote=self.mirror, restore=False
        )
        reminders = reminders_mod.install(services, timers=timers, remote=self.mirror, restore=False)
        self.alarms = Alarms(timers, reminders, changes, self.mirror)
        self.replica = AlarmReplica(
            server_id,
            session,
            "test",
            self.alarms,
            self.mirror,
            publish=send,
            clear=clear,
            clock=clock.clock,
            count=self.count,
        )
        self.replica.start()
        self.clock = clock

    def count(self, name: str) -> None:
        self.counts[name] = self.counts.get(name, 0) + 1

    async def say(self, intent: str, device: str = "pi-1", **slots: Any) -> AssistReply:
        ctx = AssistContext(now=self.clock.now(), device_id=device, room="kitchen")
        reply = await self.registry.handle(IntentMatch(intent, slots), ctx)
        assert reply is not None
        return reply

    async def kill(self) -> None:
        """The process is gone: nothing of it runs any more (its store file stays)."""
        await self.replica.stop()
        self.alarms.close()

    def rang(self) -> list[str]:
        return [text for _, _, text in self.player.played]


class Household:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.clock = ManualClock(T0)
        self.broker = FakeBroker()
        self.servers: list[Server] = []
        self._sessions = iter(range(1000))

    async def start(self, server_id: str, *, connect: bool = True, group: str = "") -> Server:
        server = Server(server_id, self.broker, self.clock, self.tmp / server_id, f"s{next(self._sessions)}", group)
        self.servers.append(server)
        if connect:
            await self.broker.connect(server)
            await self.clock.settle()
        return server

    async def kill(self, server: Server) -> None:
        self.broker.drop(server)
        await server.kill()
        self.servers.remove(server)
        await self.clock.settle()

    def close(self) -> None:
        for server in self.servers:
            server.alarms.close()
        for pump in self.broker.pumps.values():
            pump.cancel()


@pytest.fixture
async def house(tmp_path: Path) -> Any:
    h = Household(tmp_path)
    yield h
    for server in list(h.servers):
        await server.replica.stop()
    h.close()


def timer_id(server: Server) -> str:
    (only,) = server.alarms.timers.timers
    return only


def owner_topics(broker: FakeBroker) -> Iterator[str]:
    return (t for t in broker.retained if t.startswith("naila/alarms/"))


async def test_a_timer_is_on_the_broker_while_it_runs_and_gone_once_it_rang(house: Household) -> None:
    a = await house.start("A")
    await a.say("HassStartTimer", minutes=1)
    await house.clock.settle()
    alarm_id = timer_id(a)
    assert list(owner_topics(house.broker)) == [topics.alarm("A", alarm_id)]
    await house.clock.advance(60)
    assert a.rang() == ["Your 1 minute timer is done."]
    await house.clock.advance(60)  # ASSIST_RING_MAX_S: the ring ends
    assert list(owner_topics(house.broker)) == []


async def test_a_dead_servers_timer_is_adopted_by_exactly_one_survivor_and_rings_once(house: Household) -> None:
    a, b, c = await house.start("A"), await house.start("B"), await house.start("C")
    await a.say("HassStartTimer", name="pasta", minutes=5)
    await house.clock.settle()
    alarm_id = timer_id(a)
    assert b.mirror.kind_of(alarm_id) == "timer" and c.mirror.kind_of(alarm_id) == "timer"
    await house.clock.advance(60)
    await house.kill(a)
    heir = {"B": b, "C": c}[adopter(["B", "C"], alarm_id)]
    other = c if heir is b else b
    assert list(heir.alarms.timers.timers) == [alarm_id] and not other.alarms.timers.timers
    assert list(owner_topics(house.broker)) == [topics.alarm(heir.id, alarm_id)]  # the dead owner's is cleared
    assert other.mirror.kind_of(alarm_id) == "timer"  # and the other survivor mirrors the heir's
    assert heir.counts["alarms_adopted"] == 1 and "alarms_adopted" not in other.counts
    await house.clock.advance(239.5)
    assert heir.rang() == []
    await house.clock.advance(0.5)  # due at exactly its time, on the heir
    assert heir.rang() == ["Your pasta timer is done."] and other.rang() == []


async def test_a_dead_servers_reminder_is_said_by_its_adopter(house: Household) -> None:
    a, b = await house.start("A"), await house.start("B")
    await a.say("NailaRemind", reminder="to call mum in 20 minutes")
    await house.clock.settle()
    await house.kill(a)
    assert len(b.alarms.reminders.reminders) == 1
    listed = await b.say("NailaListReminders")
    assert "call mum" in listed.text
    await house.clock.advance(20 * 60)
    assert b.rang() == ["Reminder: call mum."]


async def test_a_timer_due_during_the_outage_rings_at_once_or_is_reported_missed(house: Household) -> None:
    a, b = await house.start("A"), await house.start("B")
    await a.say("HassStartTimer", name="tea", seconds=30)
    await a.say("HassStartTimer", name="bread", seconds=40, device="pi-2")
    await house.clock.settle()
    await a.kill()  # dead, but the broker has not noticed yet (keep-alive)
    await house.clock.advance(45)
    house.broker.drop(a)
    house.servers.remove(a)
    await house.clock.settle()  # the will: B adopts both, 15 s and 5 s late, within ASSIST_TIMER_MISSED_S
    assert sorted(b.rang()) == ["Your bread timer is done.", "Your tea timer is done."]
    assert all(t.startswith("naila/alarms/B/") for t in owner_topics(house.broker))  # B's now (ringing)

    # One that fell due longer than ASSIST_TIMER_MISSED_S (600 s) before the takeover is missed.
    c = await house.start("C")
    await c.say("HassStartTimer", name="eggs", seconds=10, device="pi-3")
    await house.clock.settle()
    await c.kill()
    await house.clock.advance(700)
    house.broker.drop(c)
    house.servers.remove(c)
    await house.clock.settle()
    assert "Your eggs timer is done." not in b.rang() and b.counts.get("alarms_adopted") == 3
    status = await b.say("HassTimerStatus", device="pi-3")
    assert status.text.startswith("Your eggs timer ended at") and "offline" in status.text


async def test_the_old_owner_coming_back_does_not_ring_it_again(house: Household) -> None:
    a, b = await house.start("A"), await house.start("B")
    await a.say("HassStartTimer", minutes=2)
    await house.clock.settle()
    alarm_id = timer_id(a)
    await house.kill(a)
    assert list(b.alarms.timers.timers) == [alarm_id]
    again = await house.start("A")  # the same store folder: the timer is still in its SQLite
    assert again.alarms.timers.store is not None and again.alarms.timers.store.timers() == []
    assert again.counts["alarms_dropped_on_return"] == 1
    await house.clock.advance(120)
    assert b.rang() == ["Your 2 minute timer is done."] and again.rang() == []


async def test_a_briefly_cut_owner_gives_its_timer_up_to_the_adopter(house: Household) -> None:
    a, b = await house.start("A"), await house.start("B")
    await a.say("HassStartTimer", minutes=2)
    await house.clock.settle()
    alarm_id = timer_id(a)
    house.broker.drop(a)  # a network cut: A runs on, the broker published its will, B adopted
    await house.clock.settle()
    assert list(b.alarms.timers.timers) == [alarm_id]
    await house.broker.connect(a)
    await house.clock.settle()
    assert not a.alarms.timers.timers and a.counts["alarms_dropped_on_return"] == 1
    await house.clock.advance(120)
    assert b.rang() == ["Your 2 minute timer is done."] and a.rang() == []


async def test_a_timer_set_while_cut_off_is_published_when_back(house: Household) -> None:
    a, b = await house.start("A"), await house.start("B")
    house.broker.drop(a, will=False)
    await house.clock.settle()
    await a.say("HassStartTimer", minutes=3)  # its publish fails (counted); kept locally
    await house.clock.settle()
    assert a.counts["alarm_publish_failed"] >= 1
    await house.broker.connect(a)
    await house.clock.settle()
    alarm_id = timer_id(a)
    assert b.mirror.kind_of(alarm_id) == "timer" and topics.alarm("A", alarm_id) in house.broker.retained


async def test_another_server_answers_and_cancels_a_live_servers_timer(house: Household) -> None:
    a, b = await house.start("A"), await house.start("B")
    await a.say("HassStartTimer", name="pasta", minutes=10)
    await house.clock.settle()
    alarm_id = timer_id(a)
    await house.clock.advance(60)
    status = await b.say("HassTimerStatus")
    assert status.text == "9 minutes left on the pasta timer."
    assert [v.id for v in a.alarms.board()] == [alarm_id] and b.alarms.board() == []  # the owner lists it, once
    paused = await b.say("HassPauseTimer")
    assert "another of my servers" in paused.text and a.alarms.timers.timers[alarm_id].due is not None
    cancelled = await b.say("HassCancelTimer")
    assert cancelled.text == "Pasta timer cancelled."
    await house.clock.settle()
    assert not a.alarms.timers.timers and a.counts["alarms_cancelled_elsewhere"] == 1
    assert list(owner_topics(house.broker)) == []
    await house.clock.advance(600)
    assert a.rang() == [] and b.rang() == []


async def test_stop_said_to_another_server_silences_the_owners_ring(house: Household) -> None:
    a, b = await house.start("A"), await house.start("B")
    await a.say("HassStartTimer", seconds=30)
    await house.clock.settle()
    alarm_id = timer_id(a)
    await house.clock.advance(30)
    assert a.rang() == ["Your 30 second timer is done."] and alarm_id in a.alarms.timers.ringer.rings
    assert b.mirror.records[alarm_id].ringing  # the record stays, marked, while it rings
    assert (await b.say("HassTimerStatus")).text == "There are no timers running."
    assert (await b.say("NailaStop")).text == "Stopped."  # the device's turns went to B
    await house.clock.settle()
    assert not a.alarms.timers.ringer.rings and a.alarms.timers.ringer.ended[-1].why == "stopped"
    assert list(owner_topics(house.broker)) == []
    rang = len(a.rang())
    await house.clock.advance(30)
    assert len(a.rang()) == rang


async def test_a_ring_ending_clears_its_record(house: Household) -> None:
    a, b = await house.start("A"), await house.start("B")
    await a.say("HassStartTimer", seconds=5)
    await house.clock.advance(5)
    assert list(owner_topics(house.broker))  # ringing
    await house.clock.advance(61)  # ASSIST_RING_MAX_S
    assert list(owner_topics(house.broker)) == [] and not b.mirror.records


async def test_the_dashboard_cancel_on_any_server_cancels_a_reminder(house: Household) -> None:
    a, b = await house.start("A"), await house.start("B")
    reply = await a.say("NailaRemind", reminder="to call mum in 20 minutes")
    await house.clock.settle()
    reminder_id = reply.data["reminder_id"]
    listed = await b.say("NailaListReminders")
    assert "call mum" in listed.text
    assert b.alarms.cancel(reminder_id).found
    await house.clock.settle()
    assert not a.alarms.reminders.reminders
    await house.clock.advance(1200)
    assert a.rang() == [] and b.rang() == []


async def test_a_server_without_its_broker_restores_its_store_after_the_wait(house: Household) -> None:
    a = await house.start("A")
    await a.say("HassStartTimer", minutes=1)
    await house.clock.settle()
    await house.kill(a)
    again = await house.start("A", connect=False)  # the broker is away
    assert not again.alarms.timers.timers
    await house.clock.advance(RESTORE_WAIT_S)
    assert len(again.alarms.timers.timers) == 1
    await house.clock.advance(60 - RESTORE_WAIT_S)
    assert again.rang() == ["Your 1 minute timer is done."]


async def test_a_server_restored_without_its_broker_drops_what_was_cancelled_meanwhile(house: Household) -> None:
    a, b = await house.start("A"), await house.start("B")
    await a.say("HassStartTimer", minutes=10)
    await a.say("HassStartTimer", name="tea", minutes=10, device="pi-2")
    await house.clock.settle()
    await house.kill(a)  # B adopts both
    assert len(b.alarms.timers.timers) == 2
    await b.say("HassCancelTimer", device="pi-2")  # and one of them is cancelled there
    again = await house.start("A", connect=False)
    await house.clock.advance(RESTORE_WAIT_S)  # the broker is away: the store is restored as it is
    assert len(again.alarms.timers.timers) == 2
    await house.broker.connect(again)
    await house.clock.settle()  # back in step: one is B's, the other was cancelled
    assert not again.alarms.timers.timers and again.counts["alarms_dropped_on_return"] == 2
    await house.clock.advance(600)
    assert again.rang() == [] and set(b.rang()) == {"Your 10 minute timer is done."}


async def test_a_single_server_restart_keeps_its_timers(house: Household) -> None:
    a = await house.start("A")
    await a.say("HassStartTimer", minutes=1)
    await house.clock.settle()
    await a.kill()  # stopped and back before anyone else would care: its records are still retained
    house.broker.drop(a, will=False)
    house.servers.remove(a)
    again = await house.start("A")
    assert len(again.alarms.timers.timers) == 1 and "alarms_dropped_on_return" not in again.counts
    await house.clock.advance(60)
    assert again.rang() == ["Your 1 minute timer is done."]


async def test_a_broker_that_lost_its_retained_messages_loses_no_timer(house: Household) -> None:
    """mosquitto restarted without its persistence (or crashed within its autosave interval): the
    records are gone, but nobody cleared them; the server keeps its timers and publishes them again,
    whether it reconnects or restarts."""
    a = await house.start("A")
    await a.say("HassStartTimer", minutes=2)
    await house.clock.settle()
    alarm_id = timer_id(a)
    house.broker.drop(a, will=False)
    house.broker.retained.clear()
    await house.broker.connect(a)
    await house.clock.settle()
    assert list(a.alarms.timers.timers) == [alarm_id] and "alarms_dropped_on_return" not in a.counts
    assert topics.alarm("A", alarm_id) in house.broker.retained
    await a.kill()
    house.broker.drop(a, will=False)
    house.servers.remove(a)
    house.broker.retained.clear()
    again = await house.start("A")
    assert list(again.alarms.timers.timers) == [alarm_id] and "alarms_dropped_on_return" not in again.counts
    await house.clock.advance(120)
    assert again.rang() == ["Your 2 minute timer is done."]


async def test_two_adopters_settle_on_one(house: Household) -> None:
    b, c = await house.start("B"), await house.start("C")
    await b.say("HassStartTimer", minutes=4)
    await house.clock.settle()
    alarm_id = timer_id(b)
    # C claims the same alarm (its view of who was live differed): the rendezvous winner of B and C keeps it.
    record = house.broker.retained[topics.alarm("B", alarm_id)].replace(b'"server_id":"B"', b'"server_id":"C"')
    await house.broker.publish(c.key, topics.alarm("C", alarm_id), record)
    await house.clock.settle()
    keeper = adopter(["B", "C"], alarm_id)
    assert (alarm_id in b.alarms.timers.timers) == (keeper == "B")
    assert (b.mirror.kind_of(alarm_id) is None) == (keeper == "B")  # the loser yields, the keeper mirrors nothing


async def test_another_groups_servers_are_left_alone(house: Household) -> None:
    """Another household (or another test) on the same broker: its alarms are not mirrored or adopted."""
    a, b = await house.start("A"), await house.start("B", group="elsewhere")
    await a.say("HassStartTimer", minutes=1)
    await house.clock.settle()
    assert b.mirror.timers() == [] and b.alarms.cancel(timer_id(a)).found is False
    await house.kill(a)
    assert not b.alarms.timers.timers
    await house.clock.advance(60)
    assert b.rang() == []


async def test_bad_records_are_refused_counted_and_the_rest_still_served(house: Household) -> None:
    a, b = await house.start("A"), await house.start("B")
    bad = [
        (topics.alarm("X", "t1"), b"not json"),
        (
            topics.alarm("X", "t2"),
            b'{"alarm_id":"t2","server_id":"Y","kind":"timer","asker":"pi","created":'
            b'"2026-03-10T13:00:00Z","due":"2026-03-10T13:05:00Z"}',
        ),  # the topic says X
        (
            topics.alarm("X", "t3"),
            b'{"alarm_id":"t3","server_id":"X","kind":"reminder","asker":"pi","created":"2026-03-10T13:00:00Z"}',
        ),  # a reminder without a due time
        ("naila/alarms/X/../status", b"{}"),
        (topics.server_presence("X"), b'{"online": "maybe"}'),
    ]
    for topic, payload in bad:
        await house.broker.publish(a.key, topic, payload)
    await house.clock.settle()
    assert b.counts["alarm_messages_refused"] == len(bad) and not b.mirror.records
    await a.say("HassStartTimer", minutes=1)
    await house.clock.settle()
    assert len(b.mirror.records) == 1


async def test_two_servers_with_one_id_are_reported(house: Household) -> None:
    a = await house.start("A")
    await house.start("A")  # misconfigured: the same AI_SERVER_ID on two machines
    assert a.counts["alarm_server_id_clash"] == 1


def test_the_server_id_is_stable_and_a_topic_segment() -> None:
    settings = load(AIServerSettings, ai_server_id="", ai_mqtt_client_id="naila ai/1")
    assert server_id_of(settings) == "naila-ai-1"
    assert server_id_of(load(AIServerSettings, ai_server_id="gpu-2")) == "gpu-2"
    will = presence("gpu-2", "abc", "1.0", online=False)
    assert will.topic == "naila/servers/gpu-2/status" and will.retain and will.qos == 1
