"""Commands to a real device_agent MqttAgent over the real broker: results, device errors, timeouts, offline."""

from __future__ import annotations

import asyncio
import json

import pytest

from ai_server.control.errors import CommandFailed, CommandRefused, CommandTimeout, DeviceOffline
from shared.config import MqttSettings
from shared.mqtt import topics
from tests.ai_server.control.conftest import ControlFactory, Watch, announce_device, real_device, uid, until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


async def test_a_command_round_trip_returns_the_device_result_and_errors_are_raised(
    control_server: ControlFactory, mqtt_settings: MqttSettings
) -> None:
    _server, plane = await control_server()
    dev = uid("cmd")
    async with real_device(mqtt_settings, dev) as (_agent, control):
        await until(lambda: (r := plane.registry.get(dev)) is not None and r.online)

        result = await plane.send_command(dev, "volume", {"level": 30}, timeout_s=5)
        assert result == {"volume": 30} and control.volume == 30
        assert await plane.send_command(dev, "mute", {"muted": True}, timeout_s=5) == {"muted": True}
        assert control.muted

        # Not in the command table: refused before anything is published (issue 23).
        with pytest.raises(CommandRefused) as failed:
            await plane.send_command(dev, "dance", timeout_s=5)
        assert failed.value.device_id == dev and "unknown command 'dance'" in failed.value.error
        with pytest.raises(CommandRefused) as bad_level:
            await plane.send_command(dev, "volume", {"level": 300}, timeout_s=5)
        assert "0-100" in bad_level.value.error and isinstance(bad_level.value, CommandFailed)
        # A valid command the device cannot do: the device's own error (this fake has no camera).
        with pytest.raises(CommandFailed) as no_camera:
            await plane.send_command(dev, "camera", {"enabled": False}, timeout_s=5)
        assert not isinstance(no_camera.value, CommandRefused) and no_camera.value.error == "this device has no camera"
        events = plane.metrics.events
        assert (events["command_ok"], events["command_refused"], events["command_failed"]) == (2, 2, 1)
    assert len(plane.commands.pending) == 0
    # The agent's clean goodbye is a retained offline status: commands now fail before publishing.
    await until(lambda: (r := plane.registry.get(dev)) is not None and not r.online)
    with pytest.raises(DeviceOffline) as offline:
        await plane.send_command(dev, "volume", {"level": 10})
    assert offline.value.known


async def test_no_response_is_a_timeout_and_a_late_or_foreign_reply_is_unmatched(
    control_server: ControlFactory, watch: Watch
) -> None:
    _server, plane = await control_server()
    dev, other = uid("cmd-mute"), uid("cmd-other")
    await announce_device(watch, dev)  # "online", but nothing answers its commands
    await announce_device(watch, other)
    await until(lambda: plane.registry.get(dev) is not None and plane.registry.get(other) is not None)
    await watch.subscribe(topics.device_command(dev))

    pending = asyncio.ensure_future(plane.send_command(dev, "status", timeout_s=0.5))
    sent = await watch.next_json(topics.device_command(dev))
    request_id = sent["request_id"]
    assert sent["command"] == "status" and sent["params"] == {}
    # Another device answering this request is not the addressed device: it must not count.
    await watch.publish(topics.device_command_response(other), {"request_id": request_id, "ok": True})
    with pytest.raises(CommandTimeout) as timeout:
        await pending
    assert timeout.value.request_id == request_id and timeout.value.timeout_s == 0.5
    assert len(plane.commands.pending) == 0

    # The right device, but too late: nobody waits any more.
    before = plane.metrics.rejected["unmatched"]
    await watch.publish(topics.device_command_response(dev), {"request_id": request_id, "ok": True})
    await until(lambda: plane.metrics.rejected["unmatched"] == before + 1)
    assert plane.metrics.rejected["unmatched"] == before + 1


async def test_an_unknown_device_is_refused_without_publishing(control_server: ControlFactory, watch: Watch) -> None:
    _server, plane = await control_server()
    ghost = uid("ghost")
    await watch.subscribe(topics.device_command(ghost))
    with pytest.raises(DeviceOffline) as err:
        await plane.send_command(ghost, "volume", {"level": 1})
    assert not err.value.known and "unknown" in str(err.value)
    assert await watch.nothing_on(topics.device_command(ghost), 0.3)


async def test_a_malformed_response_is_counted_and_does_not_complete_the_command(
    control_server: ControlFactory, watch: Watch
) -> None:
    _server, plane = await control_server()
    dev = uid("cmd-bad")
    await announce_device(watch, dev)
    await until(lambda: plane.registry.get(dev) is not None)
    await watch.subscribe(topics.device_command(dev))
    pending = asyncio.ensure_future(plane.send_command(dev, "status", timeout_s=2))
    request_id = (await watch.next_json(topics.device_command(dev)))["request_id"]
    before = plane.metrics.rejected["malformed"]
    # ok=false without an error is not a CommandResponse: dropped, the command still waits.
    await watch.publish(topics.device_command_response(dev), json.dumps({"request_id": request_id, "ok": False}))
    await until(lambda: plane.metrics.rejected["malformed"] == before + 1)
    await watch.publish(topics.device_command_response(dev), {"request_id": request_id, "ok": True, "result": {"a": 1}})
    assert await pending == {"a": 1}
