"""H1, L2, L5 on a real hub over real HTTP: /connect is default-deny; unknown id, wrong token and
revoked device look the same; the open hub needs its explicit setting (and says so loudly);
short tokens are a config error that never shows the token.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiortc import RTCPeerConnection

from hub.server import Hub
from hub.web.auth import WebAuth
from shared.config import ConfigError, HubSettings, WebRTCSettings, load
from tests.hub.conftest import connect_device, post_connect

pytestmark = pytest.mark.integration

KITCHEN = "kitchen-token-0123456789-abcdefgh"
HALL = "hall-token-0123456789-abcdefghijk"
AUDIO_NO_ICE = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"

Maker = Callable[..., Awaitable[Hub]]


class Clock:
    """A hand-moved monotonic clock for the hub's limits."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def make_hub(loopback_ice: None) -> AsyncIterator[Maker]:
    """A real hub (no AI server behind it: /connect does not need one), default settings unless overridden."""
    hubs: list[Hub] = []

    async def make(clock: Callable[[], float] | None = None, **overrides: Any) -> Hub:
        settings = load(HubSettings, **{"hub_host": "127.0.0.1", "hub_ai_server": "127.0.0.1:9", "hub_mqtt": False,
                                        "hub_vision": False, **overrides})
        hub = Hub(settings, WebRTCSettings(webrtc_ice_servers=[]), port=0, clock=clock or time.monotonic)
        await hub.start()
        hubs.append(hub)
        return hub

    yield make
    for hub in hubs:
        await hub.stop()


async def real_offer() -> str:
    """A real aiortc offer (audio + data channel, bundled), as a device would send."""
    pc = RTCPeerConnection()
    pc.addTransceiver("audio", direction="sendrecv")
    pc.createDataChannel("control")
    await pc.setLocalDescription(await pc.createOffer())
    sdp = str(pc.localDescription.sdp)
    await pc.close()
    return sdp


async def test_no_tokens_means_every_device_is_refused(make_hub: Maker) -> None:
    """The review's takeover test (H1): defaults, a brand-new id and a known one, no token."""
    hub = await make_hub()
    sdp = await real_offer()
    for device_id in ("kitchen", "brand-new"):
        status, body = await post_connect(hub.url, {"device_id": device_id, "sdp": sdp})
        assert status == 401 and body == {"error": "missing, unknown or wrong device token"}
    assert hub.metrics.unauthorized == 2 and not hub.sessions and hub.metrics.sessions_opened == 0


async def test_unknown_wrong_and_revoked_get_the_same_answer(make_hub: Maker) -> None:
    hub = await make_hub(hub_device_tokens={"kitchen": KITCHEN, "hall": HALL})
    sdp = await real_offer()
    kitchen = await connect_device(hub.url, "kitchen", token=KITCHEN)
    try:
        answers = [
            await post_connect(hub.url, {"device_id": "ghost", "sdp": sdp}, KITCHEN),  # unknown id
            await post_connect(hub.url, {"device_id": "hall", "sdp": sdp}, KITCHEN),  # another device's token
            await post_connect(hub.url, {"device_id": "hall", "sdp": sdp}, HALL[:-1]),  # almost right
            await post_connect(hub.url, {"device_id": "hall", "sdp": sdp}),  # none
        ]
        del hub.settings.hub_device_tokens["hall"]  # revoked (naila init --revoke-device, hub restarted)
        answers.append(await post_connect(hub.url, {"device_id": "hall", "sdp": sdp}, HALL))
        assert len({(status, body["error"]) for status, body in answers}) == 1
        assert answers[0][0] == 401 and hub.metrics.unauthorized == 5
        # The device with its own token was never disturbed.
        assert set(hub.sessions) == {"kitchen"} and not hub.sessions["kitchen"].closed
    finally:
        await kitchen.close()


async def test_browser_tokens_expire_and_look_like_unknown_ones(make_hub: Maker) -> None:
    """A browser device's token (minted by the logged-in page) opens /connect for its own id until
    it expires with the login's lifetime; expired, forged and other-id tokens get the same 401."""
    web_token = "web-login-token-0123456789"
    hub = await make_hub(hub_web_token=web_token, hub_web_session_hours=1.0, hub_device_tokens={"*": KITCHEN})
    fresh = WebAuth(web_token, 3600).device_token("web-phone")
    dev = await connect_device(hub.url, "web-phone", token=fresh)
    await dev.close()
    two_hours_ago = time.time() - 7200
    expired = WebAuth(web_token, 3600, clock=lambda: two_hours_ago).device_token("web-phone")
    sdp = await real_offer()
    answers = [
        await post_connect(hub.url, {"device_id": "web-phone", "sdp": sdp}, expired),
        await post_connect(hub.url, {"device_id": "web-other", "sdp": sdp}, fresh),
        await post_connect(hub.url, {"device_id": "web-phone", "sdp": sdp}, KITCHEN),  # "*" never opens browsers
        await post_connect(hub.url, {"device_id": "web-phone", "sdp": sdp}, fresh.split(".")[0] + ".x"),
    ]
    assert {(status, body["error"]) for status, body in answers} == {(401, "missing, unknown or wrong device token")}


async def test_a_wildcard_token_opens_any_id(make_hub: Maker) -> None:
    hub = await make_hub(hub_device_tokens={"*": KITCHEN})
    dev = await connect_device(hub.url, "porch-cam", token=KITCHEN)
    await dev.close()
    status, _ = await post_connect(hub.url, {"device_id": "porch-cam", "sdp": await real_offer()}, HALL)
    assert status == 401


async def test_an_open_hub_needs_the_setting_and_warns(make_hub: Maker, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="naila.hub"):
        hub = await make_hub(hub_allow_unauthenticated=True)
    assert any("HUB_ALLOW_UNAUTHENTICATED=true" in r.getMessage() for r in caplog.records)
    dev = await connect_device(hub.url, "demo-device")
    await dev.close()


@pytest.mark.parametrize("device_id", [".", "..", "../kitchen", "a/b", "x" * 65])
async def test_device_ids_follow_the_one_rule(make_hub: Maker, device_id: str) -> None:
    """L2: the same rule as MQTT topic segments (shared.mqtt.is_safe_segment)."""
    hub = await make_hub(hub_allow_unauthenticated=True)
    status, body = await post_connect(hub.url, {"device_id": device_id, "sdp": AUDIO_NO_ICE})
    assert status == 400 and hub.metrics.bad_requests == {"bad_device_id": 1}, body


def test_short_tokens_are_a_config_error_that_does_not_show_them() -> None:
    """L5: 24 characters at least; the message names the device, never the token."""
    with pytest.raises(ConfigError) as exc:
        load(HubSettings, hub_device_tokens={"kitchen": KITCHEN, "hall": "hunter2-hunter2"})
    assert "hall" in str(exc.value) and "24" in str(exc.value)
    assert "hunter2" not in str(exc.value) and KITCHEN not in str(exc.value)
    with pytest.raises(ConfigError):
        load(HubSettings, hub_device_tokens={"../x": KITCHEN})
    settings = load(HubSettings, hub_device_tokens={"kitchen": KITCHEN})
    assert KITCHEN not in repr(settings)


def test_short_tokens_from_the_environment_are_not_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUB_DEVICE_TOKENS", '{"hall": "hunter2-hunter2"}')
    with pytest.raises(ConfigError) as exc:
        load(HubSettings)
    assert "HUB_DEVICE_TOKENS" in str(exc.value) and "hunter2" not in str(exc.value)
