"""Timers and reminders on disk, so they ring after an AI server restart.

The tables (schema v4) live in the media store's database file (``media.sqlite3`` in the data
folder): one file to back up. This module opens its own connection (WAL lets it share the file
with the media store) because timers must work with ``AI_MQTT=false`` too, where no media store
is opened. Every call is a few-row statement: fast enough to run on the event loop.
"""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from ai_server.store.schema import migrate

DB_NAME = "media.sqlite3"


@dataclass(frozen=True, slots=True)
class TimerRow:
    id: str
    asker: str
    room: str
    name: str
    duration_s: float
    due: datetime | None  # None while paused
    left_s: float | None  # set while paused
    created: datetime


@dataclass(frozen=True, slots=True)
class ReminderRow:
    id: str
    asker: str
    room: str
    task: str
    due: datetime
    created: datetime


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat()


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text)


class AlarmStore:
    """The ``timers`` and ``reminders`` tables."""

    def __init__(self, root: Path | str) -> None:
        root = Path(root)
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(root / DB_NAME, check_same_thread=False, isolation_level=None)
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            migrate(self._db, str(root))
        except BaseException:
            self._db.close()
            raise

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # ---- timers ------------------------------------------------------------------------------

    def put_timer(self, row: TimerRow) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO timers (id, asker, room, name, duration_s, due, left_s, created) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (row.id, row.asker, row.room, row.name, row.duration_s,
                 None if row.due is None else _iso(row.due), row.left_s, _iso(row.created)),
            )

    def delete_timer(self, timer_id: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM timers WHERE id = ?", (timer_id,))

    def timers(self) -> list[TimerRow]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id, asker, room, name, duration_s, due, left_s, created FROM timers ORDER BY created"
            ).fetchall()
        return [TimerRow(r[0], r[1], r[2], r[3], float(r[4]), None if r[5] is None else _time(r[5]),
                         None if r[6] is None else float(r[6]), _time(r[7])) for r in rows]

    # ---- reminders ---------------------------------------------------------------------------

    def put_reminder(self, row: ReminderRow) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO reminders (id, asker, room, task, due, created) VALUES (?, ?, ?, ?, ?, ?)",
                (row.id, row.asker, row.room, row.task, _iso(row.due), _iso(row.created)),
            )

    def delete_reminder(self, reminder_id: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM reminders WHERE id = ?", (reminder_id,))

    def reminders(self) -> list[ReminderRow]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id, asker, room, task, due, created FROM reminders ORDER BY due"
            ).fetchall()
        return [ReminderRow(r[0], r[1], r[2], r[3], _time(r[4]), _time(r[5])) for r in rows]
