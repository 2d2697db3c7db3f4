"""Transport security of the hub <-> AI server gRPC link (issue 18, finding C1), for both sides.

One place builds grpc's SSL credentials from the PEM files ``naila init`` writes:

* the AI server: :func:`server_credentials` (``AI_SERVER_TLS_CERT``/``KEY``; with
  ``AI_SERVER_TLS_CLIENT_CA`` a client certificate signed by that CA is *required*: mutual TLS);
* the hub: :func:`hub_client` gives a :class:`ClientSecurity` that opens the hub's channels
  (the conversation link, the vision uplink, the dashboard's status channel) with
  ``HUB_AI_TLS_CA`` (and the client certificate ``HUB_AI_TLS_CERT``/``KEY``).

Both sides refuse plaintext across the LAN: a non-loopback address without TLS is an
:class:`InsecureTransport` error naming the settings, unless the operator sets the explicit
``AI_SERVER_INSECURE`` / ``HUB_AI_INSECURE`` flag (then a WARNING says so at every start).
Loopback stays plaintext-friendly: the demo and most tests run that way.
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from shared.config import AIServerSettings, HubSettings

log = logging.getLogger(__name__)


class InsecureTransport(ValueError):
    """The configuration would put the gRPC link on the LAN in plaintext, or a PEM file is unusable."""


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``; False for wildcards and every other address."""
    host = host.strip().strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything on the LAN


def target_host(target: str) -> str:
    """The host part of a gRPC target ``host:port`` / ``[v6]:port`` / ``dns:///host:port``."""
    rest = target.split("///", 1)[-1] if "///" in target else target
    if rest.startswith("["):
        return rest[1:].split("]", 1)[0]
    if rest.count(":") > 1:  # a bare IPv6 address without a port
        return rest
    return rest.rsplit(":", 1)[0]


def _read(path: str, setting: str) -> bytes:
    try:
        data = Path(path).expanduser().read_bytes()
    except OSError as exc:
        raise InsecureTransport(f"cannot read {setting}={path!r}: {exc.strerror or exc}") from None
    if b"-----BEGIN" not in data:
        raise InsecureTransport(f"{setting}={path!r} is not a PEM file")
    return data


def server_credentials(cert: str, key: str, client_ca: str = "") -> grpc.ServerCredentials | None:
    """TLS credentials for the AI server, or None when no certificate is configured (plaintext).

    With ``client_ca`` the handshake requires a client certificate that chains to it
    (``require_client_auth=True``): a client without one, or with one from another CA, is refused
    before any RPC runs.
    """
    if not cert and not key:
        if client_ca:
            raise InsecureTransport("AI_SERVER_TLS_CLIENT_CA needs AI_SERVER_TLS_CERT and AI_SERVER_TLS_KEY")
        return None
    if not (cert and key):
        raise InsecureTransport("AI_SERVER_TLS_CERT and AI_SERVER_TLS_KEY must be set together")
    pair = (_read(key, "AI_SERVER_TLS_KEY"), _read(cert, "AI_SERVER_TLS_CERT"))
    root = _read(client_ca, "AI_SERVER_TLS_CLIENT_CA") if client_ca else None
    return grpc.ssl_server_credentials([pair], root_certificates=root, require_client_auth=root is not None)


def ai_server_credentials(settings: AIServerSettings, host: str) -> grpc.ServerCredentials | None:
    """The AI server's credentials for binding ``host``; refuses plaintext or server-only TLS on a
    non-loopback address unless ``AI_SERVER_INSECURE=true`` (then a loud WARNING)."""
    creds = server_credentials(settings.ai_server_tls_cert, settings.ai_server_tls_key,
                               settings.ai_server_tls_client_ca)
    mutual = creds is not None and bool(settings.ai_server_tls_client_ca)
    if not mutual and not is_loopback(host):
        what = "without TLS" if creds is None else "without client certificates (AI_SERVER_TLS_CLIENT_CA)"
        if not settings.ai_server_insecure:
            raise InsecureTransport(
                f"refusing to serve gRPC on {host} {what}: set AI_SERVER_TLS_CERT, AI_SERVER_TLS_KEY and "
                "AI_SERVER_TLS_CLIENT_CA (naila init writes them), bind AI_SERVER_HOST=127.0.0.1, or set "
                "AI_SERVER_INSECURE=true on a trusted network"
            )
        log.warning(
            "INSECURE: gRPC on %s %s (AI_SERVER_INSECURE=true): anyone on this network can use the AI "
            "server, read microphone audio and forge camera frames", host, what,
        )
    return creds


@dataclass(frozen=True)
class ClientSecurity:
    """How a client reaches the AI server: the target, and TLS credentials or None (plaintext)."""

    target: str
    credentials: grpc.ChannelCredentials | None = None
    server_name: str = ""  # checked in the server's certificate instead of the target's host
    options: tuple[tuple[str, Any], ...] = field(default=())

    @property
    def tls(self) -> bool:
        return self.credentials is not None

    def channel_options(self, extra: list[tuple[str, Any]] | None = None) -> list[tuple[str, Any]]:
        opts = [*(extra or []), *self.options]
        if self.server_name:
            opts.append(("grpc.ssl_target_name_override", self.server_name))
        return opts

    def channel(self, options: list[tuple[str, Any]] | None = None) -> grpc.Channel:
        """A blocking-API channel (the hub's conversation thread, the dashboard's status)."""
        opts = self.channel_options(options)
        if self.credentials is None:
            return grpc.insecure_channel(self.target, options=opts)
        return grpc.secure_channel(self.target, self.credentials, options=opts)

    def aio_channel(self, options: list[tuple[str, Any]] | None = None) -> grpc.aio.Channel:
        """A grpc.aio channel (the vision uplink, test and benchmark clients)."""
        opts = self.channel_options(options)
        if self.credentials is None:
            return grpc.aio.insecure_channel(self.target, options=opts)
        return grpc.aio.secure_channel(self.target, self.credentials, options=opts)


def client_security(
    target: str,
    *,
    ca: str = "",
    cert: str = "",
    key: str = "",
    server_name: str = "",
    insecure: bool = False,
    what: str = "HUB_AI",
) -> ClientSecurity:
    """Credentials to reach ``target``: TLS with ``ca`` (and a client certificate for mutual TLS);
    plaintext only to a loopback host or with ``insecure``. Settings are named ``{what}_TLS_*``."""
    if bool(cert) != bool(key):
        raise InsecureTransport(f"{what}_TLS_CERT and {what}_TLS_KEY must be set together")
    host = target_host(target)
    if not ca:
        if cert:
            raise InsecureTransport(f"{what}_TLS_CERT needs {what}_TLS_CA (the CA of the AI server's certificate)")
        if not is_loopback(host):
            if not insecure:
                raise InsecureTransport(
                    f"refusing plaintext gRPC to {target}: set {what}_TLS_CA, {what}_TLS_CERT and {what}_TLS_KEY "
                    f"(naila init writes them), or {what}_INSECURE=true on a trusted network"
                )
            log.warning("INSECURE: plaintext gRPC to %s (%s_INSECURE=true): audio and camera frames cross the "
                        "network in clear", target, what)
        return ClientSecurity(target)
    creds = grpc.ssl_channel_credentials(
        root_certificates=_read(ca, f"{what}_TLS_CA"),
        private_key=_read(key, f"{what}_TLS_KEY") if key else None,
        certificate_chain=_read(cert, f"{what}_TLS_CERT") if cert else None,
    )
    return ClientSecurity(target, creds, server_name)


def hub_client(settings: HubSettings, target: str | None = None) -> ClientSecurity:
    """The hub's way to an AI server (HUB_AI_SERVER, HUB_AI_TLS_*, HUB_AI_INSECURE): ``target``, one
    of HUB_AI_SERVER's addresses, by default the first."""
    return client_security(
        target or settings.ai_servers[0], ca=settings.hub_ai_tls_ca, cert=settings.hub_ai_tls_cert,
        key=settings.hub_ai_tls_key, server_name=settings.hub_ai_tls_server_name,
        insecure=settings.hub_ai_insecure,
    )
