"""Which hub a device dials when DEVICE_HUB_URL lists several (issue 21).

A device is bound to one hub at a time: it stays on the hub that works (a session that drops is
redialled on the same hub first, where its conversation is) and moves to the next hub in the
configured order only when an attempt fails (refused, unreachable, no answer). While some hub
has not failed since the last success, the next one is tried at once, so a dead first hub costs
one failed attempt, not a backoff; once every hub has failed in a row, the device's usual
exponential backoff applies between rounds.
"""

from __future__ import annotations

from collections.abc import Sequence


class HubChoice:
    """The hubs in order and the one in use; see the module doc."""

    def __init__(self, urls: Sequence[str]) -> None:
        if not urls:
            raise ValueError("at least one hub URL is needed")
        self.urls = list(urls)
        self.index = 0
        self.failed_in_row = 0

    @property
    def current(self) -> str:
        return self.urls[self.index]

    def failed(self) -> bool:
        """An attempt on the current hub failed: move to the next. True when that one is to be
        tried at once (it has not failed since the last success), False when the backoff applies."""
        self.failed_in_row += 1
        self.index = (self.index + 1) % len(self.urls)
        return self.failed_in_row < len(self.urls)

    def succeeded(self) -> None:
        """A session came up on the current hub: it stays the device's hub."""
        self.failed_in_row = 0
