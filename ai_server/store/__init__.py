"""Storage of the AI server: media (uploads, clips, alert snapshots) on disk with a SQLite index."""

from ai_server.store.media import MediaRecord, MediaSource, MediaStore

__all__ = ["MediaRecord", "MediaSource", "MediaStore"]
