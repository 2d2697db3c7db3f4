"""Alerts the broker did not take, kept on disk until it does (finding H5): an alert decided is an alert owed.

Where: ``alerts-outbox.jsonl`` in the data folder, beside ``media.sqlite3`` but not inside it, so a
database held locked (a backup, another process) cannot stop an alert from being kept. It survives a
disk that media filled: media writes stop ``AI_MEDIA_RESERVE_BYTES`` short of full
(:class:`ai_server.store.media.MediaStore`), and an alert is a few hundred bytes. If even this append
fails (the disk is full for other reasons, an I/O error), the alert stays in memory, counted
(``alert_outbox_write_failed``) and logged: it still goes out when the broker returns, unless the
process dies first.

Format: one JSON line per alert, ``{"id": ..., "alert": <the Alert as published>}``, appended and
fsync'd. A replayed alert keeps its original ``timestamp``. Lines are removed by rewriting the file
(temporary file, fsync, rename) after both topics took the alert, so a crash in between repeats an
alert rather than losing it: delivery is at least once, as QoS 1 is anyway.

Blocking file I/O: call through ``asyncio.to_thread`` (done by :class:`ai_server.control.alerts.Alerts`).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from shared.mqtt import Alert

log = logging.getLogger(__name__)

OUTBOX_NAME = "alerts-outbox.jsonl"


@dataclass(frozen=True, slots=True)
class Owed:
    id: str
    alert: Alert


class AlertOutbox:
    """See the module doc. ``path`` None keeps alerts in memory only (tests of other parts)."""

    def __init__(self, path: Path | None, on_event: Callable[[str], None] = lambda _name: None) -> None:
        self.path = path
        self._event = on_event
        self._lock = threading.Lock()
        self._owed: dict[str, Alert] = {}
        if path is not None:
            self._owed.update((o.id, o.alert) for o in self._read(path))
            if self._owed:
                log.warning("alert outbox %s: %d alert(s) from before the restart still to send", path, len(self._owed))

    def __len__(self) -> int:
        with self._lock:
            return len(self._owed)

    def pending(self) -> list[Owed]:
        """Oldest first (insertion order)."""
        with self._lock:
            return [Owed(k, a) for k, a in self._owed.items()]

    def put(self, alert: Alert) -> Owed:
        """Keep ``alert``; never raises for a disk problem (see the module doc)."""
        owed = Owed(uuid.uuid4().hex, alert)
        with self._lock:
            self._owed[owed.id] = alert
            if self.path is None:
                return owed
            try:
                line = json.dumps({"id": owed.id, "alert": json.loads(alert.model_dump_json())}) + "\n"
                with open(self.path, "a", encoding="utf-8") as f:
                    f.write(line)
                    f.flush()
                    os.fsync(f.fileno())
            except OSError as exc:
                self._event("alert_outbox_write_failed")
                log.error("alert outbox %s: could not keep the %s alert of %s on disk (%s); it is kept in memory",
                          self.path, alert.alert_type, alert.zone, exc)
        return owed

    def done(self, owed_id: str) -> None:
        """The broker took it: forget it (and rewrite the file without it)."""
        with self._lock:
            if self._owed.pop(owed_id, None) is None or self.path is None:
                return
            try:
                self._rewrite(self.path)
            except OSError as exc:  # it is sent; at worst it is sent again after a restart
                log.warning("alert outbox %s: could not drop a sent alert (%s)", self.path, exc)

    def _rewrite(self, path: Path) -> None:
        if not self._owed:
            path.unlink(missing_ok=True)
            return
        tmp = path.with_name(f".{path.name}.tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            for key, alert in self._owed.items():
                f.write(json.dumps({"id": key, "alert": json.loads(alert.model_dump_json())}) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    def _read(self, path: Path) -> list[Owed]:
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        out: list[Owed] = []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                out.append(Owed(str(row["id"]), Alert.model_validate(row["alert"])))
            except (ValueError, KeyError, TypeError, ValidationError) as exc:  # a torn last line after a crash
                self._event("alert_outbox_bad_line")
                log.error("alert outbox %s line %d is unreadable, skipped: %s", path, n, str(exc).splitlines()[0])
        return out
