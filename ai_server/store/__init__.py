"""Storage of the AI server: media (uploads, clips, alert snapshots) on disk with a SQLite index,
and the vision event history in the same database."""

from ai_server.store.events import EventOutcome, EventRecord, EventStore
from ai_server.store.media import MediaRecord, MediaSource, MediaStore

__all__ = ["EventOutcome", "EventRecord", "EventStore", "MediaRecord", "MediaSource", "MediaStore"]
