"""The hub's HTTP front door (issue 18, H2/H6): the Host check, read deadlines and HTTPS.

* **Host guard** (DNS rebinding): a web page on attacker.example can make a LAN browser resolve
  that name to the hub and read it same-origin. Every request must name the hub in ``Host``:
  an IP literal, ``localhost``, this machine's host name (and ``<name>.local``) or one of
  ``HUB_PUBLIC_HOSTS``. Anything else is answered 421 Misdirected Request and counted.
* **Header deadline** (slowloris): aiohttp 3.14 has no timeout for reading a request's
  headers; a client that opens a connection and trickles bytes holds it (and a file
  descriptor) forever. :class:`HeaderDeadline` wraps aiohttp's protocol factory and aborts a
  connection whose first request has not reached a handler within ``HUB_REQUEST_TIMEOUT_S``
  (the TLS handshake included). Later requests on a kept-alive connection are bounded by
  aiohttp's ``keepalive_timeout``, which the hub sets to the same value; bodies by the
  handlers that read them (``hub.signaling.read_body``).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from hub.metrics import HubMetrics

log = logging.getLogger("naila.hub.http")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


# ----- Host guard -------------------------------------------------------------------------------


def local_host_names() -> set[str]:
    """``localhost``, this machine's host name and its mDNS ``.local`` name (lower case)."""
    names = {"localhost"}
    host = socket.gethostname().strip().lower().rstrip(".")
    if host:
        names.add(host)
        short = host.split(".", 1)[0]
        names.update({short, f"{short}.local"})
    return names


def host_of(header: str) -> str:
    """The host part of a ``Host`` header (port and IPv6 brackets removed), lower case."""
    value = header.strip().lower()
    if value.startswith("["):  # [::1]:8080
        return value[1 : value.find("]")] if "]" in value else value
    if value.count(":") == 1:  # name:port, 1.2.3.4:port
        return value.split(":", 1)[0]
    return value.rstrip(".")


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class HostGuard:
    """Accepts a request whose ``Host`` is an IP literal or one of the hub's names."""

    def __init__(self, public_hosts: Iterable[str], metrics: HubMetrics) -> None:
        self.allowed = local_host_names() | {host_of(h) for h in public_hosts if h.strip()}
        self._metrics = metrics
        self._warned: set[str] = set()

    def accepts(self, header: str | None) -> bool:
        if not header:
            return False
        host = host_of(header)
        return host in self.allowed or _is_ip(host)

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        header = request.headers.get("Host")
        if self.accepts(header):
            return await handler(request)
        self._metrics.host_refused += 1
        shown = (header or "")[:80]
        # Logged once per name: a rebinding page polls, and the log must not become its channel.
        if shown not in self._warned and len(self._warned) < 100:
            self._warned.add(shown)
            log.warning(
                "request from %s for Host %r refused (421); add the name to HUB_PUBLIC_HOSTS if it is ours",
                request.remote, shown,
            )
        return web.json_response(
            {"error": "unknown host name; the hub answers to its own names only (HUB_PUBLIC_HOSTS)"}, status=421
        )


# ----- header deadline ---------------------------------------------------------------------------


class HeaderDeadline:
    """Aborts connections whose first request does not reach a handler in time (see the module doc)."""

    def __init__(self, timeout_s: float, metrics: HubMetrics) -> None:
        self.timeout_s = timeout_s
        self._metrics = metrics
        self._pending: dict[RequestHandler, asyncio.TimerHandle] = {}

    def factory(self, make: Callable[[], RequestHandler]) -> Callable[[], RequestHandler]:
        """Wrap aiohttp's protocol factory (``AppRunner.server``)."""

        def new_protocol() -> RequestHandler:
            proto = make()
            loop = asyncio.get_running_loop()
            self._pending[proto] = loop.call_later(self.timeout_s, self._expire, proto)
            return proto

        return new_protocol

    @property
    def pending(self) -> int:
        return len(self._pending)

    def _expire(self, proto: RequestHandler) -> None:
        self._pending.pop(proto, None)
        transport: Any = proto.transport
        if transport is None or transport.is_closing():
            return  # already gone (client left, or aiohttp closed it)
        self._metrics.header_timeouts += 1
        log.info("connection from %s sent no complete request in %.0fs: closed",
                 transport.get_extra_info("peername"), self.timeout_s)
        transport.abort()

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        timer = self._pending.pop(request.protocol, None)
        if timer is not None:
            timer.cancel()
        return await handler(request)

    def close(self) -> None:
        for timer in self._pending.values():
            timer.cancel()
        self._pending.clear()


# ----- HTTPS ---------------------------------------------------------------------------------------


def server_ssl_context(cert: str, key: str) -> ssl.SSLContext | None:
    """The HTTPS context for HUB_TLS_CERT/HUB_TLS_KEY; None when both are empty (plain HTTP).

    Raises ValueError with a one-line reason naming the setting.
    """
    if not cert and not key:
        return None
    if not cert or not key:
        raise ValueError("HUB_TLS_CERT and HUB_TLS_KEY must be set together")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cert, key)
    except FileNotFoundError as err:
        raise ValueError(f"HUB_TLS_CERT/HUB_TLS_KEY: no such file: {err.filename}") from None
    except (ssl.SSLError, OSError) as err:
        raise ValueError(f"HUB_TLS_CERT/HUB_TLS_KEY: cannot load the certificate and key ({err})") from None
    return ctx
