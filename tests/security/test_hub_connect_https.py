"""M3 and the H2 Host check on a real hub: HTTPS with the household certificate (naila/pki.py), a real
device agent that trusts it through DEVICE_HUB_CA (and fails cleanly without it), the DNS-rebinding
guard (421) on every route, and the device's warning about a token over plain http.
"""

from __future__ import annotations

import logging
import socket
import ssl
from pathlib import Path

import aiohttp
import pytest

from device_agent.agent import DeviceAgent
from device_agent.audio_io import MemoryAudioBackend
from device_agent.webrtc_client import hub_ssl_context
from naila.pki import Issued, issue, new_ca
from shared.config import AudioSettings, DeviceSettings, MqttSettings, VideoSettings, WebRTCSettings, load

from .test_hub_connect_auth import KITCHEN, Maker, make_hub

pytestmark = pytest.mark.integration
__all__ = ["make_hub"]


def write_pki(tmp_path: Path) -> tuple[Path, Path, Path]:
    ca = new_ca()
    hub: Issued = issue(ca, "hub", dns_names=["localhost"], ip_addresses=["127.0.0.1"])
    paths = tmp_path / "ca.crt", tmp_path / "hub.crt", tmp_path / "hub.key"
    for path, pem in zip(paths, (ca.cert_pem, hub.cert_pem, hub.key_pem), strict=True):
        path.write_bytes(pem)
    paths[2].chmod(0o600)
    return paths


def device(url: str, **overrides: object) -> DeviceAgent:
    settings = load(DeviceSettings, device_id="kitchen", device_hub_url=url, device_hub_token=KITCHEN,
                    device_audio_backend="file", device_mqtt=False, **overrides)
    return DeviceAgent(settings, audio_backend=MemoryAudioBackend(), audio=load(AudioSettings),
                       video=load(VideoSettings), mqtt=load(MqttSettings),
                       webrtc=load(WebRTCSettings, webrtc_ice_servers=[]))


async def test_a_device_reaches_the_https_hub_with_the_household_ca_and_not_without(
    make_hub: Maker, tmp_path: Path
) -> None:
    ca, cert, key = write_pki(tmp_path)
    hub = await make_hub(hub_tls_cert=str(cert), hub_tls_key=str(key), hub_device_tokens={"kitchen": KITCHEN})
    assert hub.url.startswith("https://127.0.0.1:")
    # Without the CA: the system store does not know the household CA; a clean one-line error, no session.
    stranger = device(hub.url)
    await stranger.start()
    try:
        assert not await stranger.wait_connected(3)
        assert "certificate is not trusted" in (stranger.hub.last_error or "") and "DEVICE_HUB_CA" in (
            stranger.hub.last_error or "")
        assert not hub.sessions and hub.metrics.sessions_opened == 0
    finally:
        await stranger.stop()
    # With it: a real WebRTC session over the HTTPS signaling.
    agent = device(hub.url, device_hub_ca=str(ca))
    await agent.start()
    try:
        assert await agent.wait_connected(15), agent.hub.last_error
        assert set(hub.sessions) == {"kitchen"}
    finally:
        await agent.stop()


async def test_plain_http_is_refused_on_the_https_port(make_hub: Maker, tmp_path: Path) -> None:
    _ca, cert, key = write_pki(tmp_path)
    hub = await make_hub(hub_tls_cert=str(cert), hub_tls_key=str(key))
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.ClientError):
            await http.get(f"http://127.0.0.1:{hub.port}/health")


def test_a_missing_key_is_a_one_line_error(tmp_path: Path) -> None:
    from hub.http_guard import server_ssl_context

    _ca, cert, _key = write_pki(tmp_path)
    with pytest.raises(ValueError, match="HUB_TLS_CERT and HUB_TLS_KEY must be set together"):
        server_ssl_context(str(cert), "")
    with pytest.raises(ValueError, match="no such file"):
        server_ssl_context(str(cert), str(tmp_path / "nope.key"))


async def get_health(port: int, host: str | None, *, tls: ssl.SSLContext | None = None) -> int:
    headers = {"Host": host} if host is not None else {}
    scheme = "https" if tls is not None else "http"
    async with aiohttp.ClientSession() as http, http.get(
        f"{scheme}://127.0.0.1:{port}/health", headers=headers, ssl=tls if tls is not None else True
    ) as r:
        return r.status


@pytest.mark.parametrize(
    ("host", "ok"),
    [
        ("127.0.0.1", True),
        ("127.0.0.1:8080", True),
        ("[::1]:8080", True),
        ("192.168.1.10", True),
        ("localhost", True),
        ("LOCALHOST:8080", True),
        ("naila.home", True),  # HUB_PUBLIC_HOSTS
        (socket.gethostname(), True),
        (socket.gethostname().split(".")[0] + ".local", True),
        ("attacker.example", False),  # DNS rebinding: the browser sends the attacker's name
        ("attacker.example:8080", False),
        ("naila.home.attacker.example", False),
        ("", False),
    ],
)
async def test_the_host_guard_answers_only_to_the_hubs_names(make_hub: Maker, host: str, ok: bool) -> None:
    hub = await make_hub(hub_public_hosts="naila.home")
    # /health is 503 "degraded" here (no AI server): anything but 421 means the guard let it through.
    status = await get_health(hub.port, host)
    assert (status != 421) is ok, (host, status)
    assert hub.metrics.host_refused == (0 if ok else 1)


async def test_the_host_guard_covers_connect_and_https(make_hub: Maker, tmp_path: Path) -> None:
    ca, cert, key = write_pki(tmp_path)
    hub = await make_hub(hub_tls_cert=str(cert), hub_tls_key=str(key))
    tls = ssl.create_default_context(cafile=str(ca))
    assert await get_health(hub.port, "attacker.example", tls=tls) == 421
    async with aiohttp.ClientSession() as http, http.post(
        f"https://127.0.0.1:{hub.port}/connect", json={}, headers={"Host": "attacker.example"}, ssl=tls
    ) as r:
        assert r.status == 421
    assert hub.metrics.host_refused == 2 and hub.metrics.unauthorized == 0 and not hub.metrics.bad_requests


def test_the_device_warns_about_a_token_over_plain_http(caplog: pytest.LogCaptureFixture) -> None:
    def settings(url: str, token: str = KITCHEN) -> DeviceSettings:
        return load(DeviceSettings, device_hub_url=url, device_hub_token=token)

    with caplog.at_level(logging.WARNING, logger="device_agent.webrtc_client"):
        assert hub_ssl_context(settings("http://192.168.1.10:8080")) is None
        assert len(caplog.records) == 1 and "in clear" in caplog.records[0].getMessage()
        caplog.clear()
        hub_ssl_context(settings("http://127.0.0.1:8080"))  # loopback (the demo)
        hub_ssl_context(settings("http://192.168.1.10:8080", token=""))  # nothing secret to send
        assert isinstance(hub_ssl_context(settings("https://naila.home:8443")), ssl.SSLContext)
        assert not caplog.records
    with pytest.raises(ValueError, match="DEVICE_HUB_CA"):
        hub_ssl_context(load(DeviceSettings, device_hub_url="https://naila.home", device_hub_ca="/nonexistent.crt"))
