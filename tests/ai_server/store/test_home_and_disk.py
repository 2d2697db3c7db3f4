"""Where the store lives (M4), the free space kept for alerts, retention woken by size, and durable
writes (L6). Real files and SQLite in a temporary folder; no sleeps."""

from __future__ import annotations

import asyncio
import errno
import os
import stat
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from ai_server.store import MediaStore
from ai_server.store.home import SYSTEM_DATA_DIR, StoreConfig, default_data_dir, open_store, store_root
from ai_server.store.media import StoreFull
from ai_server.store.retention import Retention, RetentionPolicy

pytestmark = pytest.mark.unit


def _add(store: MediaStore, size: int = 100, when: datetime | None = None) -> str:
    return store.add(b"x" * size, source="alert_snapshot", media_type="image", format="jpeg", device_id="cam",
                     zone="porch", time=when).id


@pytest.mark.parametrize(("env", "euid", "expected"), [
    ({"HOME": "/home/ann", "XDG_DATA_HOME": "/data/ann"}, 0, SYSTEM_DATA_DIR),  # a system service
    ({"HOME": "/home/ann", "XDG_DATA_HOME": "/data/ann"}, 1000, Path("/data/ann/naila")),
    ({"HOME": "/home/ann"}, 1000, Path("/home/ann/.local/share/naila")),
    ({"HOME": "/home/ann", "XDG_DATA_HOME": "relative/dir"}, 1000, Path("/home/ann/.local/share/naila")),
])
def test_the_default_data_folder(env: dict[str, str], euid: int, expected: Path) -> None:
    assert default_data_dir(env, euid) == expected


def test_ai_media_dir_wins_and_an_empty_one_is_the_persistent_default(monkeypatch: pytest.MonkeyPatch,
                                                                      tmp_path: Path) -> None:
    assert store_root("~/x") == Path.home() / "x"
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    store = open_store(StoreConfig(media_dir=""))
    try:
        assert store.root == tmp_path / "xdg" / "naila"
        assert stat.S_IMODE(store.root.stat().st_mode) == 0o700  # the household's pictures and words
        media_id = _add(store)
    finally:
        store.close()
    again = open_store(StoreConfig(media_dir=""))  # a restart: everything is still there
    try:
        assert again.get(media_id) is not None and again.stored_bytes == 100
    finally:
        again.close()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[MediaStore]:
    s = MediaStore(tmp_path / "media")
    yield s
    s.close()


def test_a_write_that_would_eat_the_reserve_is_refused_and_metadata_still_fits(store: MediaStore) -> None:
    woken: list[bool] = []
    store.on_over_limit = lambda: woken.append(True)
    store.reserve_bytes = store.free_bytes() + 2**50  # the disk is "full": less free than the reserve
    with pytest.raises(StoreFull) as refused:
        _add(store)
    assert refused.value.errno == errno.ENOSPC and isinstance(refused.value, OSError)
    assert "AI_MEDIA_RESERVE_BYTES" in str(refused.value) and "\n" not in str(refused.value)
    assert list(store.files.iterdir()) == [] and store.recent() == [] and woken == [True]
    # What alerts need still goes in: event rows (and the outbox file next to the database).
    store.events.add(time=datetime.now(UTC), device_id="cam", zone="porch", alert_type="person_detected",
                     label="person", confidence=0.9, track_id=1, outcome="alerted")
    assert len(store.events.query()) == 1


def test_a_write_is_flushed_before_its_row_names_it(store: MediaStore, monkeypatch: pytest.MonkeyPatch) -> None:
    order: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        target = Path(os.readlink(f"/proc/self/fd/{fd}"))
        order.append("fsync dir" if target.is_dir() else f"fsync {target.name}")
        real_fsync(fd)

    def replace(src: Any, dst: Any) -> None:
        order.append(f"rename {Path(src).name} -> {Path(dst).name}")
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    media_id = _add(store)
    name = f"{media_id}.jpeg"
    assert order == [f"fsync .{name}.tmp", f"rename .{name}.tmp -> {name}", "fsync dir"]
    assert (store.files / name).read_bytes() == b"x" * 100


async def test_retention_runs_as_soon_as_the_store_passes_its_size_limit(tmp_path: Path) -> None:
    store = MediaStore(tmp_path / "media", limit_bytes=250)
    retention = Retention(store, RetentionPolicy(media_days=0, max_bytes=250), interval_s=3600)
    task = asyncio.get_running_loop().create_task(retention.run())
    try:
        for _ in range(200):  # the start-up pass (in a worker thread)
            if retention.metrics.runs == 1:
                break
            await asyncio.to_thread(lambda: None)
        old = [_add(store, when=datetime.now(UTC) - timedelta(minutes=10 - i)) for i in range(3)]  # 300 > 250
        for _ in range(500):  # woken by the write, not by the hour-long timer
            if retention.metrics.runs == 2:
                break
            await asyncio.to_thread(lambda: None)
        assert retention.metrics.runs == 2
        assert store.get(old[0]) is None and store.get(old[2]) is not None and store.stored_bytes == 200
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        store.close()


async def test_with_the_control_plane_off_retention_still_runs(make_server: Any, tmp_path: Path) -> None:
    """AI_MQTT=false: the vision's store is the only one, and its retention runs from start-up."""
    from tests.ai_server.vision.conftest import ShapeDetector

    data = tmp_path / "data"
    seed = MediaStore(data)
    stale = _add(seed, when=datetime.now(UTC) - timedelta(days=40))
    seed.close()
    server = await make_server(detector=ShapeDetector(),
                               settings={"ai_mqtt": False, "ai_media_dir": str(data), "ai_media_retention_days": 30})
    assert server.control is None and server.vision is not None
    store = server.vision.store()
    assert store.root == data
    for _ in range(500):
        if store.get(stale) is None:
            break
        await asyncio.to_thread(lambda: None)
    assert store.get(stale) is None and list(store.files.iterdir()) == []
