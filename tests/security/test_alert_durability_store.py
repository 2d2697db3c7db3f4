"""Finding H5: the alert of a person entering a zone goes out on the real mosquitto although storing
its snapshot fails: a full disk (ENOSPC at the store's boundary) or a database another process holds
locked (a real ``BEGIN EXCLUSIVE``). It arrives at once, with ``snapshot_available: false``."""

from __future__ import annotations

import errno
import json
import sqlite3
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from ai_server.app import AIServer, start_server
from ai_server.fakes import FakeLLM, FakeSTT, FakeTTS
from shared.config import AIServerSettings, MediaSettings, MqttSettings, load
from shared.contract import pb
from shared.mqtt import topics
from tests.ai_server.control.conftest import Watch, uid
from tests.ai_server.vision.conftest import ShapeDetector, person, scene
from tests.ai_server.vision.test_vision_service import analyze_paced
from tests.conftest import Broker

pytestmark = pytest.mark.integration


@pytest.fixture
async def server(mosquitto: Broker, tmp_path: Path) -> AsyncIterator[AIServer]:
    settings = load(AIServerSettings, ai_server_host="127.0.0.1", ai_mqtt=True, ai_mqtt_client_id="",
                    ai_media_dir=str(tmp_path / "data"))
    mqtt = load(MqttSettings, mqtt_host=mosquitto.host, mqtt_port=mosquitto.port, mqtt_keepalive_s=5)
    s = await start_server(settings, port=0, host="127.0.0.1", warm=False, stt=FakeSTT(), llm=FakeLLM(),
                           tts=FakeTTS(), detector=ShapeDetector(), mqtt=mqtt, media=load(MediaSettings))
    assert s.control is not None
    await s.control.wait_connected(10)
    yield s
    await s.stop(grace=0)


@pytest.fixture
async def watch(mosquitto: Broker) -> AsyncIterator[Watch]:
    async with aiomqtt.Client(mosquitto.host, mosquitto.port, identifier=uid("watch")) as client:
        w = Watch(client)
        yield w
        await w.close()


@pytest.fixture
def locked_database(server: AIServer) -> Iterator[None]:
    """Another process's view: a connection of its own holding the store's database exclusively."""
    assert server.control is not None
    other = sqlite3.connect(server.control.media.store.root / "media.sqlite3", isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    yield
    other.execute("ROLLBACK")
    other.close()


def disk_full(server: AIServer, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_space(*_a: Any, **_kw: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    assert server.control is not None
    monkeypatch.setattr(server.control.media.store, "add", no_space)


async def walk_in(server: AIServer, camera: str, watch: Watch) -> tuple[dict[str, Any], float]:
    """A person walks into ``camera``'s view (its one zone, "default"); returns the alert and how long it took."""
    topic = topics.alert("default", "person_detected")
    await watch.subscribe(topic)
    frames = [pb.VisionFrame(device_id=camera, frame_id=i, jpeg=scene(person(20 + 6 * i, 120))) for i in range(5)]
    started = time.monotonic()
    await analyze_paced(server.address, frames)
    while True:
        payload = (await watch.next(topic, within_s=5.0)).payload
        assert isinstance(payload, bytes)
        alert = json.loads(payload)
        if alert["source_device"] == camera:
            return alert, time.monotonic() - started


async def test_a_full_disk_does_not_stop_the_alert(server: AIServer, watch: Watch,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    disk_full(server, monkeypatch)
    camera = uid("yard")
    alert, took = await walk_in(server, camera, watch)
    assert alert["snapshot_available"] is False and took < 5.0
    assert server.control is not None and server.vision is not None
    await server.vision.drain()
    assert server.control.metrics.events["alert_snapshot_failed"] == 1
    events = server.control.media.store.events.query(device_id=camera)
    assert [(e.outcome, e.media_id) for e in events] == [("alerted", None)]  # recorded, without a snapshot


@pytest.mark.usefixtures("locked_database")
async def test_a_locked_database_does_not_stop_the_alert(server: AIServer, watch: Watch) -> None:
    camera = uid("porch")
    alert, took = await walk_in(server, camera, watch)
    # SQLite waits 5 s for a lock; the alert waits at most its snapshot budget (1 s).
    assert alert["snapshot_available"] is False and took < 5.0
    assert server.control is not None
    assert server.control.metrics.events["alert_snapshot_slow"] == 1


async def test_below_the_free_space_reserve_media_is_refused_and_the_alert_goes_out(
    server: AIServer, watch: Watch
) -> None:
    assert server.control is not None
    store = server.control.media.store
    # The disk is as full as AI_MEDIA_RESERVE_BYTES allows (a reserve far above any free space: other
    # processes on this machine free and fill the disk meanwhile).
    store.reserve_bytes = store.free_bytes() + 2**50
    camera = uid("drive")
    alert, took = await walk_in(server, camera, watch)
    assert alert["snapshot_available"] is False and took < 5.0
    assert server.vision is not None
    await server.vision.drain()
    assert [e.outcome for e in store.events.query(device_id=camera)] == ["alerted"]  # the row still fits
