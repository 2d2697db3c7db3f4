"""TLS to the broker (spec §15.2) with the shipped config's TLS and certificate-auth listeners.

A throwaway CA, broker and client certificates are made per test module (cryptography, EC
P-256: milliseconds). The broker runs deploy/mosquitto/mosquitto.conf with the commented TLS
blocks enabled and only ports and file paths rewritten; MqttLink connects with the settings a
deployable would use (MQTT_TLS, MQTT_CA_FILE, MQTT_CERT_FILE/MQTT_KEY_FILE, MQTT_TLS_INSECURE).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import logging
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from shared.backoff import Backoff
from shared.mqtt import topics
from shared.mqtt_link import MqttLink, tls_parameters
from tests.conftest import free_port
from tests.integration.test_mosquitto_acl import (
    AI,
    DEV,
    OTHER,
    WAIT_S,
    Deployment,
    Ports,
    TlsFiles,
    deployment,
    read_until,
    wait_until,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


# ---- A throwaway PKI ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Issued:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _builder(subject: str, issuer: x509.Name, key: ec.EllipticCurvePrivateKey) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )


def make_ca(cn: str) -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        _builder(cn, _name(cn), key)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return Issued(key, cert)


def issue(ca: Issued, cn: str, *, server_names: list[str] | None = None) -> Issued:
    """A leaf certificate: a broker's (with ``server_names`` as SANs) or a client's."""
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        _builder(cn, ca.cert.subject, key)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
            critical=False,
        )
    )
    if server_names is not None:
        sans: list[x509.GeneralName] = []
        for n in server_names:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(n)))
            except ValueError:
                sans.append(x509.DNSName(n))
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False).add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
    else:
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    return Issued(key, builder.sign(ca.key, hashes.SHA256()))


def write_pem(directory: Path, name: str, issued: Issued) -> tuple[Path, Path]:
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    cert.write_bytes(issued.cert.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(
        issued.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    key.chmod(0o600)
    return cert, key


@dataclass(frozen=True)
class Pki:
    ca: Path
    rogue_ca: Path  # a CA that did not sign the broker: trusting it must not be enough
    server: TlsFiles  # names 127.0.0.1 and localhost
    misnamed_server: TlsFiles  # right CA, names only broker.invalid
    device_cert: Path  # CN = dev-a
    device_key: Path
    rogue_device_cert: Path  # CN = dev-a, signed by the rogue CA
    rogue_device_key: Path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    ca, rogue = make_ca("NAILA test CA"), make_ca("rogue CA")
    ca_pem, _ = write_pem(d, "ca", ca)
    rogue_pem, _ = write_pem(d, "rogue-ca", rogue)
    server_crt, server_key = write_pem(d, "server", issue(ca, "broker", server_names=["127.0.0.1", "localhost"]))
    misnamed_crt, misnamed_key = write_pem(d, "misnamed", issue(ca, "broker", server_names=["broker.invalid"]))
    device_crt, device_key = write_pem(d, "dev-a", issue(ca, DEV))
    rogue_crt, rogue_key = write_pem(d, "rogue-dev-a", issue(rogue, DEV))
    return Pki(
        ca=ca_pem,
        rogue_ca=rogue_pem,
        server=TlsFiles(ca_pem, server_crt, server_key),
        misnamed_server=TlsFiles(ca_pem, misnamed_crt, misnamed_key),
        device_cert=device_crt,
        device_key=device_key,
        rogue_device_cert=rogue_crt,
        rogue_device_key=rogue_key,
    )


def _ports() -> Ports:
    return Ports(free_port(), tls=free_port(), cert_auth=free_port())


@pytest.fixture
def dep(tmp_path: Path, pki: Pki) -> Iterator[Deployment]:
    with deployment(tmp_path, ports=_ports(), tls=pki.server) as d:
        yield d


@pytest.fixture
def misnamed_dep(tmp_path: Path, pki: Pki) -> Iterator[Deployment]:
    with deployment(tmp_path, ports=_ports(), tls=pki.misnamed_server) as d:
        yield d


def tls_port(dep: Deployment) -> int:
    assert dep.broker.ports.tls is not None
    return dep.broker.ports.tls


def cert_port(dep: Deployment) -> int:
    assert dep.broker.ports.cert_auth is not None
    return dep.broker.ports.cert_auth


def ai_over_tls(dep: Deployment, ca: Path) -> Any:
    """The AI server's client on the TLS listener (an observer that itself uses TLS)."""
    return dep.client(AI, port=tls_port(dep), tls_params=aiomqtt.TLSParameters(ca_certs=str(ca)))


async def refused_link(link: MqttLink, caplog: pytest.LogCaptureFixture, reason: str) -> None:
    """Assert ``link`` fails to connect, at least twice, for ``reason`` (found in its log)."""
    with caplog.at_level(logging.WARNING, logger="shared.mqtt_link"):
        await link.start()
        try:
            await wait_until(lambda: link.backoff.attempt >= 2)
            assert link.stats.connects == 0 and not link.connected.is_set()
        finally:
            await link.stop()
    assert reason in caplog.text, caplog.text


def quick_link(settings: Any, **kwargs: Any) -> MqttLink:
    return MqttLink(settings, client_id=f"tls-{DEV}", backoff=Backoff(0.05, 0.2), **kwargs)


# ---- Tests ----------------------------------------------------------------------------------------


async def test_link_over_tls_with_the_ca_file(dep: Deployment, pki: Pki) -> None:
    settings = dep.settings(DEV, port=tls_port(dep), mqtt_tls=True, mqtt_ca_file=str(pki.ca))
    link = quick_link(settings)
    async with ai_over_tls(dep, pki.ca) as observer:
        await observer.subscribe("naila/#", qos=1)
        await link.start()
        try:
            await asyncio.wait_for(link.connected.wait(), WAIT_S)
            await link.publish_raw(topics.device_events(DEV), b"over tls")
            # Same users and ACL as the plain listener: forging another device's status is dropped.
            await link.publish_raw(topics.device_status(OTHER), b"forged", retain=True)
            await link.publish_raw(topics.device_command_response(DEV), b"sentinel")
            seen = await read_until(observer, topics.device_command_response(DEV), b"sentinel")
            assert seen == [(topics.device_events(DEV), b"over tls")]
        finally:
            await link.stop()


async def test_clients_that_cannot_verify_the_broker_are_refused(
    dep: Deployment, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    # No MQTT_CA_FILE: the system CAs do not know a private CA.
    settings = dep.settings(DEV, port=tls_port(dep), mqtt_tls=True)
    await refused_link(quick_link(settings), caplog, "CERTIFICATE_VERIFY_FAILED")
    caplog.clear()
    # The wrong CA file.
    settings = dep.settings(DEV, port=tls_port(dep), mqtt_tls=True, mqtt_ca_file=str(pki.rogue_ca))
    await refused_link(quick_link(settings), caplog, "CERTIFICATE_VERIFY_FAILED")
    # Plain MQTT on the TLS port: the broker never sees a CONNECT it can read. (aiomqtt only
    # notices a connection closed before CONNACK by its timeout, hence the short one.)
    with pytest.raises(aiomqtt.MqttError):
        async with dep.client(DEV, port=tls_port(dep), timeout=2):
            pass
    assert "wrong version number" in dep.broker.log_tail()


async def test_host_name_is_checked_unless_tls_insecure(
    misnamed_dep: Deployment, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    """A certificate from the right CA for another name is refused by default (MQTT_TLS_INSECURE=false)."""
    dep = misnamed_dep
    base: dict[str, Any] = {"port": tls_port(dep), "mqtt_tls": True, "mqtt_ca_file": str(pki.ca)}
    await refused_link(quick_link(dep.settings(DEV, **base)), caplog, "IP address mismatch")
    caplog.clear()
    # MQTT_TLS_INSECURE=true skips only the name check ...
    link = quick_link(dep.settings(DEV, **base, mqtt_tls_insecure=True))
    await link.start()
    try:
        await asyncio.wait_for(link.connected.wait(), WAIT_S)
    finally:
        await link.stop()
    # ... the chain is still verified.
    rogue = {**base, "mqtt_ca_file": str(pki.rogue_ca), "mqtt_tls_insecure": True}
    await refused_link(quick_link(dep.settings(DEV, **rogue)), caplog, "CERTIFICATE_VERIFY_FAILED")


async def test_certificate_auth_uses_the_cn_as_the_device_user(dep: Deployment, pki: Pki) -> None:
    """On the certificate listener a device logs in with its certificate alone; the ACL applies to its CN."""
    settings = dep.settings(
        None,
        port=cert_port(dep),
        mqtt_tls=True,
        mqtt_ca_file=str(pki.ca),
        mqtt_cert_file=str(pki.device_cert),
        mqtt_key_file=str(pki.device_key),
    )
    link = quick_link(settings)
    async with ai_over_tls(dep, pki.ca) as observer:
        await observer.subscribe("naila/#", qos=1)
        await link.start()
        try:
            await asyncio.wait_for(link.connected.wait(), WAIT_S)
            await link.publish_raw(topics.device_status(OTHER), b"forged", retain=True)
            await link.publish_raw(topics.SERVER_STATUS, b"forged")
            await link.publish_raw(topics.device_events(DEV), b"sentinel")
            seen = await read_until(observer, topics.device_events(DEV), b"sentinel")
            assert seen == []
        finally:
            await link.stop()


async def test_certificate_listener_refuses_missing_or_foreign_certificates(dep: Deployment, pki: Pki) -> None:
    # (params, what the broker logs): a password is no substitute for a certificate here.
    attempts: list[tuple[aiomqtt.TLSParameters, str]] = [
        (aiomqtt.TLSParameters(ca_certs=str(pki.ca)), "peer did not return a certificate"),
        (
            aiomqtt.TLSParameters(
                ca_certs=str(pki.ca), certfile=str(pki.rogue_device_cert), keyfile=str(pki.rogue_device_key)
            ),
            "certificate verify failed",
        ),
    ]
    for params, reason in attempts:
        # The broker refuses in the handshake; aiomqtt only notices by its timeout, hence the short one.
        with pytest.raises(aiomqtt.MqttError):
            async with dep.client(DEV, port=cert_port(dep), tls_params=params, timeout=2):
                pytest.fail(f"connected although the broker should log {reason!r}")
        assert reason in dep.broker.log_tail(), dep.broker.log_tail()
    # Same listener, a good certificate: the refusals above were about the certificates.
    good = aiomqtt.TLSParameters(ca_certs=str(pki.ca), certfile=str(pki.device_cert), keyfile=str(pki.device_key))
    async with aiomqtt.Client("127.0.0.1", cert_port(dep), tls_params=good, timeout=WAIT_S):
        pass


def test_tls_parameters_verify_the_broker_by_default(dep: Deployment, pki: Pki) -> None:
    assert tls_parameters(dep.settings(DEV)) is None
    params = tls_parameters(dep.settings(DEV, mqtt_tls=True, mqtt_ca_file=str(pki.ca)))
    assert params is not None and params.cert_reqs == ssl.CERT_REQUIRED and params.ca_certs == str(pki.ca)
