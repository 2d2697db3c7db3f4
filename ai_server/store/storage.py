"""The AI server's one media/event store and the policies that keep it: built once by the composition
root (ai_server/assembly.py), whatever features are on.

Retention runs from :meth:`Storage.start` (at start-up, every ``AI_RETENTION_INTERVAL_S`` and when the
files pass ``AI_MEDIA_MAX_BYTES``) with or without the MQTT control plane or vision: before, only the
plane ran it, so with ``AI_MQTT=false`` the event history was never pruned.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime

from prometheus_client import CollectorRegistry

from ai_server.errors import StartupError
from ai_server.store.home import StoreConfig, open_store, store_root
from ai_server.store.media import MediaStore
from ai_server.store.retention import Retention, RetentionMetrics
from ai_server.store.transcripts import TranscriptSink


class Storage:
    """The store, its retention job and the transcript sink (every finished exchange, off the event loop)."""

    def __init__(self, store: MediaStore, retention: Retention, transcripts: TranscriptSink) -> None:
        self.store = store
        self.retention = retention
        self.transcripts = transcripts
        self._retention_task: asyncio.Task[None] | None = None

    @classmethod
    def open(
        cls,
        config: StoreConfig,
        registry: CollectorRegistry | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> Storage:
        """Open the store where ``config`` says; a folder that cannot be opened is a one-line StartupError."""
        try:
            store = open_store(config)
        except (OSError, RuntimeError, sqlite3.Error) as exc:
            raise StartupError(
                f"cannot open the media store in {store_root(config.media_dir)} (AI_MEDIA_DIR): {exc}"
            ) from exc
        retention = Retention(
            store,
            config.retention,
            interval_s=config.retention_interval_s,
            now=now,
            metrics=RetentionMetrics(registry),
        )
        return cls(store, retention, TranscriptSink(store.transcripts, now))

    def counters(self) -> dict[str, int]:
        """For GetStatus: what retention pruned (``store_pruned_*``)."""
        return self.retention.metrics.snapshot()

    def start(self) -> None:
        if self._retention_task is None:
            self._retention_task = asyncio.get_running_loop().create_task(self.retention.run(), name="retention")

    async def close(self) -> None:
        """Stop retention, write what the transcript sink still holds, close the store."""
        if self._retention_task is not None:
            self._retention_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._retention_task
            self._retention_task = None
        await self.transcripts.close()
        self.store.close()
