"""Finding H5: a 3 s broker outage (``kill -9``) exactly when a person enters a zone. The alert is
kept in the AI server's outbox and arrives after the reconnect, with the time it happened.

The test runs its own mosquitto on a free port (the session's broker is shared). The watcher has a
persistent session and the broker persistence, saved (SIGUSR1) before the kill, so the watcher's
subscription outlives the outage and nothing depends on who reconnects first."""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from pathlib import Path

import aiomqtt
import pytest

from ai_server.app import start_server
from ai_server.fakes import FakeLLM, FakeSTT, FakeTTS
from shared.config import AIServerSettings, MediaSettings, MqttSettings, load
from shared.contract import pb
from shared.mqtt import topics
from tests.ai_server.vision.conftest import ShapeDetector, person, scene
from tests.ai_server.vision.test_vision_service import analyze_paced
from tests.conftest import _wait_port, free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]


class Mosquitto:
    """One mosquitto process with persistence, restartable on the same port."""

    def __init__(self, where: Path) -> None:
        self.exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not os.path.exists(self.exe):
            pytest.fail("mosquitto is not installed (apt-get install mosquitto)")
        self.port = free_port()
        self.conf = where / "mosquitto.conf"
        self.conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
                             f"persistence_location {where}/\nautosave_interval 3600\n"
                             # as root mosquitto drops to its own user, which cannot write here
                             f"user {getpass.getuser()}\n")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen([self.exe, "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        _wait_port("127.0.0.1", self.port, 10)

    def save(self) -> None:
        """Write the persistence database now (the watcher's session and subscription)."""
        assert self.proc is not None
        db = self.conf.parent / "mosquitto.db"
        before = db.stat().st_mtime_ns if db.exists() else 0
        self.proc.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + 5
        while not (db.exists() and db.stat().st_mtime_ns != before):
            assert time.monotonic() < deadline, "mosquitto did not save its database"
            time.sleep(0.02)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()  # SIGKILL: no goodbye, no save
        self.proc.wait(5)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(5)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    m = Mosquitto(tmp_path)
    m.start()
    yield m
    m.stop()


class PersistentWatcher:
    """Reads ``naila/alerts/all`` with a persistent session, reconnecting until told to stop."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.alerts: asyncio.Queue[dict[str, object]] = asyncio.Queue()
        self.subscribed = asyncio.Event()
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            try:
                async with aiomqtt.Client("127.0.0.1", self.port, identifier="alert-watcher",
                                          clean_session=False) as client:
                    await client.subscribe(topics.ALERTS_ALL, qos=1)
                    self.subscribed.set()
                    async for msg in client.messages:
                        assert isinstance(msg.payload, bytes)
                        self.alerts.put_nowait(json.loads(msg.payload))
            except aiomqtt.MqttError:
                await asyncio.sleep(0.1)

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


@pytest.fixture
async def watcher(broker: Mosquitto) -> AsyncIterator[PersistentWatcher]:
    w = PersistentWatcher(broker.port)
    await asyncio.wait_for(w.subscribed.wait(), 10)
    yield w
    await w.close()


async def test_an_alert_decided_during_a_3_s_broker_outage_arrives_after_the_reconnect(
    broker: Mosquitto, watcher: PersistentWatcher, tmp_path: Path
) -> None:
    settings = load(AIServerSettings, ai_server_host="127.0.0.1", ai_mqtt=True, ai_mqtt_client_id="",
                    ai_media_dir=str(tmp_path / "data"))
    mqtt = load(MqttSettings, mqtt_host="127.0.0.1", mqtt_port=broker.port, mqtt_keepalive_s=5)
    server = await start_server(settings, port=0, host="127.0.0.1", warm=False, stt=FakeSTT(), llm=FakeLLM(),
                                tts=FakeTTS(), detector=ShapeDetector(), mqtt=mqtt, media=load(MediaSettings))
    try:
        assert server.control is not None and server.vision is not None
        await server.control.wait_connected(10)
        broker.save()
        broker.kill()
        killed = time.monotonic()
        # The person walks in while the broker is gone: the alert is decided now.
        frames = [pb.VisionFrame(device_id="gate", frame_id=i, jpeg=scene(person(20 + 6 * i, 120))) for i in range(5)]
        await analyze_paced(server.address, frames)
        await server.vision.drain()
        events = server.control.media.store.events.query(device_id="gate")
        assert [e.outcome for e in events] == ["queued"] and len(server.control.alerts.outbox) == 1
        await asyncio.sleep(max(0.0, 3.0 - (time.monotonic() - killed)))
        broker.start()  # the same port, its saved sessions
        alert = await asyncio.wait_for(watcher.alerts.get(), 30)
        assert (alert["source_device"], alert["zone"], alert["alert_type"]) == ("gate", "default", "person_detected")
        assert datetime.fromisoformat(str(alert["timestamp"]).replace("Z", "+00:00")) == events[0].time
        assert alert["snapshot_available"] is True  # the store was fine: only the broker was away
        for _ in range(100):  # the outbox lets go once both topics took it
            if not len(server.control.alerts.outbox):
                break
            await asyncio.sleep(0.05)
        assert len(server.control.alerts.outbox) == 0
        assert not (Path(settings.ai_media_dir) / "alerts-outbox.jsonl").exists()
    finally:
        await server.stop(grace=0)
