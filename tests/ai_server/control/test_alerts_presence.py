"""Alerts on both topics with QoS 1 and exact fields; the server's retained status and broadcasts."""

from __future__ import annotations

import asyncio
import json
import socket
from datetime import UTC, datetime

import aiomqtt
import pytest

from shared.mqtt import ServerStatus, decode, topics
from tests.ai_server.control.conftest import ControlFactory, Watch, image_bytes, uid
from tests.conftest import Broker

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

# The spec's fields, plus our snapshot_id (issue 24: the dashboard fetches the snapshot by it).
ALERT_FIELDS = {"alert_type", "zone", "confidence", "source_device", "timestamp", "snapshot_available", "snapshot_id"}


async def test_an_alert_goes_to_its_zone_topic_and_to_all_with_qos_1_and_its_snapshot_is_stored(
    control_server: ControlFactory, watch: Watch
) -> None:
    _server, plane = await control_server()
    zone, cam = uid("zone"), uid("cam")
    zone_topic = topics.alert(zone, "person_detected")
    await watch.subscribe(zone_topic, topics.ALERTS_ALL)
    jpeg = image_bytes("JPEG", (32, 24))
    before = datetime.now(UTC)
    published = await plane.publish_alert("person_detected", zone, 0.92, cam, snapshot_bytes=jpeg)

    for topic in (zone_topic, topics.ALERTS_ALL):
        while True:  # alerts/all is shared by every test of the session: find ours
            msg = await watch.next(topic)
            assert isinstance(msg.payload, bytes)
            data = json.loads(msg.payload)
            if data["zone"] == zone:
                break
        assert msg.qos == 1, topic
        assert set(data) == ALERT_FIELDS
        assert (data["alert_type"], data["zone"], data["confidence"], data["source_device"]) == (
            "person_detected",
            zone,
            0.92,
            cam,
        )
        assert data["snapshot_available"] is True
        stamp = datetime.fromisoformat(data["timestamp"].replace("Z", "+00:00"))
        assert before <= stamp <= datetime.now(UTC)

    record = published.snapshot
    assert record is not None and record.path.read_bytes() == jpeg
    assert (record.source, record.device_id, record.zone, record.format) == ("alert_snapshot", cam, zone, "jpeg")
    assert plane.media.store.get(record.id) == record
    assert data["snapshot_id"] == record.id


async def test_an_alert_whose_snapshot_is_bad_goes_out_without_one(
    control_server: ControlFactory, watch: Watch
) -> None:
    _server, plane = await control_server()
    zone = uid("zone-bad")
    await watch.subscribe(topics.alert(zone, "motion"))
    published = await plane.publish_alert("motion", zone, 0.5, "cam1", snapshot_bytes=b"not a jpeg at all")
    data = await watch.next_json(topics.alert(zone, "motion"))
    assert data["snapshot_available"] is False and published.snapshot is None
    assert plane.metrics.events["alert_snapshot_refused"] == 1
    # Without bytes the caller's word stands (e.g. a frame kept elsewhere).
    await plane.publish_alert("motion", zone, 0.5, "cam1", snapshot_available=True)
    assert (await watch.next_json(topics.alert(zone, "motion")))["snapshot_available"] is True


async def test_server_status_is_retained_online_then_offline_after_stop_and_broadcasts_go_out(
    control_server: ControlFactory, watch: Watch, mosquitto: Broker
) -> None:
    server, plane = await control_server()
    version = plane.presence.version
    # The will registered with the broker is the offline status.
    assert plane.link.will is not None and plane.link.will.retain and plane.link.will.topic == topics.SERVER_STATUS
    assert not decode(ServerStatus, plane.link.will.payload).online

    await watch.subscribe(topics.SERVER_BROADCAST)
    sent = await plane.broadcast("Dinner is ready", room="kitchen")
    data = await watch.next_json(topics.SERVER_BROADCAST)
    assert (data["message"], data["room"]) == ("Dinner is ready", "kitchen") and sent.message == "Dinner is ready"

    async with aiomqtt.Client(mosquitto.host, mosquitto.port, identifier=uid("late")) as late:
        await late.subscribe(topics.SERVER_STATUS, qos=1)
        async with asyncio.timeout(5):
            msg = await anext(late.messages)
        status = decode(ServerStatus, msg.payload)
    assert status.online and status.version == version and msg.retain

    await server.stop(grace=0)
    async with aiomqtt.Client(mosquitto.host, mosquitto.port, identifier=uid("later")) as later:
        await later.subscribe(topics.SERVER_STATUS, qos=1)
        async with asyncio.timeout(5):
            msg = await anext(later.messages)
        status = decode(ServerStatus, msg.payload)
    assert not status.online and msg.retain


async def test_a_dropped_connection_publishes_the_will_and_the_reconnect_announces_online_again(
    control_server: ControlFactory, watch: Watch
) -> None:
    _server, plane = await control_server()
    await watch.subscribe(topics.SERVER_STATUS)
    assert decode(ServerStatus, (await watch.next(topics.SERVER_STATUS)).payload).online  # retained
    connects = plane.link.stats.connects
    client = plane.link._client  # test-only: cut the TCP connection under the client, no DISCONNECT
    assert client is not None
    client._client.socket().shutdown(socket.SHUT_RDWR)
    will = decode(ServerStatus, (await watch.next(topics.SERVER_STATUS)).payload)
    assert not will.online  # the broker published our will
    again = decode(ServerStatus, (await watch.next(topics.SERVER_STATUS, 10)).payload)
    assert again.online and plane.link.stats.connects == connects + 1
