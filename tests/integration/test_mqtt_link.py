"""shared.mqtt_link.MqttLink against a real mosquitto run from the shipped config, as a device would use it.

The link logs in as device ``dev-a`` (its own MQTT user, the shipped ACL applies), so every
message here also exercises that device's legitimate traffic through the broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.backoff import Backoff
from shared.mqtt import DeviceStatus, OutboundMessage, build, decode, last_will, outbound, topics
from shared.mqtt_link import MqttLink
from tests.integration.test_mosquitto_acl import (
    AI,
    APP,
    DEV,
    HUB,
    WAIT_S,
    Deployment,
    deployment,
    link_child,
    next_message,
    payload_bytes,
    wait_until,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


@pytest.fixture
def dep(tmp_path: Path) -> Iterator[Deployment]:
    with deployment(tmp_path) as d:
        yield d


def status(connect_no: int, online: bool = True) -> DeviceStatus:
    # The connect number rides in firmware_version so a test can tell which connect published it.
    return build(DeviceStatus, device_id=DEV, online=online, capabilities=["audio"], firmware_version=f"t.{connect_no}")


async def test_broker_restart_redial_resubscribe_and_republish(dep: Deployment) -> None:
    received: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()

    async def on_message(topic: str, payload: bytes) -> None:
        received.put_nowait((topic, payload))

    async def on_connect(link: MqttLink) -> None:
        await link.publish(outbound(topics.device_status(DEV), status(link.stats.connects)))

    link = MqttLink(
        dep.settings(DEV),
        client_id="naila-device-dev-a",
        subscriptions=[topics.device_command(DEV)],
        on_message=on_message,
        on_connect=on_connect,
        backoff=Backoff(0.05, 0.4),
    )
    await link.start()
    try:
        await asyncio.wait_for(link.connected.wait(), WAIT_S)
        dep.broker.kill()  # no DISCONNECT, no database save: the retained status dies with it
        await wait_until(lambda: not link.connected.is_set())
        # Refused redials meanwhile, each after a (growing) backoff delay.
        await wait_until(lambda: link.backoff.attempt >= 3)
        assert link.stats.connects == 1

        await asyncio.to_thread(dep.broker.start)
        restarted = time.monotonic()
        await asyncio.wait_for(link.connected.wait(), WAIT_S)
        reconnect_s = time.monotonic() - restarted
        print(f"reconnected {reconnect_s * 1000:.0f} ms after the broker listened again")
        # Backoff capped at 0.4 s, plus the connect and subscribe round trips.
        assert reconnect_s < 2.0
        assert (link.stats.connects, link.stats.disconnects) == (2, 1)

        # Re-subscribed: a command published after the restart reaches the handler.
        async with dep.client(AI) as server:
            await server.publish(topics.device_command(DEV), b"after restart", qos=1)
        async with asyncio.timeout(WAIT_S):
            assert await received.get() == (topics.device_command(DEV), b"after restart")

        # on_connect republished the retained status on the new broker: a newcomer gets it.
        async with dep.client(HUB) as newcomer:
            await newcomer.subscribe(topics.device_status(DEV), qos=1)
            msg = await next_message(newcomer)
            assert msg.retain
            assert decode(DeviceStatus, payload_bytes(msg)).firmware_version == "t.2"
    finally:
        await link.stop()


async def test_a_failing_handler_does_not_stop_the_receive_loop(dep: Deployment) -> None:
    handled: asyncio.Queue[bytes] = asyncio.Queue()

    async def on_message(_topic: str, payload: bytes) -> None:
        if payload == b"poison":
            raise ValueError("handler bug")
        handled.put_nowait(payload)

    link = MqttLink(
        dep.settings(DEV),
        client_id="naila-device-dev-a",
        subscriptions=[topics.device_command(DEV)],
        on_message=on_message,
    )
    await link.start()
    try:
        await asyncio.wait_for(link.connected.wait(), WAIT_S)
        async with dep.client(AI) as server:
            for payload in (b"poison", b"next", b"poison", b"last"):
                await server.publish(topics.device_command(DEV), payload, qos=1)
        async with asyncio.timeout(WAIT_S):
            assert [await handled.get(), await handled.get()] == [b"next", b"last"]
        assert link.stats.received == 4
        assert link.stats.handler_errors == 2
        assert link.stats.errors_by_kind == {"ValueError": 2}
        # Same connection throughout: the failures did not cost a reconnect.
        assert link.connected.is_set() and link.stats.connects == 1
    finally:
        await link.stop()


async def test_will_is_published_when_the_process_is_killed(dep: Deployment) -> None:
    online = status(1)
    will = last_will(online)
    status_topic = topics.device_status(DEV)
    async with dep.client(HUB) as hub:
        await hub.subscribe(status_topic, qos=1)
        async with link_child(
            dep, dep.settings(DEV), will.topic, will.payload, outbound(status_topic, online).payload
        ) as child:
            msg = await next_message(hub)
            assert decode(DeviceStatus, payload_bytes(msg)).online is True
            child.send_signal(signal.SIGKILL)  # a Pi losing power: no DISCONNECT
            await child.wait()
            msg = await next_message(hub)
            assert msg.topic.value == status_topic
            offline = decode(DeviceStatus, payload_bytes(msg))
            assert offline.online is False and offline.device_id == DEV
    # Retained: a hub that starts later learns the device is offline.
    async with dep.client(HUB) as late:
        await late.subscribe(status_topic, qos=1)
        msg = await next_message(late)
        assert msg.retain and decode(DeviceStatus, payload_bytes(msg)).online is False


async def test_clean_stop_publishes_the_goodbye_instead_of_the_will(dep: Deployment) -> None:
    will = last_will(status(1))
    link = MqttLink(
        dep.settings(DEV),
        client_id="naila-device-dev-a",
        will=OutboundMessage(will.topic, will.payload, will.qos, will.retain),
    )
    async with dep.client(HUB) as hub:
        await hub.subscribe(topics.device_status(DEV), qos=1)
        await link.start()
        await asyncio.wait_for(link.connected.wait(), WAIT_S)
        goodbye = status(9, online=False)
        await link.stop(goodbye=outbound(topics.device_status(DEV), goodbye))
        msg = await next_message(hub)
        assert decode(DeviceStatus, payload_bytes(msg)).firmware_version == "t.9"
        # A clean DISCONNECT discards the will: the next status is the device's next one, not the will.
        async with dep.client(DEV) as device:
            await device.publish(
                topics.device_status(DEV), outbound(topics.device_status(DEV), status(10)).payload, qos=1
            )
        msg = await next_message(hub)
        assert decode(DeviceStatus, payload_bytes(msg)).firmware_version == "t.10"


# -- delivery (finding M1) ------------------------------------------------------------------------
async def test_a_persistent_session_gets_what_was_published_while_it_was_away(dep: Deployment) -> None:
    """QoS 1 on a persistent session (fixed client id, clean_session=0): queued by the broker,
    delivered on return, even across a broker restart (the shipped conf persists its database)."""
    received: asyncio.Queue[bytes] = asyncio.Queue()

    async def on_message(_topic: str, payload: bytes) -> None:
        received.put_nowait(payload)

    def server_link() -> MqttLink:
        return MqttLink(dep.settings(AI), client_id="naila-ai-server", subscriptions=[topics.chat_request("s1")],
                        on_message=on_message, persistent=True, backoff=Backoff(0.05, 0.4))

    link = server_link()
    await link.start()
    await asyncio.wait_for(link.connected.wait(), WAIT_S)
    await link.stop()  # the AI server restarts
    async with dep.client(APP) as app:  # chat requests come from the app (the hub may not send them: L4)
        await app.publish(topics.chat_request("s1"), b"while away", qos=1)
    dep.broker.stop()  # a clean broker stop saves the queue to its database
    await asyncio.to_thread(dep.broker.start)
    async with dep.client(APP) as app:
        await app.publish(topics.chat_request("s1"), b"after the broker restart", qos=1)
    link = server_link()
    await link.start()
    try:
        async with asyncio.timeout(WAIT_S):
            assert [await received.get(), await received.get()] == [b"while away", b"after the broker restart"]
    finally:
        await link.stop()


async def test_a_clean_session_does_not_get_them(dep: Deployment) -> None:
    """The contrast, and what devices keep: nothing is queued for a clean session."""
    received: asyncio.Queue[bytes] = asyncio.Queue()

    async def on_message(_topic: str, payload: bytes) -> None:
        received.put_nowait(payload)

    def device_link() -> MqttLink:
        return MqttLink(dep.settings(DEV), client_id="naila-device-dev-a",
                        subscriptions=[topics.device_command(DEV)], on_message=on_message)

    link = device_link()
    await link.start()
    await asyncio.wait_for(link.connected.wait(), WAIT_S)
    await link.stop()
    async with dep.client(AI) as server:
        await server.publish(topics.device_command(DEV), b"stale command", qos=1)
    link = device_link()
    await link.start()
    try:
        await asyncio.wait_for(link.connected.wait(), WAIT_S)
        async with dep.client(AI) as server:
            await server.publish(topics.device_command(DEV), b"fresh", qos=1)
        async with asyncio.timeout(WAIT_S):
            assert await received.get() == b"fresh"
    finally:
        await link.stop()


async def test_the_inbox_is_bounded_by_bytes_and_every_refusal_is_counted(dep: Deployment) -> None:
    """A stuck handler: aiomqtt's queue never discards (it is unbounded and emptied at once); the
    link's inbox holds at most max_queued_bytes and refuses the rest through on_overflow."""
    release = asyncio.Event()
    handled: list[bytes] = []
    refused: list[tuple[str, int]] = []

    async def on_message(_topic: str, payload: bytes) -> None:
        await release.wait()
        handled.append(payload)

    link = MqttLink(
        dep.settings(DEV), client_id="naila-device-dev-a", subscriptions=[topics.device_command(DEV)],
        on_message=on_message, max_queued_bytes=25_000,
        on_overflow=lambda topic, payload: refused.append((topic, len(payload))),
    )
    await link.start()
    try:
        await asyncio.wait_for(link.connected.wait(), WAIT_S)
        async with dep.client(AI) as server:
            for i in range(10):
                await server.publish(topics.device_command(DEV), bytes([i]) * 10_000, qos=1)
        await wait_until(lambda: link.stats.received == 10)
        # The one in the stuck handler counts until it is handled: two fit 25 kB, eight were refused.
        assert link.queued_bytes == 20_000
        assert link.stats.overflowed == len(refused) == 8
        assert refused[0] == (topics.device_command(DEV), 10_000)
        release.set()
        await wait_until(lambda: len(handled) == 2)
        assert link.queued_bytes == 0 and [p[0] for p in handled] == [0, 1]  # in order
        # Room again: the link keeps serving on the same connection.
        async with dep.client(AI) as server:
            await server.publish(topics.device_command(DEV), b"after", qos=1)
        await wait_until(lambda: handled[-1:] == [b"after"])
        assert link.stats.connects == 1
    finally:
        await link.stop()


async def test_stop_ends_a_task_that_swallowed_its_cancellation() -> None:
    """aiomqtt's asyncio.wait_for can swallow a cancellation on Python 3.11 (seen as an AI server's stop
    hanging when it raced the alarm link's first PUBACK): stopping cancels again until the task ends."""
    from shared.mqtt_link import _cancel

    async def stubborn() -> None:
        # swallowed, as wait_for may do when the awaited reply arrives at the same moment
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(3600)
        await asyncio.sleep(3600)  # and on to wait for the next message

    task = asyncio.get_running_loop().create_task(stubborn())
    await asyncio.sleep(0)
    async with asyncio.timeout(5):
        await _cancel(task)
    assert task.cancelled()
