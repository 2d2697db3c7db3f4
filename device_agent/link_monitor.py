"""Is the WebRTC link to the hub still alive? (pure decision logic on an injected clock)

aiortc's ``connectionState`` alone reacts slowly to a hub that vanished (ICE consent checks take
tens of seconds to fail), so the link is also judged by inbound audio: the hub always sends
(silence when idle), so no RTP for ``rtp_timeout_s`` means the hub is gone.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class LinkMonitor:
    """Feed it connection states and RTP arrivals; :meth:`dead_reason` says when to reconnect."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        connect_timeout_s: float = 15.0,
        disconnected_grace_s: float = 3.0,
        rtp_timeout_s: float = 5.0,
    ) -> None:
        self._clock = clock
        self.connect_timeout_s = connect_timeout_s
        self.disconnected_grace_s = disconnected_grace_s
        self.rtp_timeout_s = rtp_timeout_s
        self.started_at = clock()
        self.state = "new"
        self._state_since = self.started_at
        self.connected_at: float | None = None
        self.last_rtp: float | None = None

    def on_state(self, state: str) -> None:
        if state != self.state:
            self.state = state
            self._state_since = self._clock()
            if state == "connected" and self.connected_at is None:
                self.connected_at = self._state_since

    def on_rtp(self) -> None:
        self.last_rtp = self._clock()

    @property
    def healthy(self) -> bool:
        """Connected and audio is flowing (or none is expected: ``rtp_timeout_s`` infinite, a camera-only device)."""
        audio_ok = self.last_rtp is not None or self.rtp_timeout_s == float("inf")
        return self.state == "connected" and audio_ok and self.dead_reason() is None

    def dead_reason(self) -> str | None:
        """Why the link should be torn down and redialled, or None while it is fine."""
        now = self._clock()
        if self.state in ("failed", "closed"):
            return f"connection {self.state}"
        if self.state == "disconnected" and now - self._state_since > self.disconnected_grace_s:
            return f"disconnected for {now - self._state_since:.1f} s"
        if self.connected_at is None:
            if now - self.started_at > self.connect_timeout_s:
                return f"not connected after {now - self.started_at:.1f} s"
            return None
        since = self.last_rtp if self.last_rtp is not None else self.connected_at
        if now - since > self.rtp_timeout_s:
            return f"no audio from the hub for {now - since:.1f} s"
        return None
