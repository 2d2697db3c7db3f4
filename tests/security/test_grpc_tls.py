"""Mutual TLS on the hub <-> AI server gRPC link (issue 18, C1), with real grpc and a real household CA.

The AI server is started in-process with scripted model backends; the hub side is the hub's own
code (shared.grpc_security.hub_client, hub.ai_link.AiLink, the dashboard's AiStatusClient).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from ai_server.app import AIServer, start_server
from ai_server.client import StreamClient, silence
from ai_server.errors import StartupError
from ai_server.fakes import FakeLLM, FakeSTT, FakeTTS
from hub.ai_link import AiLink
from hub.metrics import HubMetrics
from hub.web.state import AiStatusClient
from naila.pki import Issued, issue, new_ca
from shared.backoff import Backoff
from shared.config import AIServerSettings, HubSettings, load
from shared.contract import pb, pb_grpc
from shared.grpc_security import ClientSecurity, InsecureTransport, client_security, hub_client, is_loopback

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class Household:
    dir: Path

    def path(self, name: str) -> str:
        return str(self.dir / name)


def _write(dir: Path, name: str, issued: Issued) -> None:
    (dir / f"{name}.crt").write_bytes(issued.cert_pem)
    (dir / f"{name}.key").write_bytes(issued.key_pem)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Household:
    """ca + ai-server + hub-main (client), and a second CA with its own client and server."""
    d = tmp_path_factory.mktemp("pki")
    ca, other = new_ca(), new_ca("someone else's CA")
    _write(d, "ca", ca)
    _write(d, "other-ca", other)
    _write(d, "ai-server", issue(ca, "ai-server", dns_names=["localhost"], ip_addresses=["127.0.0.1"]))
    _write(d, "hub-main", issue(ca, "hub-main", server=False, client=True))
    _write(d, "intruder", issue(other, "hub-main", server=False, client=True))
    _write(d, "fake-server", issue(other, "ai-server", dns_names=["localhost"], ip_addresses=["127.0.0.1"]))
    return Household(d)


def server_settings(pki: Household, server: str = "ai-server", **over: Any) -> AIServerSettings:
    return load(AIServerSettings, ai_server_host="127.0.0.1", vision_enabled=False, ai_mqtt=False,
                ai_server_tls_cert=pki.path(f"{server}.crt"), ai_server_tls_key=pki.path(f"{server}.key"),
                ai_server_tls_client_ca=pki.path("ca.crt"), **over)


Start = Callable[..., Awaitable[AIServer]]


@pytest.fixture
async def start() -> AsyncIterator[Start]:
    servers: list[AIServer] = []

    async def make(settings: AIServerSettings, host: str = "127.0.0.1") -> AIServer:
        server = await start_server(settings, stt=FakeSTT("what time is it"), llm=FakeLLM("It is noon."),
                                    tts=FakeTTS(), host=host, port=0, warm=False)
        servers.append(server)
        return server

    yield make
    for server in servers:
        await server.stop(grace=0)


def hub_settings(pki: Household, port: int, *, cert: str = "hub-main", ca: str = "ca") -> HubSettings:
    return load(HubSettings, hub_ai_server=f"127.0.0.1:{port}", hub_ai_tls_ca=pki.path(f"{ca}.crt"),
                hub_ai_tls_cert=pki.path(f"{cert}.crt") if cert else "",
                hub_ai_tls_key=pki.path(f"{cert}.key") if cert else "")


async def status(security: ClientSecurity) -> pb.StatusResponse:
    async with security.aio_channel() as ch:
        response: pb.StatusResponse = await pb_grpc.NailaAIStub(ch).GetStatus(pb.StatusRequest(), timeout=5)
        return response


async def refused(security: ClientSecurity) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await status(security)
    return info.value.code()


def voice() -> np.ndarray[Any, Any]:
    t = np.arange(16000 * 600 // 1000) / 16000
    return np.concatenate([(np.sin(2 * np.pi * 180 * t) * 6000).astype(np.int16), silence(300)])


async def test_the_hub_talks_to_the_ai_server_over_mutual_tls(pki: Household, start: Start) -> None:
    server = await start(server_settings(pki))
    security = hub_client(hub_settings(pki, server.port))
    assert security.tls
    # A whole turn on the conversation stream, as the hub sends it.
    async with StreamClient(security) as client:
        end = await client.speak("kitchen", voice())
        reply = await client.turn("kitchen", end, within_s=20)
    assert reply.transcript == "what time is it" and reply.final is not None and reply.final.error_code == pb.NONE
    # The hub's own link (its gRPC thread) and the dashboard's status channel, with the same credentials.
    link = AiLink(security.target, HubMetrics(), on_output=lambda out: None, backoff=Backoff(0.05, 0.3),
                  per_device_limit=10, security=security)
    link.start()
    try:
        assert await link.wait_connected(10)
    finally:
        await link.stop()
    dashboard = AiStatusClient(security)
    try:
        assert (await asyncio.to_thread(dashboard))["reachable"] is True  # blocking: off this loop (the server's)
    finally:
        dashboard.close()


async def test_a_client_without_a_certificate_is_refused(pki: Household, start: Start) -> None:
    server = await start(server_settings(pki))
    no_cert = client_security(f"127.0.0.1:{server.port}", ca=pki.path("ca.crt"))
    assert await refused(no_cert) == grpc.StatusCode.UNAVAILABLE
    assert (await status(hub_client(hub_settings(pki, server.port)))).status == "ok"  # the server is fine


async def test_a_client_certificate_from_another_ca_is_refused(pki: Household, start: Start) -> None:
    server = await start(server_settings(pki))
    intruder = hub_client(hub_settings(pki, server.port, cert="intruder"))
    assert await refused(intruder) == grpc.StatusCode.UNAVAILABLE


async def test_the_hub_refuses_a_server_certificate_from_another_ca(pki: Household, start: Start) -> None:
    server = await start(server_settings(pki, server="fake-server"))  # an impostor with its own CA
    assert await refused(hub_client(hub_settings(pki, server.port))) == grpc.StatusCode.UNAVAILABLE


async def test_a_plaintext_client_cannot_use_a_tls_server(pki: Household, start: Start) -> None:
    server = await start(server_settings(pki))
    assert await refused(ClientSecurity(f"127.0.0.1:{server.port}")) == grpc.StatusCode.UNAVAILABLE


async def test_a_plaintext_non_loopback_bind_is_refused_unless_insecure_is_set(
    start: Start, caplog: pytest.LogCaptureFixture
) -> None:
    plain = load(AIServerSettings, vision_enabled=False, ai_mqtt=False)
    with pytest.raises(StartupError) as info:
        await start(plain, host="0.0.0.0")
    message = str(info.value)
    assert "\n" not in message and "0.0.0.0" in message
    assert all(name in message for name in ("AI_SERVER_TLS_CERT", "AI_SERVER_TLS_CLIENT_CA", "AI_SERVER_INSECURE"))
    with caplog.at_level(logging.WARNING, "shared.grpc_security"):
        server = await start(plain.model_copy(update={"ai_server_insecure": True}), host="0.0.0.0")
    assert any(r.levelno == logging.WARNING and "INSECURE" in r.getMessage() for r in caplog.records)
    assert (await status(ClientSecurity(f"127.0.0.1:{server.port}"))).status == "ok"
    # Loopback without TLS stays allowed (the demo, most tests).
    await start(plain, host="127.0.0.1")


async def test_tls_without_client_certificates_is_not_enough_off_loopback(pki: Household, start: Start) -> None:
    server_only = server_settings(pki).model_copy(update={"ai_server_tls_client_ca": ""})
    with pytest.raises(StartupError, match="AI_SERVER_TLS_CLIENT_CA"):
        await start(server_only, host="0.0.0.0")


def test_the_hub_refuses_plaintext_to_a_non_loopback_ai_server(caplog: pytest.LogCaptureFixture) -> None:
    lan = load(HubSettings, hub_ai_server="192.168.1.20:50051")
    with pytest.raises(InsecureTransport) as info:
        hub_client(lan)
    assert all(name in str(info.value) for name in ("HUB_AI_TLS_CA", "HUB_AI_INSECURE"))
    with caplog.at_level(logging.WARNING, "shared.grpc_security"):
        assert not hub_client(lan.model_copy(update={"hub_ai_insecure": True})).tls
    assert any("INSECURE" in r.getMessage() for r in caplog.records)
    assert not hub_client(load(HubSettings, hub_ai_server="127.0.0.1:50051")).tls
    assert not hub_client(load(HubSettings, hub_ai_server="localhost:50051")).tls


def test_unusable_pem_files_are_one_line_errors(tmp_path: Path) -> None:
    (tmp_path / "junk.crt").write_text("not a certificate")
    with pytest.raises(InsecureTransport, match=r"HUB_AI_TLS_CA.*not a PEM file"):
        client_security("10.0.0.2:50051", ca=str(tmp_path / "junk.crt"))
    with pytest.raises(InsecureTransport, match="cannot read HUB_AI_TLS_CA"):
        client_security("10.0.0.2:50051", ca=str(tmp_path / "missing.crt"))
    with pytest.raises(InsecureTransport, match="set together"):
        client_security("10.0.0.2:50051", ca=str(tmp_path / "junk.crt"), cert="x.crt")


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("127.1.2.3", True), ("::1", True), ("[::1]", True), ("localhost", True),
    ("0.0.0.0", False), ("::", False), ("", False), ("192.168.1.5", False), ("ai.home.arpa", False),
])
def test_what_counts_as_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback
