"""Server-sent events: one bounded queue per open page, fed by the hub's event loop.

Why SSE and not a WebSocket: every live update flows hub -> page, EventSource reconnects by
itself (after a hub restart too), and it is plain HTTP that the login cookie already covers.

A page that cannot keep up (its queue is full) is cut off rather than slowing the hub: its
EventSource reconnects and starts again from a fresh ``snapshot``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web

log = logging.getLogger("naila.hub.web")

KEEPALIVE_S = 15.0  # a comment line this often keeps proxies and NAT from closing an idle stream
RETRY_MS = 2000  # EventSource's reconnect delay after the stream drops (e.g. the hub restarted)
QUEUE_SIZE = 256
MAX_CLIENTS = 32


def format_event(event: str, data: object) -> bytes:
    """One SSE message. JSON never contains a raw newline, so ``data:`` is always one line."""
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


@dataclass(eq=False)
class Subscriber:
    """One open event stream. ``device_id`` set: a device page, which only gets its own events."""

    device_id: str | None
    queue: asyncio.Queue[bytes | None] = field(default_factory=lambda: asyncio.Queue(QUEUE_SIZE))
    closed: bool = False

    def offer(self, message: bytes) -> bool:
        if self.closed:
            return False
        try:
            self.queue.put_nowait(message)
        except asyncio.QueueFull:
            self.close()
            return False
        return True

    def close(self) -> None:
        """End the stream: drop what is queued and wake the writer with the end marker."""
        if self.closed:
            return
        self.closed = True
        while not self.queue.empty():
            self.queue.get_nowait()
        self.queue.put_nowait(None)


class EventBus:
    """Fan-out of events to every open stream. Synchronous: safe to call from media callbacks."""

    def __init__(self, max_clients: int = MAX_CLIENTS) -> None:
        self.max_clients = max_clients
        self._subs: set[Subscriber] = set()
        self.dropped_clients = 0

    @property
    def dashboards(self) -> int:
        return sum(1 for s in self._subs if s.device_id is None)

    def __len__(self) -> int:
        return len(self._subs)

    def subscribe(self, device_id: str | None) -> Subscriber | None:
        if len(self._subs) >= self.max_clients:
            return None
        sub = Subscriber(device_id)
        self._subs.add(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        self._subs.discard(sub)

    def publish(self, event: str, data: object, *, device_id: str | None = None, dashboard_only: bool = False) -> None:
        """Send to every dashboard, and to the device page of ``device_id`` unless ``dashboard_only``."""
        message: bytes | None = None
        for sub in list(self._subs):
            if sub.device_id is None or (not dashboard_only and device_id is not None and sub.device_id == device_id):
                message = message or format_event(event, data)
                if not sub.offer(message):
                    self.dropped_clients += 1
                    self._subs.discard(sub)
                    log.info(
                        "event stream of %s cut off: it fell %d events behind",
                        sub.device_id or "a dashboard",
                        QUEUE_SIZE,
                    )

    def close_all(self) -> None:
        for sub in list(self._subs):
            sub.close()
        self._subs.clear()


async def stream_events(
    request: web.Request,
    bus: EventBus,
    device_id: str | None,
    initial: Callable[[], list[bytes]],
    still_allowed: Callable[[], bool] = lambda: True,
) -> web.StreamResponse:
    """Serve one ``text/event-stream`` until the page goes away, the hub stops, or
    ``still_allowed`` turns false (the login behind it was revoked or expired: checked before
    every event and keepalive, so a logged-out cookie does not keep an open stream alive)."""
    sub = bus.subscribe(device_id)
    if sub is None:
        raise web.HTTPServiceUnavailable(text="too many open event streams\n")
    resp = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-store",
            "X-Accel-Buffering": "no",  # a reverse proxy must not buffer a live stream
        }
    )
    try:
        await resp.prepare(request)
        # The snapshot is taken after subscribing, so no event falls between the two.
        await resp.write(f"retry: {RETRY_MS}\n\n".encode() + b"".join(initial()))
        while True:
            try:
                async with asyncio.timeout(KEEPALIVE_S):  # not wait_for: see shared/aio.py
                    message = await sub.queue.get()
            except TimeoutError:
                if not still_allowed():
                    break
                await resp.write(b": keepalive\n\n")
                continue
            if message is None or not still_allowed():
                break
            await resp.write(message)
    except (ConnectionResetError, ConnectionError):
        pass  # the page went away
    finally:
        sub.close()
        bus.unsubscribe(sub)
    with contextlib.suppress(ConnectionError):
        await resp.write_eof()
    return resp
