"""The client's address and scheme as seen through a trusted reverse proxy (issue 18, M9).

Behind a TLS proxy every request comes from the proxy's address and over plain HTTP, so
limits keyed on ``request.remote`` become one shared bucket (an attacker locks the owner out)
and ``request.secure`` is false. ``X-Forwarded-For`` and ``X-Forwarded-Proto`` fix that, but
any client can send them: they are believed only when the TCP peer is in
``HUB_TRUSTED_PROXIES``. The client is the right-most ``X-Forwarded-For`` hop that is not a
trusted proxy: hops to its left were written by the client itself and prove nothing.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable

from aiohttp import web

log = logging.getLogger("naila.hub.web")

_Net = ipaddress.IPv4Network | ipaddress.IPv6Network
_Addr = ipaddress.IPv4Address | ipaddress.IPv6Address


def _parse(text: str) -> _Addr | None:
    text = text.strip()
    if text.startswith("[") and "]" in text:  # "[2001:db8::1]:443"
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # "192.0.2.1:443"
        text = text.split(":", 1)[0]
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def limit_key(client: str) -> str:
    """The rate-limit key of a client address: IPv6 by its /64, since one host may hold the whole
    /64 and rotate through it; IPv4 (and anything unparsable) as it is."""
    addr = _parse(client)
    if isinstance(addr, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((addr, 64), strict=False))
    return str(addr) if addr is not None else client[:64]


class ProxyView:
    """Reads the client address and scheme of a request, believing only ``trusted`` proxies."""

    def __init__(self, trusted: Iterable[str] = ()) -> None:
        self._nets: tuple[_Net, ...] = tuple(ipaddress.ip_network(t, strict=False) for t in trusted)
        self._hinted = False

    def trusted(self, address: str | None) -> bool:
        addr = _parse(address or "")
        return addr is not None and any(addr in net for net in self._nets)

    def client(self, request: web.Request) -> str:
        peer = request.remote or "?"
        forwarded = ",".join(request.headers.getall("X-Forwarded-For", []))
        if not self.trusted(peer):
            if forwarded and not self._hinted:
                self._hinted = True
                log.warning(
                    "X-Forwarded-For from %s ignored: it is not in HUB_TRUSTED_PROXIES (behind a reverse proxy, "
                    "name it there, or every client shares one login limit)",
                    peer,
                )
            return peer
        hops = [h.strip() for h in forwarded.split(",") if h.strip()]
        for hop in reversed(hops):
            if not self.trusted(hop):
                addr = _parse(hop)
                return str(addr) if addr is not None else hop[:64]
        # Every hop is one of our proxies (or there is none): the left-most is as far as we can see.
        return hops[0][:64] if hops else peer

    def secure(self, request: web.Request) -> bool:
        """Whether the browser reached us over HTTPS: our own TLS, or a trusted proxy's say-so."""
        if request.secure:
            return True
        if not self.trusted(request.remote):
            return False
        protos = ",".join(request.headers.getall("X-Forwarded-Proto", [])).split(",")
        # The right-most value is the one our proxy wrote.
        return protos[-1].strip().lower() == "https"
