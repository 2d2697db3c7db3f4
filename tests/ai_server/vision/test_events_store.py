"""The event history table: the v1 -> v2 migration keeps the media index, and the queries."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ai_server.store import MediaStore
from ai_server.store.schema import MIGRATIONS, SCHEMA_VERSION

pytestmark = pytest.mark.unit

T0 = datetime(2026, 1, 15, 3, 0, tzinfo=UTC)


def test_a_v1_store_migrates_to_v2_and_keeps_its_media(tmp_path: Path) -> None:
    root = tmp_path / "media"
    (root / "files").mkdir(parents=True)
    (root / "files" / "abc.png").write_bytes(b"png")
    # A store exactly as the v1 code left it: the media table, one row, user_version 1.
    with sqlite3.connect(root / "media.sqlite3") as db:
        db.executescript(MIGRATIONS[0])
        db.execute(
            "INSERT INTO media VALUES ('abc', 'mqtt_upload', NULL, 's1', NULL, ?, 'image', 'png', 3, "
            "'files/abc.png', 'x', NULL)", (T0.isoformat(),))
        db.execute("PRAGMA user_version=1")
    store = MediaStore(root)
    try:
        with sqlite3.connect(root / "media.sqlite3") as db:
            assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION >= 3  # later versions add tables
        assert store.read("abc") == b"png"
        event = store.events.add(time=T0, device_id="door", zone="porch", alert_type="person_detected",
                                 label="person", confidence=0.8, track_id=3, outcome="alerted", media_id="abc",
                                 snapshot=root / "files" / "abc.png")
        assert store.events.query() == [event]
        assert event.snapshot == root / "files" / "abc.png"
    finally:
        store.close()
    reopened = MediaStore(root)  # already v2: nothing to do, nothing lost
    assert len(reopened.events.query()) == 1
    reopened.close()


def test_a_failed_migration_leaves_the_store_at_its_old_version(tmp_path: Path) -> None:
    root = tmp_path / "media"
    root.mkdir()
    with sqlite3.connect(root / "media.sqlite3") as db:
        db.executescript(MIGRATIONS[0])
        db.execute("CREATE TABLE events (x)")  # something in the way of v2
        db.execute("PRAGMA user_version=1")
    with pytest.raises(sqlite3.OperationalError):
        MediaStore(root)
    with sqlite3.connect(root / "media.sqlite3") as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 1


def test_events_are_queried_by_time_camera_zone_and_type(tmp_path: Path) -> None:
    store = MediaStore(tmp_path)
    rows = [
        ("door", "porch", "person_detected", 0),
        ("door", "porch", "car_detected", 10),
        ("yard", "lawn", "person_detected", 20),
        ("door", "drive", "person_detected", 30),
    ]
    for device, zone, kind, minutes in rows:
        store.events.add(time=T0 + timedelta(minutes=minutes), device_id=device, zone=zone, alert_type=kind,
                         label=kind.split("_")[0], confidence=0.7, track_id=1,
                         outcome="alerted" if minutes != 30 else "duplicate")
    q = store.events.query
    assert [e.zone for e in q()] == ["drive", "lawn", "porch", "porch"]  # newest first
    assert [e.alert_type for e in q(newest_first=False, limit=2)] == ["person_detected", "car_detected"]
    assert [e.zone for e in q(device_id="door")] == ["drive", "porch", "porch"]
    assert [e.alert_type for e in q(zone="porch")] == ["car_detected", "person_detected"]
    assert [e.device_id for e in q(alert_type="person_detected", since=T0 + timedelta(minutes=5))] == ["door", "yard"]
    assert [e.zone for e in q(since=T0 + timedelta(minutes=10), until=T0 + timedelta(minutes=30))] == ["lawn", "porch"]
    assert [e.zone for e in q(outcome="duplicate")] == ["drive"]
    # Times come back as aware UTC, whatever zone they were given in.
    local = datetime(2026, 1, 15, 4, 30, tzinfo=UTC).astimezone()
    added = store.events.add(time=local, device_id="d", zone="z", alert_type="t", label="t", confidence=1.0,
                             track_id=9, outcome="recorded")
    assert added.time.tzinfo is not None and added.time == local
    assert q(device_id="d")[0].time == local
    store.close()
