"""Why a visual source could not give a picture (raised by ai_server/media/sources.py, caught by the
control plane's device media when a recording's frame does not decode)."""

from __future__ import annotations


class SourceFailed(Exception):
    """A source could not give a picture; ``reason`` is short and stable (counted, shown to the asker)."""

    def __init__(self, source: str, reason: str, detail: str) -> None:
        super().__init__(f"{source}: {reason}: {detail}")
        self.source = source
        self.reason = reason
        self.detail = detail
