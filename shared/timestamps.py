"""UTC timestamps as text: ``2024-01-15T10:30:00.123Z``, the spec's style for every wire and page field."""

from __future__ import annotations

import datetime as dt
from typing import Literal

Timespec = Literal["seconds", "milliseconds"]


def utc_iso(when: dt.datetime | None = None, *, timespec: Timespec = "milliseconds") -> str:
    """``when`` (now when None) in UTC with a ``Z`` suffix; a naive ``when`` is taken as local time."""
    when = when or dt.datetime.now(dt.UTC)
    return when.astimezone(dt.UTC).isoformat(timespec=timespec).replace("+00:00", "Z")
