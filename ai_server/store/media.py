"""The media store: accepted uploads, device clips and alert snapshots, as files plus one SQLite table.

Why SQLite (stdlib ``sqlite3``) and plain files: the AI server is a single process on one
machine; a table answers "the last alert from the backyard" (spec §8.8) without a database
server, and blobs stay out of it so the table stays small and a file can be streamed or
deleted on its own.

Layout under ``root``::

    media.sqlite3          the ``media`` and ``events`` tables (schema version in PRAGMA user_version,
                           migrations in :mod:`ai_server.store.schema`)
    files/<id>.<format>    the bytes, written to a temporary name, fsync'd, renamed into place, and the
                           folder fsync'd, all before the row is inserted: after a power cut a row
                           never names an empty or missing file (finding L6)

Disk space (finding H5): a write that would leave less than ``reserve_bytes`` free on the store's
file system is refused with :class:`StoreFull` (an ``OSError``, ENOSPC), so alert metadata (the
outbox, event rows) still fits when uploads or recordings fill the disk. Retention is asked to run
(``on_over_limit``) as soon as the files pass ``limit_bytes`` or a write is refused for space, not
only on its timer.

Raw audio (spec §14.3, §15.3: no raw audio persistence): unless ``keep_raw_audio``, an audio
item's file lives only until it is transcribed. It is written (STT reads it from disk), and
dropped as soon as a ``transcript`` is attached (:meth:`MediaStore.set_analysis`, or ``analysis``
given to :meth:`MediaStore.add`, which then writes no file at all), or by :meth:`release_audio`,
or by the retention sweep once it is ``AUDIO_GRACE_S`` old (a format STT cannot read, a failed
transcription). The row stays, with ``stored`` false: the transcript and metadata are the record.

Every method is blocking (disk I/O, up to the 50 MB upload limit): call it through
``asyncio.to_thread`` from the event loop. One connection is shared behind a lock, so the
store is safe to use from several worker threads.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Final, Literal

from ai_server.store.events import EventStore
from ai_server.store.schema import SCHEMA_VERSION, migrate
from ai_server.store.transcripts import TranscriptStore
from shared.mqtt import topics
from shared.mqtt.fields import MediaType

__all__ = ["SCHEMA_VERSION", "MediaRecord", "MediaSource", "MediaStore", "StoreFull"]

log = logging.getLogger(__name__)

#: Where a stored item came from (spec §8.11 source types, plus device clips and alerts).
MediaSource = Literal["mqtt_upload", "mqtt_snapshot", "mqtt_recording", "alert_snapshot"]

_COLUMNS: Final = (
    "id, source, device_id, session_id, zone, time, media_type, format, size, path, sha256, analysis, stored"
)
#: How long an untranscribed raw audio file may wait for its transcription before the sweep drops it.
AUDIO_GRACE_S: Final = 600.0


class StoreFull(OSError):
    """A media write would eat into the free space kept for alerts (AI_MEDIA_RESERVE_BYTES)."""

    def __init__(self, detail: str) -> None:
        super().__init__(errno.ENOSPC, detail)

    def __str__(self) -> str:
        return str(self.strerror)


@dataclass(frozen=True, slots=True)
class MediaRecord:
    """One row of the ``media`` table; ``path`` is absolute, and exists only while ``stored``."""

    id: str
    source: str
    device_id: str | None
    session_id: str | None
    zone: str | None
    time: datetime
    media_type: str
    format: str
    size: int
    path: Path
    sha256: str
    analysis: dict[str, object] | None
    stored: bool = True  # False: the file was dropped (raw audio after STT); the row is the record


class MediaStore:
    """Files on disk plus a ``media`` table; see the module doc.

    ``events`` is the vision event history in the same database file, behind the same lock: an
    event points at its snapshot row, and one file is one thing to back up or move.
    """

    def __init__(self, root: Path | str, *, keep_raw_audio: bool = False, reserve_bytes: int = 0,
                 limit_bytes: int = 0) -> None:
        self.root = Path(root)
        self.keep_raw_audio = keep_raw_audio
        self.reserve_bytes = reserve_bytes
        self.limit_bytes = limit_bytes  # AI_MEDIA_MAX_BYTES: past it, on_over_limit (0: never)
        #: Called (from the writing thread) when retention should run now: set by Retention.
        self.on_over_limit: Callable[[], None] | None = None
        self.files = self.root / "files"
        self.files.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.root / "media.sqlite3", check_same_thread=False, isolation_level=None)
        try:
            # WAL: readers (a history query) do not block the writer storing an upload.
            self._db.execute("PRAGMA journal_mode=WAL")
            migrate(self._db, str(self.root))
        except BaseException:
            self._db.close()
            raise
        self.events = EventStore(self._db, self._lock, self.root)
        self.transcripts = TranscriptStore(self._db, self._lock)
        self.stored_bytes = self._sum_stored()  # kept up to date by add; recounted by retention

    def _sum_stored(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT coalesce(sum(size), 0) FROM media WHERE stored = 1").fetchone()[0])

    def recount(self) -> None:
        """Re-read the size of the files kept (after retention deleted some)."""
        self.stored_bytes = self._sum_stored()

    def free_bytes(self) -> int:
        st = os.statvfs(self.root)
        return st.f_bavail * st.f_frsize

    def _over_limit(self) -> None:
        if self.on_over_limit is not None:
            try:
                self.on_over_limit()
            except Exception:  # a closed event loop at shutdown: the timer still runs retention
                log.debug("could not wake retention", exc_info=True)

    def _check_space(self, size: int) -> None:
        if self.reserve_bytes <= 0:
            return
        free = self.free_bytes()
        if free - size < self.reserve_bytes:
            self._over_limit()  # retention may free space for the next one
            raise StoreFull(f"not stored: {size} bytes would leave {max(0, free - size)} bytes free on the store's "
                            f"disk, under the {self.reserve_bytes} kept for alerts (AI_MEDIA_RESERVE_BYTES)")
    @contextmanager
    def locked(self) -> Iterator[sqlite3.Connection]:
        """The connection, under the store's lock (retention's multi-table statements)."""
        with self._lock:
            yield self._db

    def add(
        self,
        data: bytes,
        *,
        source: MediaSource,
        media_type: MediaType,
        format: str,
        device_id: str | None = None,
        session_id: str | None = None,
        zone: str | None = None,
        time: datetime | None = None,
        analysis: dict[str, object] | None = None,
    ) -> MediaRecord:
        """Write ``data`` and its row; returns the record. Nothing is left behind if either fails."""
        # The format becomes a file extension: only a safe segment may (it is a whitelisted token anyway).
        topics.check_segment(format, "format")
        media_id = uuid.uuid4().hex
        rel = Path("files") / f"{media_id}.{format}"
        path = self.root / rel
        # Audio that arrives already transcribed is never written unless raw audio is kept.
        stored = not (self._drops_audio(media_type) and _has_transcript(analysis))
        if stored:
            self._check_space(len(data))
            _write_durably(path, data)
        when = (time or datetime.now(UTC)).astimezone(UTC)
        record = MediaRecord(
            id=media_id,
            source=source,
            device_id=device_id,
            session_id=session_id,
            zone=zone,
            time=when,
            media_type=media_type,
            format=format,
            size=len(data),
            path=path,
            sha256=hashlib.sha256(data).hexdigest(),
            analysis=analysis,
            stored=stored,
        )
        try:
            with self._lock:
                self._db.execute(
                    f"INSERT INTO media ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        record.id,
                        record.source,
                        device_id,
                        session_id,
                        zone,
                        when.isoformat(),
                        media_type,
                        format,
                        record.size,
                        rel.as_posix(),
                        record.sha256,
                        None if analysis is None else json.dumps(analysis),
                        int(stored),
                    ),
                )
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        if stored:
            self.stored_bytes += len(data)
            if 0 < self.limit_bytes < self.stored_bytes:
                self._over_limit()
        return record

    def get(self, media_id: str) -> MediaRecord | None:
        with self._lock:
            row = self._db.execute(f"SELECT {_COLUMNS} FROM media WHERE id = ?", (media_id,)).fetchone()
        return None if row is None else self._record(row)

    def read(self, media_id: str) -> bytes:
        """The stored bytes; raises ``KeyError`` for an unknown id or an item whose file was dropped."""
        record = self.get(media_id)
        if record is None or not record.stored:
            raise KeyError(media_id)
        return record.path.read_bytes()

    def recent(
        self, limit: int = 20, *, source: MediaSource | None = None, device_id: str | None = None
    ) -> list[MediaRecord]:
        """Newest first, optionally only one source and/or one device."""
        where: list[str] = []
        args: list[str] = []
        if source is not None:
            where.append("source = ?")
            args.append(source)
        if device_id is not None:
            where.append("device_id = ?")
            args.append(device_id)
        sql = f"SELECT {_COLUMNS} FROM media"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY time DESC LIMIT ?"
        with self._lock:
            rows = self._db.execute(sql, (*args, limit)).fetchall()
        return [self._record(r) for r in rows]

    def set_analysis(self, media_id: str, analysis: dict[str, object]) -> None:
        """Attach (replace) the analysis JSON of an item; raises ``KeyError`` for an unknown id.

        A transcript attached to raw audio ends that audio's file (see the module doc).
        """
        with self._lock:
            cur = self._db.execute("UPDATE media SET analysis = ? WHERE id = ?", (json.dumps(analysis), media_id))
        if cur.rowcount == 0:
            raise KeyError(media_id)
        if _has_transcript(analysis):
            self.release_audio(media_id)

    def release_audio(self, media_id: str) -> MediaRecord | None:
        """Done with an audio item (transcribed, or STT gave up): drop its file unless raw audio is kept.

        Returns the record as it is now (None for an unknown id). Row first, then the file: a
        crash in between leaves an orphan file, which the start-up sweep removes, never a row
        that claims a missing file.
        """
        record = self.get(media_id)
        if record is None or not record.stored or not self._drops_audio(record.media_type):
            return record
        with self._lock:
            self._db.execute("UPDATE media SET stored = 0 WHERE id = ?", (media_id,))
        record.path.unlink(missing_ok=True)
        return replace(record, stored=False)

    def _drops_audio(self, media_type: str) -> bool:
        return media_type == "audio" and not self.keep_raw_audio

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _record(self, row: tuple[object, ...]) -> MediaRecord:
        (media_id, source, device_id, session_id, zone, when, media_type, fmt, size, rel, sha, analysis, stored) = row
        return MediaRecord(
            id=str(media_id),
            source=str(source),
            device_id=_opt(device_id),
            session_id=_opt(session_id),
            zone=_opt(zone),
            time=datetime.fromisoformat(str(when)),
            media_type=str(media_type),
            format=str(fmt),
            size=int(str(size)),
            path=self.root / str(rel),
            sha256=str(sha),
            analysis=None if analysis is None else json.loads(str(analysis)),
            stored=bool(stored),
        )


def _write_durably(path: Path, data: bytes) -> None:
    """Temporary file, fsync, rename, fsync of the folder: the name only ever shows complete bytes,
    and both survive a power cut before the caller inserts the row that names them."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _has_transcript(analysis: dict[str, object] | None) -> bool:
    return analysis is not None and "transcript" in analysis


def _opt(value: object) -> str | None:
    return None if value is None else str(value)
