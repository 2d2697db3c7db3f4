"""Where the AI server keeps its data, and the one place that opens the media store there (finding M4).

The store (events, alert snapshots, transcripts, the alert outbox) must outlive a restart, so it
lives in a persistent data folder, never a temporary one:

* ``AI_MEDIA_DIR`` when set;
* else ``/var/lib/naila`` when running as root (a system service);
* else ``$XDG_DATA_HOME/naila``, or ``~/.local/share/naila`` without it (the XDG base directory rule).

Tests, the demo and benches set ``AI_MEDIA_DIR`` to a temporary folder of their own.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ai_server.store.media import MediaStore
from ai_server.store.retention import RetentionPolicy

if TYPE_CHECKING:
    from shared.config import AIServerSettings

log = logging.getLogger(__name__)

SYSTEM_DATA_DIR = Path("/var/lib/naila")


def default_data_dir(env: Mapping[str, str] | None = None, euid: int | None = None) -> Path:
    """The data folder when ``AI_MEDIA_DIR`` is not set (see the module doc)."""
    env = os.environ if env is None else env
    euid = os.geteuid() if euid is None else euid
    if euid == 0:
        return SYSTEM_DATA_DIR
    xdg = env.get("XDG_DATA_HOME", "")
    # The spec: a relative XDG_DATA_HOME is invalid and ignored.
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path(env.get("HOME") or Path.home()) / ".local/share"
    return base / "naila"


def store_root(media_dir: str) -> Path:
    """``AI_MEDIA_DIR`` (``~`` expanded) or the default data folder."""
    return Path(media_dir).expanduser() if media_dir else default_data_dir()


@dataclass(frozen=True, slots=True)
class StoreConfig:
    """The store's settings (from :class:`AIServerSettings`, or given by a test)."""

    media_dir: str = ""  # AI_MEDIA_DIR; "" = default_data_dir()
    keep_raw_audio: bool = False  # AI_KEEP_RAW_AUDIO
    reserve_bytes: int = 0  # AI_MEDIA_RESERVE_BYTES
    retention: RetentionPolicy = field(default_factory=RetentionPolicy)
    retention_interval_s: float = 3600.0  # AI_RETENTION_INTERVAL_S

    @classmethod
    def from_settings(cls, s: AIServerSettings) -> StoreConfig:
        return cls(
            media_dir=s.ai_media_dir,
            keep_raw_audio=s.ai_keep_raw_audio,
            reserve_bytes=s.ai_media_reserve_bytes,
            retention=RetentionPolicy(s.ai_media_retention_days, s.ai_media_max_bytes, s.ai_history_retention_days),
            retention_interval_s=s.ai_retention_interval_s,
        )


def open_store(config: StoreConfig) -> MediaStore:
    """Open (creating it, private to this user) the media store where ``config`` says.

    Raises ``OSError``/``sqlite3.Error``/``RuntimeError`` when it cannot be opened.
    """
    root = store_root(config.media_dir)
    # 0700: snapshots of the home and what was said in it are for this service only.
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    store = MediaStore(root, keep_raw_audio=config.keep_raw_audio, reserve_bytes=config.reserve_bytes,
                       limit_bytes=config.retention.max_bytes)
    log.info("media store: %s", root)
    return store
