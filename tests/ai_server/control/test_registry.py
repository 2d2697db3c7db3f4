"""The device registry: retained statuses and last wills in, online/offline transitions, GetStatus devices."""

from __future__ import annotations

import asyncio
import signal
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest

from ai_server.control.metrics import ControlMetrics
from ai_server.control.registry import DeviceRegistry
from shared.contract import pb, pb_grpc
from shared.mqtt import DeviceStatus, build
from tests.ai_server.control.conftest import ControlFactory, Watch, announce_device, uid, until
from tests.conftest import Broker
from tests.integration.test_mqtt_broker import DEVICE_SCRIPT

REPO_ROOT = Path(__file__).resolve().parents[3]


def status(device_id: str, online: bool, *, ts: datetime | None = None, room: str | None = "hall") -> DeviceStatus:
    return build(
        DeviceStatus,
        device_id=device_id,
        online=online,
        capabilities=["audio"],
        firmware_version="1",
        room=room,
        zone="z1",
        timestamp=ts or datetime(2024, 1, 15, 10, 30, tzinfo=UTC),
    )


@pytest.mark.unit
def test_transitions_are_counted_once_and_last_seen_is_when_it_was_heard_online() -> None:
    now = [datetime(2025, 6, 1, 12, 0, tzinfo=UTC)]
    metrics = ControlMetrics()
    reg = DeviceRegistry(metrics, clock=lambda: now[0])

    reg.update(status("b", online=True))
    assert metrics.registry.get_sample_value("naila_ai_mqtt_devices_online") == 1
    now[0] += timedelta(seconds=30)
    reg.update(status("b", online=True))  # heartbeat: no transition, last_seen moves
    assert metrics.events["device_online"] == 1
    assert reg.get("b") is not None and reg.get("b").last_seen == now[0]  # type: ignore[union-attr]
    heard = now[0]
    now[0] += timedelta(minutes=5)
    will_time = datetime(2025, 6, 1, 11, 0, tzinfo=UTC)  # a will carries its registration time
    record = reg.update(status("b", online=False, ts=will_time))
    assert not record.online and record.last_seen == heard and record.changed_at == now[0]
    assert metrics.events["device_offline"] == 1
    assert metrics.registry.get_sample_value("naila_ai_mqtt_devices_online") == 0

    first_seen_offline = reg.update(status("a", online=False, ts=will_time, room=None))
    assert first_seen_offline.last_seen == will_time
    infos = reg.device_infos()
    assert [i.device_id for i in infos] == ["a", "b"]
    assert (infos[1].room, infos[1].zone, list(infos[1].capabilities)) == ("hall", "z1", ["audio"])
    assert infos[1].last_seen == "2025-06-01T12:00:30.000Z" and infos[0].room == ""

    reg.forget("b")
    assert reg.get("b") is None and metrics.events["device_removed"] == 1


@pytest.mark.integration
@pytest.mark.timeout(60)
async def test_a_killed_device_goes_offline_through_its_will_and_getstatus_lists_it(
    control_server: ControlFactory, mosquitto: Broker
) -> None:
    server, plane = await control_server()
    dev = uid("reg-kill")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        DEVICE_SCRIPT,
        mosquitto.host,
        str(mosquitto.port),
        dev,
        cwd=REPO_ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None
        assert (await asyncio.wait_for(proc.stdout.readline(), 30)).strip() == b"online"
        await until(lambda: (r := plane.registry.get(dev)) is not None and r.online)
        record = plane.registry.get(dev)
        assert record is not None
        assert (record.room, record.zone, record.capabilities) == ("kitchen", "back_yard", ("audio", "speaker"))
        online_before = plane.metrics.events["device_online"]
        offline_before = plane.metrics.events["device_offline"]

        proc.send_signal(signal.SIGKILL)  # no DISCONNECT: only the broker's will can tell
        await until(lambda: (r := plane.registry.get(dev)) is not None and not r.online)
        assert plane.metrics.events["device_offline"] == offline_before + 1
        assert plane.metrics.events["device_online"] == online_before
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()

    async with grpc.aio.insecure_channel(server.address) as channel:
        reply = await pb_grpc.NailaAIStub(channel).GetStatus(pb.StatusRequest(), timeout=5)
    listed = {d.device_id: d for d in reply.devices}
    assert dev in listed
    info = listed[dev]
    assert not info.online and info.room == "kitchen" and info.zone == "back_yard"
    assert list(info.capabilities) == ["audio", "speaker"]
    seen = datetime.fromisoformat(info.last_seen.replace("Z", "+00:00"))
    assert abs((datetime.now(UTC) - seen).total_seconds()) < 60
    assert reply.counters["mqtt_device_offline"] >= 1


@pytest.mark.integration
@pytest.mark.timeout(60)
async def test_retained_statuses_are_replayed_at_connect_and_a_cleared_one_is_forgotten(
    control_server: ControlFactory, watch: Watch
) -> None:
    dev = uid("reg-retained")
    await announce_device(watch, dev, room="attic")
    _server, plane = await control_server()  # connects after the status was retained
    await until(lambda: plane.registry.get(dev) is not None)
    record = plane.registry.get(dev)
    assert record is not None and record.online and record.room == "attic"

    await watch.client.publish(f"naila/devices/{dev}/status", b"", qos=1, retain=True)  # clears the retained status
    await until(lambda: plane.registry.get(dev) is None)


@pytest.mark.unit
def test_a_device_silent_for_three_heartbeats_is_offline_for_everyone_until_it_speaks_again() -> None:
    """M7: a broker restart that lost the will, or replayed an old retained "online", leaves no ghost."""
    from ai_server.control.commands import Commands
    from ai_server.control.speech import Speaker, SpeakError
    from ai_server.conversation import Conversations
    from ai_server.fakes import FakeLLM, FakeSTT, FakeTTS
    from ai_server.pipeline import Pipeline

    now = [datetime(2025, 6, 1, 12, 0, tzinfo=UTC)]
    metrics = ControlMetrics()
    reg = DeviceRegistry(metrics, clock=lambda: now[0], stale_after_s=90)  # 3 x DEVICE_HEARTBEAT_S=30
    spoken = status("kitchen-pi", online=True)
    reg.update(spoken.model_copy(update={"capabilities": ["audio", "speaker"]}))
    now[0] += timedelta(seconds=90)
    assert reg.get("kitchen-pi").online  # type: ignore[union-attr]  # 3 heartbeats: not yet
    now[0] += timedelta(seconds=1)
    record = reg.get("kitchen-pi")
    assert record is not None and not record.online and record.changed_at == now[0]
    assert [d.online for d in reg.device_infos()] == [False]
    assert [d.online for d in reg.in_room(record.room or "")] == [False]
    assert metrics.events["device_stale"] == 1  # counted once, however often it is asked
    reg.get("kitchen-pi")
    assert metrics.events["device_stale"] == 1
    assert metrics.registry.get_sample_value("naila_ai_mqtt_devices_online") == 0

    speaker = Speaker(Pipeline(FakeSTT(), FakeLLM(), FakeTTS(), Conversations("s", 2)), reg, metrics, tuple)
    with pytest.raises(SpeakError, match="offline"):
        speaker.targets("kitchen-pi")

    async def publish(_message: object) -> None:
        raise AssertionError("nothing is sent to a stale device")

    commands = Commands(publish, reg, metrics, default_timeout_s=1.0)
    with pytest.raises(Exception, match="offline"):
        asyncio.run(commands.send_command("kitchen-pi", "set_volume", {"level": 10}))

    reg.update(spoken)  # its next heartbeat: back
    assert reg.get("kitchen-pi").online and metrics.events["device_online"] == 2  # type: ignore[union-attr]
