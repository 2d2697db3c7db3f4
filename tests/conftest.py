"""Shared fixtures: a real mosquitto on a free loopback port, loopback-only ICE, gpu marker."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:  # the AI server's store, imported by the fixture only: hub and device tests do not load it
    from ai_server.store import MediaStore


def pytest_configure(config: pytest.Config) -> None:
    """Nothing a test starts (in process or as a subprocess) may write into the user's data folder
    (~/.local/share/naila, /var/lib/naila as root): an AI server without AI_MEDIA_DIR of its own
    gets this session's temporary one."""
    if "AI_MEDIA_DIR" not in os.environ:
        os.environ["AI_MEDIA_DIR"] = tempfile.mkdtemp(prefix="naila-test-data-")
    # An AI server a test starts without naming AI_MQTT_CLIENT_ID gets a random id and a clean session
    # (the product default is the persistent "naila-ai-server"): see ai_server_share_group below.
    os.environ.setdefault("AI_MQTT_CLIENT_ID", "")


@pytest.fixture(autouse=True)
def ai_server_share_group(monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test's AI servers (in process, and the subprocesses naila.stack and tests/scale start,
    which copy os.environ) take chat requests and uploads through a shared-subscription group of the
    test's own, unless the test names one.

    The session-wide broker keeps the persistent sessions of AI servers that chose a fixed client id
    (tests/scale's, the delivery tests') after they stop, and mosquitto hands a shared subscription's
    messages round-robin to offline members too: in the default group "naila-ai" a later test's chat
    request or upload could be queued for a server that is gone, and time out."""
    group = f"test-{uuid.uuid4().hex[:12]}"
    monkeypatch.setenv("AI_MQTT_SHARE_GROUP", group)
    return group


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Broker:
    host: str
    port: int


def _wait_port(host: str, port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.settimeout(0.2)
            if s.connect_ex((host, port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {host}:{port} after {timeout}s")


@pytest.fixture(scope="session")
def mosquitto() -> Iterator[Broker]:
    """A real mosquitto broker on 127.0.0.1:<free port>, for the whole session."""
    exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not os.path.exists(exe):
        pytest.fail("mosquitto is not installed (apt-get install mosquitto); .ci/run installs it")
    port = free_port()
    tmp = Path(tempfile.mkdtemp(prefix="naila-mosq-"))
    conf = tmp / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
        "max_packet_size 104857600\nset_tcp_nodelay true\n"
    )
    proc = subprocess.Popen([exe, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_port("127.0.0.1", port, 10)
        yield Broker("127.0.0.1", port)
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture
def media_store(tmp_path: Path) -> Iterator[MediaStore]:
    """A media store in the test's folder, opened as the AI server opens its one store (the parts that
    use it, such as the vision pipeline, are given it and do not close it)."""
    from ai_server.store.home import StoreConfig, open_store

    store = open_store(StoreConfig(media_dir=str(tmp_path / "media")))
    yield store
    store.close()


@pytest.fixture
def loopback_ice(monkeypatch: pytest.MonkeyPatch) -> None:
    """Restrict aiortc host candidates to loopback (sandboxes have odd interfaces)."""
    import aioice.ice

    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda use_ipv4, use_ipv6: ["127.0.0.1"])


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    has_gpu = os.environ.get("NAILA_GPU") == "1"
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device (set NAILA_GPU=1 on one)")
    for item in items:
        if "gpu" in item.keywords and not has_gpu:
            item.add_marker(skip_gpu)
