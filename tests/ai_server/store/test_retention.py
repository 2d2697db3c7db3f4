"""Media store retention on a fixed clock: by age, by size (oldest first), crash leftovers, events outliving
their snapshots, transcripts by age, and the periodic task."""

from __future__ import annotations

import asyncio
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ai_server.store import MediaStore
from ai_server.store.retention import ORPHAN_AGE_S, Retention, RetentionPolicy, prune

pytestmark = pytest.mark.unit

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)


def _image(store: MediaStore, age: timedelta, size: int = 100, source: str = "alert_snapshot") -> str:
    return store.add(b"x" * size, source=source, media_type="image", format="jpeg",  # type: ignore[arg-type]
                     device_id="cam", zone="porch", time=NOW - age).id


def _event(store: MediaStore, age: timedelta, media_id: str | None) -> int:
    snap = None if media_id is None else store.root / "files" / f"{media_id}.jpeg"
    return store.events.add(time=NOW - age, device_id="cam", zone="porch", alert_type="person_detected",
                            label="person", confidence=0.9, track_id=1, outcome="alerted", media_id=media_id,
                            snapshot=snap).id


def _files(store: MediaStore) -> set[str]:
    return {p.name for p in store.files.iterdir()}


def _consistent(store: MediaStore) -> None:
    """No stored row without its file, no file without its stored row."""
    rows = {r.path.name for r in store.recent(10_000) if r.stored}
    assert rows == _files(store)
    for e in store.events.query(limit=10_000):
        assert (e.media_id is None) == (e.snapshot is None)
        if e.media_id is not None:
            record = store.get(e.media_id)
            assert record is not None and record.path.is_file()


@pytest.fixture
def store(tmp_path: Path) -> MediaStore:
    s = MediaStore(tmp_path / "media")
    yield s  # type: ignore[misc]
    s.close()


def test_media_older_than_the_limit_goes_with_its_file_and_the_event_keeps_its_row(store: MediaStore) -> None:
    old = _image(store, 31 * DAY)
    young = _image(store, 29 * DAY)
    old_event = _event(store, 31 * DAY, old)
    young_event = _event(store, 29 * DAY, young)
    pruned = prune(store, RetentionPolicy(media_days=30, max_bytes=0, history_days=365), NOW)
    assert pruned.counts["media_expired"] == 1 and pruned.bytes_freed == 100
    assert store.get(old) is None and store.get(young) is not None
    events = {e.id: e for e in store.events.query()}
    assert set(events) == {old_event, young_event}  # the event outlives its snapshot...
    assert events[old_event].media_id is None and events[old_event].snapshot is None  # ...and lets go of it
    assert events[young_event].media_id == young
    _consistent(store)


def test_over_the_size_limit_the_oldest_go_first_until_it_fits(store: MediaStore) -> None:
    ids = [_image(store, timedelta(hours=h), size=1000) for h in (5, 4, 3, 2, 1)]  # oldest first
    pruned = prune(store, RetentionPolicy(media_days=0, max_bytes=2500, history_days=0), NOW)
    assert pruned.counts["media_over_size"] == 3 and pruned.bytes_freed == 3000
    assert [store.get(i) is not None for i in ids] == [False, False, False, True, True]
    _consistent(store)
    # Under the limit: nothing more goes.
    assert prune(store, RetentionPolicy(media_days=0, max_bytes=2500, history_days=0), NOW).counts.total() == 0


def test_crash_leftovers_are_swept_orphans_temps_and_rows_without_files(store: MediaStore) -> None:
    kept = _image(store, DAY)
    gone = _image(store, DAY)
    (store.files / f"{gone}.jpeg").unlink()  # a row whose file vanished
    event = _event(store, DAY, gone)
    orphan = store.files / "deadbeef.jpeg"  # a file whose row was deleted before a crash
    temp = store.files / ".cafe.jpeg.tmp"  # an interrupted write
    fresh = store.files / ".f00d.jpeg.tmp"  # a write in progress right now: must survive
    for path in (orphan, temp, fresh):
        path.write_bytes(b"leftover")
    past = time.time() - ORPHAN_AGE_S - 5
    os.utime(orphan, (past, past))
    os.utime(temp, (past, past))
    pruned = prune(store, RetentionPolicy(), NOW, startup=True)
    assert pruned.counts["rows_without_file"] == 1
    assert pruned.counts["orphan_files_swept"] == 1 and pruned.counts["temp_files_swept"] == 1
    assert _files(store) == {f"{kept}.jpeg", fresh.name}
    assert store.get(gone) is None and store.events.query()[0].id == event
    assert store.events.query()[0].media_id is None


def test_events_and_transcripts_expire_by_history_age(store: MediaStore) -> None:
    _event(store, 400 * DAY, None)
    recent_event = _event(store, 10 * DAY, None)
    store.transcripts.add(time=NOW - 400 * DAY, device_id="kitchen", room="kitchen", thread="kitchen",
                          user_text="old question", reply_text="old answer")
    store.transcripts.add(time=NOW - 10 * DAY, device_id="kitchen", room="kitchen", thread="kitchen",
                          user_text="new question", reply_text="new answer")
    pruned = prune(store, RetentionPolicy(history_days=365), NOW)
    assert pruned.counts["events_expired"] == 1 and pruned.counts["transcripts_expired"] == 1
    assert [e.id for e in store.events.query()] == [recent_event]
    assert [t.user_text for t in store.transcripts.query()] == ["new question"]


async def test_the_task_runs_at_start_up_then_every_interval_and_counts(store: MediaStore) -> None:
    clock = [NOW]
    retention = Retention(store, RetentionPolicy(media_days=30, max_bytes=0), interval_s=3600,
                          now=lambda: clock[0])
    first = _image(store, 29 * DAY)
    assert retention.run_once(startup=True).counts.total() == 0
    clock[0] = NOW + 2 * DAY  # the fixed clock moves on: the item is 31 days old now
    assert retention.run_once().counts["media_expired"] == 1 and store.get(first) is None
    assert retention.metrics.runs == 2
    assert retention.metrics.snapshot()["store_pruned_media_expired"] == 1
    assert retention.metrics.snapshot()["store_pruned_bytes_freed"] == 100

    # The asyncio loop: its first pass is the start-up one, in a worker thread; cancelled cleanly.
    second = _image(store, 40 * DAY, size=7)
    task = asyncio.get_running_loop().create_task(retention.run())
    # The pass runs in a thread: yield until it has counted (no sleep-for-timing); the bound is
    # only there so a broken task fails the test instead of hanging it, on however busy a machine.
    async with asyncio.timeout(30):
        while retention.metrics.runs < 3:
            await asyncio.to_thread(lambda: None)
    assert retention.metrics.runs == 3 and store.get(second) is None
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def test_the_query_benchmark_helper_runs_small(tmp_path: Path) -> None:
    from bench.store_queries import query_times

    out = query_times(n=2000, repeats=5, root=tmp_path / "bench")
    assert out["events"] == 2000
    assert {"p50_ms", "p95_ms"} <= set(out["events_zone_hour"])  # type: ignore[arg-type]
