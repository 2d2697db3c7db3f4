"""Retention of the media store, enforced: by age, by total size of files, raw audio, crash leftovers.

What goes, per run (:func:`prune`), oldest first:

* media (files and their rows together) older than ``media_days``;
* then, while the files still kept add up to more than ``max_bytes``, the oldest media;
* the file of raw audio not claimed by a transcription within ``AUDIO_GRACE_S`` (spec §14.3),
  unless ``keep_raw_audio`` (the row stays, ``stored`` = 0: it holds the transcript);
* events and transcripts (rows only, text) older than ``history_days``: an event may outlive
  its snapshot, whose reference is then cleared (``media_id``/``snapshot`` NULL), so no row ever
  names a missing file;
* files older than ``ORPHAN_AGE_S`` that no stored row claims: temporaries of an interrupted
  write, and orphans of a crash between deleting a row and its file; at start-up also rows whose
  file vanished (one stat per row, so only then).

Rows are deleted first (one transaction), files after: a crash in between leaves orphan files,
which the next start-up sweep removes, never a row pointing at nothing.

:class:`Retention` runs :func:`prune` at start-up and then every ``interval_s`` in a worker
thread, on an injected wall clock; tests call :meth:`Retention.run_once` with a fixed one. It also
runs at once when the store says so (``MediaStore.on_over_limit``: its files passed ``max_bytes``,
or a write was refused for want of space), not an hour later.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import threading
import time
from collections import Counter as Tally
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

from prometheus_client import CollectorRegistry, Counter

from ai_server.store.media import AUDIO_GRACE_S, MediaStore
from shared.aio import wait_event

log = logging.getLogger(__name__)

#: A file no row claims is only removed this old (its mtime, real time): younger, it may be a write
#: in progress (``MediaStore.add`` writes the file before its row).
ORPHAN_AGE_S: Final = 60.0
_CHUNK: Final = 500  # ids per statement (SQLite's parameter limit is 32766; small keeps the lock short)


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    media_days: float = 30.0  # AI_MEDIA_RETENTION_DAYS; 0 = no age limit
    max_bytes: int = 2 * 1024**3  # AI_MEDIA_MAX_BYTES; 0 = no size limit
    history_days: float = 365.0  # AI_HISTORY_RETENTION_DAYS (events, transcripts); 0 = no limit
    audio_grace_s: float = AUDIO_GRACE_S


@dataclass(slots=True)
class Pruned:
    """What one run removed; ``counts`` keys are the metric labels."""

    counts: Tally[str] = field(default_factory=Tally)
    bytes_freed: int = 0

    def line(self) -> str:
        parts = [f"{k}={v}" for k, v in sorted(self.counts.items()) if v]
        return (", ".join(parts) or "nothing") + f"; {self.bytes_freed} bytes freed"


def prune(store: MediaStore, policy: RetentionPolicy, now: datetime, *, startup: bool = False) -> Pruned:
    """One retention pass over ``store`` at ``now`` (tz-aware); see the module doc. Blocking."""
    out = Pruned()
    doomed: list[Path] = []
    with store.locked() as db:
        db.execute("BEGIN IMMEDIATE")
        try:
            if startup:
                _vanished(store, db, out)
            if policy.media_days > 0:
                cutoff = _iso(now - timedelta(days=policy.media_days))
                rows = db.execute("SELECT id, path, size, stored FROM media WHERE time < ?", (cutoff,)).fetchall()
                _drop_media(store, db, rows, doomed, out, "media_expired")
            if policy.max_bytes > 0:
                total = int(db.execute("SELECT coalesce(sum(size), 0) FROM media WHERE stored = 1").fetchone()[0])
                if total > policy.max_bytes:
                    rows = []
                    oldest = "SELECT id, path, size, stored FROM media WHERE stored = 1 ORDER BY time, id"
                    for row in db.execute(oldest):
                        rows.append(row)
                        total -= int(row[2])
                        if total <= policy.max_bytes:
                            break
                    _drop_media(store, db, rows, doomed, out, "media_over_size")
            if not store.keep_raw_audio:
                cutoff = _iso(now - timedelta(seconds=policy.audio_grace_s))
                rows = db.execute("SELECT id, path, size FROM media WHERE media_type = 'audio' AND stored = 1 "
                                  "AND time < ?", (cutoff,)).fetchall()
                for ids in _chunks([str(r[0]) for r in rows]):
                    db.execute(f"UPDATE media SET stored = 0 WHERE id IN ({_marks(ids)})", ids)
                doomed += [store.root / str(r[1]) for r in rows]
                out.counts["raw_audio_dropped"] += len(rows)
                out.bytes_freed += sum(int(r[2]) for r in rows)
            if policy.history_days > 0:
                cutoff = _iso(now - timedelta(days=policy.history_days))
                out.counts["events_expired"] += db.execute("DELETE FROM events WHERE time < ?", (cutoff,)).rowcount
                out.counts["transcripts_expired"] += db.execute(
                    "DELETE FROM transcripts WHERE time < ?", (cutoff,)).rowcount
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        claimed = {str(r[0]) for r in db.execute("SELECT path FROM media WHERE stored = 1")}
    for path in doomed:
        path.unlink(missing_ok=True)
    _sweep(store, claimed, out, min_age_s=ORPHAN_AGE_S)
    return out


def _drop_media(store: MediaStore, db: sqlite3.Connection, rows: list[tuple[object, ...]], doomed: list[Path],
                out: Pruned, why: str) -> None:
    """Delete media rows (and clear the events' references to them); their files go after commit."""
    ids = [str(r[0]) for r in rows]
    for chunk in _chunks(ids):
        db.execute(f"UPDATE events SET media_id = NULL, snapshot = NULL WHERE media_id IN ({_marks(chunk)})", chunk)
        db.execute(f"DELETE FROM media WHERE id IN ({_marks(chunk)})", chunk)
    for _id, rel, size, stored in rows:
        if stored:
            doomed.append(store.root / str(rel))
            out.bytes_freed += int(str(size))
    out.counts[why] += len(ids)


def _vanished(store: MediaStore, db: sqlite3.Connection, out: Pruned) -> None:
    """Rows whose file is gone (deleted by hand, a disk error): the row goes, events let go of it."""
    rows = [r for r in db.execute("SELECT id, path, size, stored FROM media WHERE stored = 1")
            if not (store.root / str(r[1])).is_file()]
    if rows:
        _drop_media(store, db, [(r[0], r[1], 0, 0) for r in rows], [], out, "rows_without_file")


def _sweep(store: MediaStore, claimed: set[str], out: Pruned, *, min_age_s: float) -> None:
    """Files under ``files/`` no stored row claims (orphans) and leftover temporaries."""
    horizon = time.time() - min_age_s  # file times are real time, whatever the injected clock says
    with os.scandir(store.files) as entries:
        for entry in entries:
            if not entry.is_file(follow_symlinks=False):
                continue
            rel = f"files/{entry.name}"
            if rel in claimed:
                continue
            try:
                st = entry.stat(follow_symlinks=False)
                if st.st_mtime > horizon:
                    continue
                os.unlink(entry.path)
            except FileNotFoundError:
                continue
            kind = "temp_files_swept" if entry.name.endswith(".tmp") else "orphan_files_swept"
            out.counts[kind] += 1
            out.bytes_freed += st.st_size


def _iso(when: datetime) -> str:
    return when.astimezone(UTC).isoformat()


def _marks(ids: list[str]) -> str:
    return ", ".join("?" * len(ids))


def _chunks(ids: list[str]) -> Iterable[list[str]]:
    for i in range(0, len(ids), _CHUNK):
        yield ids[i : i + _CHUNK]


class RetentionMetrics:
    """``naila_ai_store_pruned{what}`` in the server's registry, plus a readable tally (GetStatus, tests)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self._pruned = Counter("naila_ai_store_pruned", "Items removed from the media store by retention",
                               ["what"], registry=registry or CollectorRegistry())
        self._lock = threading.Lock()
        self.pruned: Tally[str] = Tally()
        self.runs = 0

    def add(self, pruned: Pruned) -> None:
        with self._lock:
            self.runs += 1
            self.pruned.update(pruned.counts)
            self.pruned["bytes_freed"] += pruned.bytes_freed
        for what, n in pruned.counts.items():
            if n:
                self._pruned.labels(what).inc(n)

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return {f"store_pruned_{k}": v for k, v in self.pruned.items()}


class Retention:
    """Runs :func:`prune` at start-up and every ``interval_s``; see the module doc."""

    def __init__(self, store: MediaStore, policy: RetentionPolicy, *, interval_s: float = 3600.0,
                 now: Callable[[], datetime] = lambda: datetime.now(UTC),
                 metrics: RetentionMetrics | None = None) -> None:
        self.store = store
        self.policy = policy
        self.interval_s = interval_s
        self.now = now
        self.metrics = metrics or RetentionMetrics()

    def run_once(self, *, startup: bool = False) -> Pruned:
        started = time.perf_counter()
        pruned = prune(self.store, self.policy, self.now(), startup=startup)
        self.store.recount()
        self.metrics.add(pruned)
        log.info("media store retention%s: %s (%.0f ms)", " at start-up" if startup else "", pruned.line(),
                 (time.perf_counter() - started) * 1000)
        return pruned

    async def run(self) -> None:
        """Forever, until cancelled; a failed pass is logged and the next one tries again."""
        loop = asyncio.get_running_loop()
        wake = asyncio.Event()

        def over_limit() -> None:  # called from a writer's thread
            loop.call_soon_threadsafe(wake.set)

        self.store.on_over_limit = over_limit
        startup = True
        try:
            while True:
                wake.clear()
                try:
                    await asyncio.to_thread(self.run_once, startup=startup)
                    startup = False
                except Exception:
                    log.exception("media store retention failed")
                await wait_event(wake, self.interval_s)  # shared.aio: not wait_for (3.11 cancel bug)
        finally:
            if self.store.on_over_limit is over_limit:
                self.store.on_over_limit = None
