"""The store's SQLite schema, one migration per version, applied in order on open.

Why numbered migrations in ``PRAGMA user_version`` and not ``CREATE TABLE IF NOT EXISTS``
alone: a table that gains a column later needs an ``ALTER`` that must run exactly once, and a
store written by a newer server must be refused rather than half understood. Each step runs in
one transaction together with its version bump, so a crash leaves the previous version intact.
"""

from __future__ import annotations

import sqlite3
from typing import Final

#: ``MIGRATIONS[n]`` brings a store from version ``n`` to ``n + 1``.
MIGRATIONS: Final[tuple[str, ...]] = (
    # v1: the media index (uploads, device clips, alert snapshots).
    """
    CREATE TABLE IF NOT EXISTS media (
        id          TEXT PRIMARY KEY,
        source      TEXT NOT NULL,
        device_id   TEXT,
        session_id  TEXT,
        zone        TEXT,
        time        TEXT NOT NULL,     -- ISO-8601 UTC; sorts as text
        media_type  TEXT NOT NULL,
        format      TEXT NOT NULL,
        size        INTEGER NOT NULL,
        path        TEXT NOT NULL,     -- relative to the store root
        sha256      TEXT NOT NULL,
        analysis    TEXT               -- JSON object, NULL until something analysed it
    );
    CREATE INDEX IF NOT EXISTS media_by_time ON media (time);
    CREATE INDEX IF NOT EXISTS media_by_device ON media (device_id, time);
    """,
    # v2: vision event history (ai_server.store.events): "what did the front door camera see at 3am".
    """
    CREATE TABLE events (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        time        TEXT NOT NULL,     -- ISO-8601 UTC capture time of the frame; sorts as text
        device_id   TEXT NOT NULL,     -- the camera
        zone        TEXT NOT NULL,
        alert_type  TEXT NOT NULL,     -- e.g. person_detected
        label       TEXT NOT NULL,     -- the detector's class name
        confidence  REAL NOT NULL,
        track_id    INTEGER NOT NULL,  -- per camera
        outcome     TEXT NOT NULL,     -- alerted | recorded | duplicate | overlap | unpublished
        media_id    TEXT,              -- the snapshot in the media table, if one was stored
        snapshot    TEXT               -- the snapshot's path relative to the store root
    );
    CREATE INDEX events_by_time ON events (time);
    CREATE INDEX events_by_device ON events (device_id, time);
    CREATE INDEX events_by_zone ON events (zone, time);
    """,
    # v3: conversation transcripts ("what was I asking about yesterday"), whether a media row still
    # has its file (raw audio is transcribed and dropped, spec §14.3), and the index retention needs
    # to clear the snapshot references of pruned media in one statement.
    """
    CREATE TABLE transcripts (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        time        TEXT NOT NULL,     -- ISO-8601 UTC end of the exchange; sorts as text
        device_id   TEXT NOT NULL,     -- the device spoken to, or chat:<session>:<conversation>
        room        TEXT NOT NULL,     -- '' when unknown (typed chat without speak_on)
        thread      TEXT NOT NULL,     -- the history key: a device's thread may move to another room
        channel     TEXT NOT NULL,     -- voice | chat
        user_text   TEXT NOT NULL,
        reply_text  TEXT NOT NULL
    );
    CREATE INDEX transcripts_by_time ON transcripts (time);
    ALTER TABLE media ADD COLUMN stored INTEGER NOT NULL DEFAULT 1;  -- 0: row kept, file dropped
    CREATE INDEX events_by_media ON events (media_id);
    """,
    # v4: assist timers and reminders (ai_server.store.timers): they must ring after a restart, so
    # each keeps its absolute due time; a paused timer keeps what was left instead.
    """
    CREATE TABLE timers (
        id          TEXT PRIMARY KEY,
        asker       TEXT NOT NULL,     -- the device that set it, or chat:<session>
        room        TEXT NOT NULL,     -- '' when unknown
        name        TEXT NOT NULL,     -- '' for an unnamed timer
        duration_s  REAL NOT NULL,     -- as set, changed by add/remove time
        due         TEXT,              -- ISO-8601 UTC while running; NULL while paused
        left_s      REAL,              -- seconds left while paused; NULL while running
        created     TEXT NOT NULL      -- ISO-8601 UTC
    );
    CREATE INDEX timers_by_asker ON timers (asker);
    CREATE TABLE reminders (
        id          TEXT PRIMARY KEY,
        asker       TEXT NOT NULL,
        room        TEXT NOT NULL,
        task        TEXT NOT NULL,     -- what to remind of ("take out the trash")
        due         TEXT NOT NULL,     -- ISO-8601 UTC
        created     TEXT NOT NULL
    );
    CREATE INDEX reminders_by_asker ON reminders (asker, due);
    """,
)

SCHEMA_VERSION: Final = len(MIGRATIONS)


def migrate(db: sqlite3.Connection, where: str) -> int:
    """Bring ``db`` (autocommit mode) up to :data:`SCHEMA_VERSION`; returns the version it had.

    Raises ``RuntimeError`` for a store newer than this code (a downgrade would lose data).
    """
    version = int(db.execute("PRAGMA user_version").fetchone()[0])
    if version > SCHEMA_VERSION:
        raise RuntimeError(f"media store {where} has schema {version}, newer than this code's ({SCHEMA_VERSION})")
    for target in range(version + 1, SCHEMA_VERSION + 1):
        # executescript commits anything pending first, then runs the script as written: the
        # explicit BEGIN/COMMIT makes the step and its version bump one transaction.
        try:
            db.executescript(f"BEGIN IMMEDIATE;\n{MIGRATIONS[target - 1]}\nPRAGMA user_version={target};\nCOMMIT;")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
    return version
